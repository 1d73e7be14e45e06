//! The scanner's test images: the fixtures `scripts/build-scan-fixtures.sh` builds from
//! real packages, and the helpers that turn them into OCI layers, images and indexes
//! and push them into a wharf registry (tests/support/scan_images.rs).
//!
//! Tests that need the fixtures skip without them (and fail under `CI=true`).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use support::scan_images::*;
use wharf_oci::{media, Digest, Manifest, ManifestKind, Reference, RepoName};
use wharf_registry::{BlobBody, Registry};

fn packages_json() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scan/tests/fixtures/vulndb/packages.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small tree with what layers must keep: modes, an executable, a set-uid file, a
/// symbolic link, an empty directory, a path over 100 bytes (a GNU long name).
fn sample_tree() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(&r.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    write(&r.join("bin/suid"), b"\x7fELF-ish", 0o4755);
    write(&r.join("etc/config"), b"key=value\n", 0o640);
    std::fs::create_dir_all(r.join("var/empty")).unwrap();
    std::fs::set_permissions(r.join("var/empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("../bin/tool", r.join("etc/tool-link")).unwrap();
    let long = format!("deep/{}/{}.txt", "d".repeat(80), "f".repeat(60));
    write(&r.join(&long), b"long name", 0o644);
    (dir, long)
}

fn by_path(entries: &[LayerEntry]) -> BTreeMap<String, LayerEntry> {
    entries
        .iter()
        .map(|e| (e.path.clone(), e.clone()))
        .collect()
}

#[test]
fn layers_keep_paths_modes_links_and_contents_in_every_compression() {
    let (dir, long) = sample_tree();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let layer = layer_from_dir(dir.path(), "/opt/app/", compression);
        assert_eq!(Compression::detect(&layer), compression);
        let entries = read_layer(&layer);
        let e = by_path(&entries);
        assert_eq!(e.len(), entries.len(), "no path twice");

        // The prefix's parents come first, as directories.
        assert_eq!(entries[0].path, "opt");
        assert_eq!(entries[0].kind, EntryKind::Dir);
        assert_eq!(entries[1].path, "opt/app");

        let tool = &e["opt/app/bin/tool"];
        assert_eq!(
            (tool.kind, tool.mode, &tool.data[..]),
            (EntryKind::File, 0o755, &b"#!/bin/sh\necho tool\n"[..])
        );
        assert_eq!(e["opt/app/bin/suid"].mode, 0o4755);
        assert_eq!(e["opt/app/etc/config"].mode, 0o640);
        assert_eq!(e["opt/app/etc/config"].data, b"key=value\n");
        assert_eq!(e["opt/app/var/empty"].kind, EntryKind::Dir);
        assert_eq!(e["opt/app/var/empty"].mode, 0o700);
        let link = &e["opt/app/etc/tool-link"];
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(link.link.as_deref(), Some("../bin/tool"));
        let long_entry = &e[&format!("opt/app/{long}")];
        assert!(long_entry.path.len() > 100);
        assert_eq!(long_entry.data, b"long name");

        // Every file's directory is in the layer before it.
        for (i, entry) in entries.iter().enumerate() {
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                let at = entries.iter().position(|p| p.path == parent);
                assert!(
                    matches!(at, Some(j) if j < i),
                    "{}: parent missing or late",
                    entry.path
                );
            }
        }
        // The same tree gives the same bytes (digests are stable across runs).
        assert_eq!(layer, layer_from_dir(dir.path(), "opt/app", compression));
    }
    // At the image's root, no prefix directory.
    let root = read_layer(&layer_from_dir(dir.path(), "", Compression::None));
    assert_eq!(root[0].path, "bin");
    assert!(root.iter().any(|e| e.path == "etc/config"));
}

#[test]
fn whiteout_layers_name_deleted_paths_and_opaque_directories() {
    let layer = whiteout_layer(&[
        "usr/local/lib/python3.11/site-packages/requests-2.19.1.dist-info",
        "etc/apk/",
        "top",
    ]);
    assert_eq!(Compression::detect(&layer), Compression::Gzip);
    let entries = read_layer(&layer);
    let files: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| (e.path.as_str(), e.data.len()))
        .collect();
    assert_eq!(
        files,
        [
            (
                "usr/local/lib/python3.11/site-packages/.wh.requests-2.19.1.dist-info",
                0
            ),
            ("etc/apk/.wh..wh..opq", 0),
            (".wh.top", 0),
        ]
    );
    let dirs: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        dirs,
        [
            "usr",
            "usr/local",
            "usr/local/lib",
            "usr/local/lib/python3.11",
            "usr/local/lib/python3.11/site-packages",
            "etc",
            "etc/apk"
        ]
    );
}

#[test]
fn image_manifest_and_config_name_the_layers_and_their_diff_ids() {
    let (dir, _) = sample_tree();
    let layers = vec![
        layer_from_dir(dir.path(), "", Compression::Gzip),
        layer_from_dir(dir.path(), "opt", Compression::Zstd),
        layer_from_files(&[("etc/motd", 0o644, b"hello\n")], Compression::None),
        whiteout_layer(&["etc/config"]),
    ];
    let img = image(layers.clone());

    let m = Manifest::parse(Some(media::OCI_MANIFEST), &img.manifest).unwrap();
    assert_eq!(m.kind, ManifestKind::Image);
    assert_eq!(img.manifest_digest, Digest::sha256_of(&img.manifest));
    let config = m.config.as_ref().unwrap();
    assert_eq!(config.media_type, OCI_CONFIG);
    assert_eq!(config.digest, Digest::sha256_of(&img.config));
    assert_eq!(config.digest, img.config_digest);
    assert_eq!(config.size, img.config.len() as u64);

    let want_types = [LAYER_GZIP, LAYER_ZSTD, LAYER_TAR, LAYER_GZIP];
    assert_eq!(m.layers.len(), 4);
    for (i, (d, layer)) in m.layers.iter().zip(&layers).enumerate() {
        assert_eq!(d.media_type, want_types[i], "layer {i}");
        assert_eq!(d.digest, Digest::sha256_of(layer), "layer {i}");
        assert_eq!(d.size, layer.len() as u64, "layer {i}");
        assert_eq!((&img.layers[i].0, &img.layers[i].1), (&d.digest, layer));
    }

    let c: serde_json::Value = serde_json::from_slice(&img.config).unwrap();
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["rootfs"]["type"], "layers");
    let diff_ids: Vec<Digest> = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(diff_ids, img.diff_ids);
    assert_eq!(c["history"].as_array().unwrap().len(), 4);
    for (i, layer) in layers.iter().enumerate() {
        // The diff id is the uncompressed tar's digest, computed here independently.
        let tar = match i {
            0 | 3 => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer[..]), &mut out)
                    .unwrap();
                out
            }
            1 => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut ruzstd::decoding::StreamingDecoder::new(&layer[..]).unwrap(),
                    &mut out,
                )
                .unwrap();
                out
            }
            _ => layer.clone(),
        };
        assert_eq!(diff_ids[i], Digest::sha256_of(&tar), "layer {i}");
        assert_eq!(diff_ids[i] == m.layers[i].digest, i == 2, "layer {i}");
    }
}

#[test]
fn an_index_names_each_platforms_manifest() {
    let one = image_for(
        "linux",
        "amd64",
        vec![layer_from_files(
            &[("a", 0o644, b"amd64")],
            Compression::Gzip,
        )],
    );
    let two = image_for(
        "linux",
        "arm64/v8",
        vec![layer_from_files(
            &[("a", 0o644, b"arm64")],
            Compression::Gzip,
        )],
    );
    let c: serde_json::Value = serde_json::from_slice(&two.config).unwrap();
    assert_eq!(
        (&c["architecture"], &c["variant"]),
        (&"arm64".into(), &"v8".into())
    );

    let idx = index(&[("linux", "amd64", &one), ("linux", "arm64/v8", &two)]);
    let m = Manifest::parse(Some(media::OCI_INDEX), &idx).unwrap();
    assert_eq!(m.kind, ManifestKind::Index);
    let got: Vec<_> = m
        .manifests
        .iter()
        .map(|d| {
            let p = d.platform.as_ref().unwrap();
            (
                d.media_type.as_str(),
                d.digest.clone(),
                d.size,
                p.os.as_str(),
                p.architecture.as_str(),
                p.variant.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                media::OCI_MANIFEST,
                one.manifest_digest.clone(),
                one.manifest.len() as u64,
                "linux",
                "amd64",
                None
            ),
            (
                media::OCI_MANIFEST,
                two.manifest_digest.clone(),
                two.manifest.len() as u64,
                "linux",
                "arm64",
                Some("v8")
            ),
        ]
    );
}

async fn read_blob(registry: &Registry, repo: &str, digest: &Digest) -> Vec<u8> {
    let repo: RepoName = repo.parse().unwrap();
    match registry.read_blob(&repo, digest, None).await.unwrap() {
        BlobBody::Bytes(b) => b.to_vec(),
        BlobBody::Stream(mut s) => {
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    }
}

#[tokio::test]
async fn pushed_images_and_indexes_read_back_through_the_registry() {
    let store = TestRegistry::new().await;
    let reg = &store.registry;
    let (dir, _) = sample_tree();
    let img = image(vec![
        layer_from_dir(dir.path(), "", Compression::Gzip),
        layer_from_dir(dir.path(), "srv", Compression::Zstd),
    ]);
    let digest = push(reg, "scan/sample", "v1", &img).await;
    assert_eq!(digest, img.manifest_digest);

    let repo: RepoName = "scan/sample".parse().unwrap();
    let got = reg
        .get_manifest(&repo, &"v1".parse().unwrap(), &[], true)
        .await
        .unwrap();
    assert_eq!(got.digest, img.manifest_digest);
    assert_eq!(got.media_type, media::OCI_MANIFEST);
    assert_eq!(got.payload.as_deref(), Some(&img.manifest[..]));
    // The metadata store the scanner job reads agrees.
    let stored = reg
        .meta()
        .get_manifest(&repo, &Reference::Tag("v1".parse().unwrap()), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.digest, img.manifest_digest);
    for (d, bytes) in &img.layers {
        assert_eq!(&read_blob(reg, "scan/sample", d).await, bytes);
    }
    assert_eq!(
        read_blob(reg, "scan/sample", &img.config_digest).await,
        img.config
    );

    // An index: its children by digest, the index by tag.
    let arm = image_for(
        "linux",
        "arm64/v8",
        vec![layer_from_files(
            &[("etc/arch", 0o644, b"arm64\n")],
            Compression::Gzip,
        )],
    );
    let idx_digest = push_index(
        reg,
        "scan/multi",
        "latest",
        &[("linux", "amd64", &img), ("linux", "arm64/v8", &arm)],
    )
    .await;
    let multi: RepoName = "scan/multi".parse().unwrap();
    let got = reg
        .get_manifest(&multi, &"latest".parse().unwrap(), &[], true)
        .await
        .unwrap();
    assert_eq!(got.digest, idx_digest);
    assert_eq!(got.media_type, media::OCI_INDEX);
    let idx = Manifest::parse(Some(media::OCI_INDEX), got.payload.as_deref().unwrap()).unwrap();
    for (child, want) in idx.manifests.iter().zip([&img, &arm]) {
        assert_eq!(child.digest, want.manifest_digest);
        let c = reg
            .get_manifest(&multi, &Reference::Digest(child.digest.clone()), &[], true)
            .await
            .unwrap();
        assert_eq!(c.payload.as_deref(), Some(&want.manifest[..]));
    }
}

// ---------------------------------------------------------------------------------------
// The fixtures built from real packages
// ---------------------------------------------------------------------------------------

/// `Key: value` fields of an RFC 822-style stanza (first occurrence wins).
fn fields(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.entry(k.to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    out
}

#[test]
fn manifest_lists_every_pypi_release_of_packages_json_with_its_real_metadata() {
    let Some(fx) = fixtures() else { return };
    assert_eq!(fx.manifest.format, 1);
    let pj = packages_json();
    let mut vulnerable = 0;
    for p in pj["packages"].as_array().unwrap() {
        if p["ecosystem"] != "PyPI" {
            continue;
        }
        let name = p["name"].as_str().unwrap();
        let project = p["pypi_project_name"].as_str().unwrap();
        let expected = p["expected_ids_for_each_version"].as_object().unwrap();
        let mut versions: Vec<(&str, bool)> = p["vulnerable_versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v.as_str().unwrap(), true))
            .collect();
        versions.extend(
            p["other_clean_versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v.as_str().unwrap(), false)),
        );
        versions.push((p["fixed_version_example"].as_str().unwrap(), false));
        for (version, is_vulnerable) in versions {
            let entry = fx.package("pypi", name, version);
            assert_eq!(entry.ecosystem, "PyPI");
            assert_eq!(entry.name, normalise(project));
            assert_eq!(entry.vulnerable, Some(is_vulnerable), "{name} {version}");
            let ids: Vec<String> = expected[version]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_str().unwrap().to_string())
                .collect();
            assert_eq!(entry.expected_ids.as_ref(), Some(&ids), "{name} {version}");
            assert_eq!(is_vulnerable, !ids.is_empty(), "{name} {version}");
            vulnerable += usize::from(is_vulnerable);

            // The install tree holds the release's own metadata.
            let meta_path = fx.path(entry.metadata.as_ref().unwrap());
            assert!(meta_path.starts_with(fx.pypi(name, version)));
            let meta = fields(&std::fs::read_to_string(&meta_path).unwrap());
            assert_eq!(meta["Version"], version, "{}", meta_path.display());
            assert_eq!(normalise(&meta["Name"]), normalise(project));
            let parent = meta_path.parent().unwrap().file_name().unwrap();
            let parent = parent.to_string_lossy();
            match entry.form.as_deref() {
                Some("wheel") => assert!(parent.ends_with(".dist-info"), "{parent}"),
                Some("sdist-egg-info") => assert!(parent.ends_with(".egg-info"), "{parent}"),
                other => panic!("{name} {version}: form {other:?}"),
            }
        }
    }
    // requests 2, urllib3 3, PyYAML 3, Django 3, cryptography 3.
    assert_eq!(vulnerable, 14);
}

#[tokio::test]
async fn a_python_image_from_real_releases_pushes_and_reads_back() {
    let Some(fx) = fixtures() else { return };
    let releases = [
        ("requests", "2.19.1"),
        ("urllib3", "1.24.1"),
        ("PyYAML", "5.3.1"),
    ];
    let trees: Vec<PathBuf> = releases.iter().map(|(n, v)| fx.pypi(n, v)).collect();
    let layer = layer_from_dirs(
        &trees
            .iter()
            .map(|t| (t.as_path(), SITE_PACKAGES))
            .collect::<Vec<_>>(),
        Compression::Zstd,
    );
    // A later layer removes urllib3's metadata again.
    let urllib3 = fx.package("pypi", "urllib3", "1.24.1");
    let urllib3_meta_dir = Path::new(urllib3.metadata.as_ref().unwrap())
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let whiteout = whiteout_layer(&[&format!("{SITE_PACKAGES}/{urllib3_meta_dir}")]);
    let img = image(vec![layer, whiteout]);

    let store = TestRegistry::new().await;
    let digest = push(&store.registry, "scan/python", "3.11", &img).await;
    assert_eq!(digest, img.manifest_digest);
    let back = read_blob(&store.registry, "scan/python", &img.layers[0].0).await;
    let entries = by_path(&read_layer(&back));
    for (name, version) in releases {
        let p = fx.package("pypi", name, version);
        let rel = Path::new(p.metadata.as_ref().unwrap())
            .strip_prefix(&p.path)
            .unwrap();
        let in_image = format!("{SITE_PACKAGES}/{}", rel.display());
        let e = entries
            .get(&in_image)
            .unwrap_or_else(|| panic!("{in_image} not in the layer"));
        assert_eq!(
            e.data,
            std::fs::read(fx.path(p.metadata.as_ref().unwrap())).unwrap()
        );
        assert_eq!(e.mode & 0o111, 0, "{in_image}: metadata is not executable");
    }
    let wh = read_layer(&read_blob(&store.registry, "scan/python", &img.layers[1].0).await);
    assert!(wh
        .iter()
        .any(|e| e.path == format!("{SITE_PACKAGES}/.wh.{urllib3_meta_dir}")));
}

#[test]
fn rust_binaries_embed_the_dependency_lists_the_manifest_names() {
    let Some(fx) = fixtures() else { return };
    for (binary, smallvec, tokio, vulnerable) in [
        ("auditable-smallvec-1.6.0", "1.6.0", "1.8.0", true),
        ("auditable-smallvec-clean", "1.6.1", "1.38.2", false),
    ] {
        let path = fx.rust_binary(binary);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{binary}");
        assert!(
            bytes.windows(8).any(|w| w == b".dep-v0\0"),
            "{binary}: no .dep-v0 section name"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{binary} is executable");
        // Into an image at usr/local/bin, executable still.
        let layer = layer_from_files(
            &[(&format!("usr/local/bin/{binary}"), mode, &bytes)],
            Compression::Gzip,
        );
        let e = by_path(&read_layer(&layer));
        assert_eq!(e[&format!("usr/local/bin/{binary}")].mode, mode & 0o7777);
        assert_eq!(e[&format!("usr/local/bin/{binary}")].data, bytes);

        let rel = format!("rust/bin/{binary}");
        let crates: BTreeMap<&str, &FixturePackage> = fx
            .packages("rust")
            .filter(|p| p.path == rel)
            .map(|p| (p.name.as_str(), p))
            .collect();
        assert_eq!(crates["smallvec"].version, smallvec);
        assert_eq!(crates["tokio"].version, tokio);
        assert_eq!(crates["smallvec"].direct, Some(true));
        assert_eq!(crates["smallvec"].vulnerable, Some(vulnerable));
        assert_eq!(crates["tokio"].vulnerable, Some(vulnerable));
        if vulnerable {
            assert_eq!(
                crates["smallvec"].expected_ids.as_deref(),
                Some(&["RUSTSEC-2021-0003".to_string()][..])
            );
        }
    }
}

#[test]
fn the_debian_rootfs_is_what_its_packages_and_dpkg_status_say() {
    let Some(fx) = fixtures() else { return };
    let root = fx.debian_rootfs();
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let stanzas: Vec<_> = status
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(fields)
        .collect();
    let listed: Vec<&FixturePackage> = fx
        .packages("debian")
        .filter(|p| p.layout.as_deref() == Some("status"))
        .collect();
    assert_eq!(stanzas.len(), listed.len());
    assert!(listed.len() >= 3);
    for p in &listed {
        assert_eq!(p.ecosystem, "Debian:12");
        let s = stanzas
            .iter()
            .find(|s| s["Package"] == p.name)
            .unwrap_or_else(|| panic!("{} not in the status file", p.name));
        assert_eq!(s["Status"], "install ok installed");
        assert_eq!(s["Version"], p.version);
        // Each package's files are in the root filesystem, as its dpkg list says.
        let list_name = if root
            .join(format!("var/lib/dpkg/info/{}.list", p.name))
            .is_file()
        {
            format!("{}.list", p.name)
        } else {
            format!("{}:{}.list", p.name, s["Architecture"])
        };
        let list = std::fs::read_to_string(root.join("var/lib/dpkg/info").join(list_name)).unwrap();
        let mut files = 0;
        for f in list.lines().filter(|l| *l != "/.") {
            let path = root.join(f.trim_start_matches('/'));
            assert!(
                path.symlink_metadata().is_ok(),
                "{}: {} is missing",
                p.name,
                path.display()
            );
            files += usize::from(path.is_file());
        }
        assert!(files > 0, "{} installs files", p.name);
        // The distroless layout has the same control data, without Status.
        let d = fields(&std::fs::read_to_string(fx.debian_status_d().join(&p.name)).unwrap());
        assert!(!d.contains_key("Status"));
        assert_eq!((&d["Package"], &d["Version"]), (&p.name, &p.version));
    }
    // A binNMU: the source version differs from the binary's.
    let bz = listed.iter().find(|p| p.name == "libbz2-1.0").unwrap();
    assert_eq!(bz.source.as_deref(), Some("bzip2"));
    assert_ne!(bz.source_version.as_deref(), Some(bz.version.as_str()));

    // Into a layer: os-release stays a link into usr/lib, executables stay executable.
    let e = by_path(&read_layer(&layer_from_dir(&root, "", Compression::Gzip)));
    assert_eq!(e["etc/os-release"].kind, EntryKind::Symlink);
    assert_eq!(
        e["etc/os-release"].link.as_deref(),
        Some("../usr/lib/os-release")
    );
    let os = String::from_utf8(e["usr/lib/os-release"].data.clone()).unwrap();
    assert!(os.lines().any(|l| l == "ID=debian"), "{os}");
    assert!(os.lines().any(|l| l == "VERSION_ID=\"12\""), "{os}");
    // (bookworm's bzip2 package installs to /bin: usr-merge is done by a symlink there.)
    assert_eq!(e["bin/bzip2"].kind, EntryKind::File);
    assert_eq!(e["bin/bzip2"].mode & 0o111, 0o111);
    assert!(e.contains_key("var/lib/dpkg/status"));
}

#[test]
fn the_alpine_database_is_the_fixture_sample_plus_libexif() {
    let Some(fx) = fixtures() else { return };
    for (made_up, version) in [(false, "0.6.21-r0"), (true, "0.6.20-r0")] {
        let root = fx.alpine_rootfs(made_up);
        let db = std::fs::read_to_string(root.join("lib/apk/db/installed")).unwrap();
        let stanzas: Vec<BTreeMap<char, String>> = db
            .split("\n\n")
            .map(|s| {
                s.lines()
                    .filter_map(|l| {
                        let mut c = l.chars();
                        let k = c.next()?;
                        (c.next()? == ':').then(|| (k, c.as_str().to_string()))
                    })
                    .rev() // first occurrence wins
                    .collect()
            })
            .filter(|s: &BTreeMap<char, String>| s.contains_key(&'P'))
            .collect();
        let libexif = stanzas.iter().find(|s| s[&'P'] == "libexif").unwrap();
        assert_eq!(libexif[&'V'], version);
        assert!(stanzas.iter().any(|s| s[&'P'] == "apk-tools"));
        let os = std::fs::read_to_string(root.join("etc/os-release")).unwrap();
        assert!(os.lines().any(|l| l == "ID=alpine"));
        assert!(os.lines().any(|l| l == "VERSION_ID=3.12.12"));

        let entry = fx
            .packages("alpine")
            .find(|p| p.name == "libexif" && p.made_up == Some(made_up))
            .unwrap();
        assert_eq!(entry.version, version);
        assert_eq!(entry.ecosystem, "Alpine:v3.12");
        assert_eq!(entry.vulnerable, Some(made_up));
        let listed = fx
            .packages("alpine")
            .filter(|p| fx.path(&p.path) == root)
            .count();
        assert_eq!(listed, stanzas.len());
    }
}
