//! The scanner end to end, on images built from real packages: pushed into a wharf
//! registry as a client would, read back by the scanner job
//! ([`wharf_jobs::scan_image::scan_image`]), and matched against the real OSV records of
//! `crates/scan/tests/fixtures/vulndb` (plus a few made-up `TEST-` records for dpkg,
//! which the real Debian fixtures do not cover).
//!
//! What is asserted is what a user sees: the packages an image holds, the OS, the
//! advisories each package gets, the notes, and the reason an image could not be read.
//! The expected advisory ids come from the fixtures' `manifest.json` (computed
//! independently from `packages.json`), never from the scanner.
//!
//! Tests skip without the fixtures (`scripts/build-scan-fixtures.sh`), and fail under
//! `CI=true`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use support::scan_images::*;
use wharf_jobs::scan_image::{scan_image, ImageScan};
use wharf_oci::{media, Digest, RepoName};
use wharf_scan::inventory::Inventory;
use wharf_scan::layer::Limits;
use wharf_scan::matching::AdvisoryIndex;
use wharf_scan::osv::{self, Advisory};
use wharf_scan::Package;

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Scans `digest` of `repo` as the scanner job does, from the registry's own stores.
async fn scan(
    store: &TestRegistry,
    repo: &str,
    digest: &Digest,
    limits: &Limits,
) -> Vec<ImageScan> {
    let repo: RepoName = repo.parse().unwrap();
    let registry = &store.registry;
    scan_image(
        &**registry.meta(),
        registry.blobs().clone(),
        &repo,
        digest,
        limits,
    )
    .await
    .unwrap_or_else(|e| panic!("scanning {repo}@{digest}: {e:#}"))
}

/// Pushes `img` under `repo:tag` and scans it: its one inventory.
async fn push_and_scan(repo: &str, img: &TestImage) -> Inventory {
    let store = TestRegistry::new().await;
    let digest = push(&store.registry, repo, "v1", img).await;
    let mut scans = scan(&store, repo, &digest, &Limits::default()).await;
    assert_eq!(scans.len(), 1, "one image, one scan: {scans:?}");
    let scan = scans.remove(0);
    assert_eq!(scan.manifest, digest);
    assert_eq!(scan.platform, None);
    scan.outcome
        .unwrap_or_else(|e| panic!("{repo}: the scan failed: {e}"))
}

fn vulndb() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

/// The real records of `osv-<ecosystem>.zip`, as the database update imports them.
fn real_advisories(ecosystem: &str) -> Vec<Advisory> {
    let path = vulndb().join(format!("osv-{ecosystem}.zip"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    osv::read_archive(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|r| r.unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// A made-up record (its id must say so), validated as the import would.
fn test_record(json: &str) -> Advisory {
    let advisory = osv::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
    advisory.validate().unwrap();
    assert!(advisory.id.starts_with("TEST-"), "made-up records say so");
    advisory
}

/// A made-up Debian record: one ECOSYSTEM range on the package `name` of `ecosystem`.
fn deb_record(id: &str, ecosystem: &str, name: &str, events: &str) -> Advisory {
    test_record(&format!(
        r#"{{"id":"{id}","modified":"2026-01-01T00:00:00Z","aliases":["CVE-0000-{n}"],
            "affected":[{{"package":{{"ecosystem":"{ecosystem}","name":"{name}"}},
            "ranges":[{{"type":"ECOSYSTEM","events":{events}}}]}}]}}"#,
        n = id.len()
    ))
}

/// The advisory ids of `package`'s matches.
fn ids(index: &AdvisoryIndex, package: &Package) -> BTreeSet<String> {
    index
        .matches(package)
        .into_iter()
        .map(|m| m.advisory_id)
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The packages of an inventory, by (match name, version).
fn by_name_version(inventory: &Inventory) -> BTreeMap<(String, String), &Package> {
    let mut out = BTreeMap::new();
    for p in &inventory.packages {
        let key = (p.match_name.clone(), p.version.clone());
        assert!(
            out.insert(key, p).is_none(),
            "{} {} reported twice: {:#?}",
            p.match_name,
            p.version,
            inventory.packages
        );
    }
    out
}

/// The package that an inventory lists as `name` (installed name) `version`.
fn find<'a>(inventory: &'a Inventory, name: &str, version: &str) -> &'a Package {
    inventory
        .packages
        .iter()
        .find(|p| p.name == name && p.version == version)
        .unwrap_or_else(|| {
            panic!(
                "{name} {version} is not in the inventory: {:#?}",
                inventory.packages
            )
        })
}

/// Where a PyPI fixture's metadata file lands in the image.
fn pypi_location(package: &FixturePackage) -> String {
    let metadata = package.metadata.as_deref().expect("pypi packages name it");
    let relative = metadata
        .strip_prefix(&format!("{}/", package.path))
        .unwrap_or_else(|| panic!("{metadata} is not under {}", package.path));
    format!("{SITE_PACKAGES}/{relative}")
}

/// A layer of PyPI installs into site-packages.
fn pypi_layer(fixtures: &Fixtures, packages: &[&FixturePackage], c: Compression) -> Vec<u8> {
    let dirs: Vec<PathBuf> = packages.iter().map(|p| fixtures.path(&p.path)).collect();
    let trees: Vec<(&std::path::Path, &str)> =
        dirs.iter().map(|d| (d.as_path(), SITE_PACKAGES)).collect();
    layer_from_dirs(&trees, c)
}

/// A raw tar entry, written without the tar crate's path checks (it refuses `..`, as
/// a hostile pusher's tool would not).
struct RawEntry<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    link: Option<&'a [u8]>,
    data: &'a [u8],
}

fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            assert!(e.name.len() < gnu.name.len(), "short names only");
            gnu.name[..e.name.len()].copy_from_slice(e.name);
            if let Some(link) = e.link {
                assert!(link.len() < gnu.linkname.len(), "short links only");
                gnu.linkname[..link.len()].copy_from_slice(link);
            }
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A gzip layer holding one file of `size` zero bytes (whole MiB), about `size / 1000`
/// bytes long. Written as gzip members end to end (a valid gzip stream, as estargz
/// layers are), the same compressed MiB of zeros over and over: building it costs
/// nothing.
fn gzip_bomb(size: u64) -> Vec<u8> {
    assert!(size.is_multiple_of(MIB));
    let gz = |data: &[u8]| compress(data, Compression::Gzip);
    let mut h = tar::Header::new_gnu();
    h.set_path("var/cache/zeros.bin").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let mut out = gz(h.as_bytes());
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &vec![0u8; MIB as usize]).unwrap();
    let zeros = e.finish().unwrap();
    for _ in 0..size / MIB {
        out.extend_from_slice(&zeros);
    }
    // The end of the archive: two zero blocks.
    out.extend_from_slice(&gz(&[0u8; 1024]));
    out
}

/// Pushes a manifest whose blobs are `blobs` (by digest), without a tag.
async fn push_raw_manifest(
    store: &TestRegistry,
    repo: &str,
    blobs: &[&[u8]],
    media_type: &str,
    manifest: &serde_json::Value,
) -> Digest {
    for blob in blobs {
        push_blob(&store.registry, repo, &Digest::sha256_of(blob), blob).await;
    }
    let body = serde_json::to_vec(manifest).unwrap();
    let digest = Digest::sha256_of(&body);
    push_manifest(
        &store.registry,
        repo,
        &digest.to_string(),
        media_type,
        &body,
    )
    .await
}

fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(blob).to_string(),
        "size": blob.len(),
    })
}

/// The Debian image of the fixtures: the root filesystem (dpkg status, os-release as a
/// symbolic link to usr/lib/os-release, the packages' files) in one layer.
fn debian_image(fixtures: &Fixtures, os: &str, arch: &str) -> TestImage {
    image_for(
        os,
        arch,
        vec![layer_from_dir(
            &fixtures.debian_rootfs(),
            "",
            Compression::Gzip,
        )],
    )
}

fn alpine_image(fixtures: &Fixtures, made_up: bool, os: &str, arch: &str) -> TestImage {
    image_for(
        os,
        arch,
        vec![layer_from_dir(
            &fixtures.alpine_rootfs(made_up),
            "",
            Compression::Zstd,
        )],
    )
}

// ---------------------------------------------------------------------------------------
// 1, 2: Python
// ---------------------------------------------------------------------------------------

/// Every PyPI release of the fixtures, spread over three layers (gzip, zstd, gzip), in
/// one site-packages: each vulnerable release gets exactly the advisories manifest.json
/// lists for it, each clean release none, and packages go by their PEP 503 name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_image_reports_each_release_with_its_real_advisories() {
    let Some(fixtures) = fixtures() else { return };
    let releases: Vec<&FixturePackage> = fixtures.packages("pypi").collect();
    assert!(releases.len() >= 20, "the fixtures hold the PyPI releases");
    let compressions = [Compression::Gzip, Compression::Zstd, Compression::Gzip];
    let layers: Vec<Vec<u8>> = compressions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let share: Vec<&FixturePackage> = releases
                .iter()
                .copied()
                .skip(i)
                .step_by(compressions.len())
                .collect();
            pypi_layer(&fixtures, &share, *c)
        })
        .collect();
    let img = image(layers);
    assert_eq!(
        img.layers
            .iter()
            .map(|(_, l)| Compression::detect(l))
            .collect::<Vec<_>>(),
        compressions
    );
    let inventory = push_and_scan("app/python", &img).await;

    let index = AdvisoryIndex::new(real_advisories("PyPI"));
    let found = by_name_version(&inventory);
    assert_eq!(
        found.len(),
        releases.len(),
        "exactly the installed releases: {:#?}",
        inventory.packages
    );
    let mut vulnerable = 0;
    for release in &releases {
        let key = (release.name.clone(), release.version.clone());
        let package = found.get(&key).unwrap_or_else(|| {
            panic!(
                "{} {} not reported: {:#?}",
                release.name, release.version, inventory.packages
            )
        });
        assert_eq!(package.ecosystem, "PyPI");
        // Advisories name the PEP 503 form; the installed name stays as written.
        assert_eq!(package.match_name, release.name);
        assert_eq!(package.match_name, normalise(&package.name));
        assert_eq!(package.match_version, release.version);
        assert_eq!(package.location, pypi_location(release));
        assert_eq!(
            package.purl,
            format!("pkg:pypi/{}@{}", release.name, release.version)
        );
        let expected: BTreeSet<String> = release
            .expected_ids
            .clone()
            .expect("manifest.json lists every PyPI release's ids")
            .into_iter()
            .collect();
        assert_eq!(
            release.vulnerable,
            Some(!expected.is_empty()),
            "manifest.json agrees with itself for {key:?}"
        );
        assert_eq!(
            ids(&index, package),
            expected,
            "{} {}",
            release.name,
            release.version
        );
        vulnerable += usize::from(!expected.is_empty());
    }
    assert!(vulnerable >= 10 && vulnerable < releases.len());

    // Installed names as the metadata writes them, not as PyPI's index does.
    assert_eq!(find(&inventory, "PyYAML", "5.1").match_name, "pyyaml");
    assert_eq!(find(&inventory, "Django", "3.2").match_name, "django");
    // An sdist's egg-info is read as well as a wheel's dist-info.
    assert!(find(&inventory, "PyYAML", "5.1")
        .location
        .ends_with("PyYAML-5.1.egg-info/PKG-INFO"));
    // No OS in these images: said so, not guessed.
    assert_eq!(inventory.os, None);
    assert!(
        inventory.notes.iter().any(|n| n.contains("no os-release")),
        "{:?}",
        inventory.notes
    );
}

/// A later layer deleting a vulnerable release's dist-info (as `pip install -U` does in
/// a Dockerfile's next step): the release is gone from the report, its upgrade is in.
/// An opaque whiteout of site-packages removes everything below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_remove_deleted_python_releases() {
    let Some(fixtures) = fixtures() else { return };
    let old = fixtures.package("pypi", "requests", "2.19.1");
    let new = fixtures.package("pypi", "requests", "2.31.0");
    let urllib3 = fixtures.package("pypi", "urllib3", "1.24.1");
    let index = AdvisoryIndex::new(real_advisories("PyPI"));
    let old_dist_info = pypi_location(old)
        .strip_suffix("/METADATA")
        .unwrap()
        .to_string();

    let base = pypi_layer(&fixtures, &[old, urllib3], Compression::Gzip);
    let upgrade = pypi_layer(&fixtures, &[new], Compression::Zstd);

    // Before: both requests releases are there, the old one vulnerable.
    let before = push_and_scan("app/python", &image(vec![base.clone(), upgrade.clone()])).await;
    let versions = |inv: &Inventory, name: &str| -> Vec<String> {
        inv.packages
            .iter()
            .filter(|p| p.match_name == name)
            .map(|p| p.version.clone())
            .collect()
    };
    assert_eq!(versions(&before, "requests"), ["2.19.1", "2.31.0"]);
    assert_eq!(
        ids(&index, find(&before, "requests", "2.19.1")),
        set(&["PYSEC-2018-28", "PYSEC-2023-74"])
    );

    // The upgrade deletes the old dist-info.
    let after = push_and_scan(
        "app/python",
        &image(vec![
            base.clone(),
            whiteout_layer(&[&old_dist_info]),
            upgrade.clone(),
        ]),
    )
    .await;
    assert_eq!(versions(&after, "requests"), ["2.31.0"]);
    assert_eq!(versions(&after, "urllib3"), ["1.24.1"], "untouched");
    let reported: BTreeSet<String> = after.packages.iter().flat_map(|p| ids(&index, p)).collect();
    assert!(!reported.contains("PYSEC-2018-28"), "{reported:?}");
    assert_eq!(
        reported,
        urllib3
            .expected_ids
            .clone()
            .unwrap()
            .into_iter()
            .collect::<BTreeSet<_>>(),
        "only urllib3's advisories are left"
    );

    // Deleting the METADATA file alone is enough too.
    let after = push_and_scan(
        "app/python",
        &image(vec![
            base.clone(),
            whiteout_layer(&[&format!("{old_dist_info}/METADATA")]),
        ]),
    )
    .await;
    assert!(versions(&after, "requests").is_empty());
    assert_eq!(versions(&after, "urllib3"), ["1.24.1"]);

    // An opaque site-packages: nothing below it is left; what comes after is.
    let after = push_and_scan(
        "app/python",
        &image(vec![
            base,
            whiteout_layer(&[&format!("{SITE_PACKAGES}/")]),
            upgrade,
        ]),
    )
    .await;
    let left: Vec<(&str, &str)> = after
        .packages
        .iter()
        .map(|p| (p.match_name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(left, [("requests", "2.31.0")]);
}

// ---------------------------------------------------------------------------------------
// 3: Rust
// ---------------------------------------------------------------------------------------

/// The cargo-auditable binaries: each one's crates as manifest.json lists them; the
/// vulnerable one gets smallvec's and tokio's RUSTSEC advisories, the clean one none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_image_reports_the_crates_of_auditable_binaries() {
    let Some(fixtures) = fixtures() else { return };
    let binaries = ["auditable-smallvec-1.6.0", "auditable-smallvec-clean"];
    let data: Vec<Vec<u8>> = binaries
        .iter()
        .map(|b| std::fs::read(fixtures.rust_binary(b)).unwrap())
        .collect();
    let paths: Vec<String> = binaries
        .iter()
        .map(|b| format!("usr/local/bin/{b}"))
        .collect();
    // Each binary in its own layer; plus a non-executable copy, which is not analysed.
    let img = image(vec![
        layer_from_files(&[(&paths[0], 0o755, &data[0])], Compression::Gzip),
        layer_from_files(&[(&paths[1], 0o755, &data[1])], Compression::Zstd),
        layer_from_files(
            &[("usr/share/doc/not-run", 0o644, &data[0])],
            Compression::Gzip,
        ),
    ]);
    let inventory = push_and_scan("app/rust", &img).await;
    let index = AdvisoryIndex::new(real_advisories("crates.io"));

    for (binary, location) in binaries.iter().zip(&paths) {
        let expected: BTreeMap<(String, String), &FixturePackage> = fixtures
            .packages("rust")
            .filter(|p| p.path == format!("rust/bin/{binary}"))
            .map(|p| ((p.name.clone(), p.version.clone()), p))
            .collect();
        assert!(!expected.is_empty());
        let found: BTreeMap<(String, String), &Package> = inventory
            .packages
            .iter()
            .filter(|p| &p.location == location)
            .map(|p| ((p.name.clone(), p.version.clone()), p))
            .collect();
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{binary}: the crates of its audit data"
        );
        for (key, package) in &found {
            assert_eq!(package.ecosystem, "crates.io");
            assert_eq!(package.match_name, key.0);
            assert_eq!(package.purl, format!("pkg:cargo/{}@{}", key.0, key.1));
            let want: BTreeSet<String> = expected[key]
                .expected_ids
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            assert_eq!(ids(&index, package), want, "{binary}: {key:?}");
        }
    }
    let smallvec = find(&inventory, "smallvec", "1.6.0");
    let m = index.matches(smallvec);
    let m = m
        .iter()
        .find(|m| m.advisory_id == "RUSTSEC-2021-0003")
        .expect("smallvec 1.6.0: RUSTSEC-2021-0003");
    assert_eq!(m.fixed.as_deref(), Some("1.6.1"));
    assert!(index
        .matches(find(&inventory, "smallvec", "1.6.1"))
        .is_empty());
    assert!(
        !inventory
            .packages
            .iter()
            .any(|p| p.location == "usr/share/doc/not-run"),
        "a file that is not executable is not analysed"
    );
    assert_eq!(inventory.os, None);
}

// ---------------------------------------------------------------------------------------
// 4: Debian
// ---------------------------------------------------------------------------------------

/// The real Debian records and the made-up ones for the fixture's packages.
fn debian_index() -> AdvisoryIndex {
    let mut advisories = real_advisories("Debian");
    advisories.extend([
        // zlib fixed after the installed version: a match.
        deb_record(
            "TEST-DEB-ZLIB",
            "Debian:12",
            "zlib",
            r#"[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-2"}]"#,
        ),
        // A fix without the epoch is older than anything of epoch 1: no match.
        deb_record(
            "TEST-DEB-ZLIB-NO-EPOCH",
            "Debian:12",
            "zlib",
            r#"[{"introduced":"0"},{"fixed":"1.3.dfsg-1"}]"#,
        ),
        // Another release's record: no match.
        deb_record(
            "TEST-DEB11-ZLIB",
            "Debian:11",
            "zlib",
            r#"[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-9"}]"#,
        ),
        // The bare distribution applies to every release.
        deb_record(
            "TEST-DEB-ANY-ZLIB",
            "Debian",
            "zlib",
            r#"[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-3"}]"#,
        ),
        // Advisories name source packages: a record on the binary name is not one
        // that applies (and would double-report).
        deb_record(
            "TEST-DEB-BINARY-NAME",
            "Debian:12",
            "zlib1g",
            r#"[{"introduced":"0"},{"fixed":"1:9.9-1"}]"#,
        ),
        // expat: fixed by a backport at or below the installed +deb12u2: no match.
        deb_record(
            "TEST-DEB-EXPAT-BACKPORT",
            "Debian:12",
            "expat",
            r#"[{"introduced":"0"},{"fixed":"2.5.0-1+deb12u1"}]"#,
        ),
        deb_record(
            "TEST-DEB-EXPAT-EXACT",
            "Debian:12",
            "expat",
            r#"[{"introduced":"0"},{"fixed":"2.5.0-1+deb12u2"}]"#,
        ),
        // bzip2: affected up to the source version 1.0.8-5. The binaries are the binNMU
        // 1.0.8-5+b1 (greater): only the source version says they are affected.
        deb_record(
            "TEST-DEB-BZIP2",
            "Debian:12",
            "bzip2",
            r#"[{"introduced":"0"},{"last_affected":"1.0.8-5"}]"#,
        ),
    ]);
    AdvisoryIndex::new(advisories)
}

/// What a Debian inventory must hold: each fixture package of `layout`, by its source.
fn assert_debian_inventory(fixtures: &Fixtures, inventory: &Inventory, layout: &str) {
    let os = inventory.os.as_ref().expect("the os-release is read");
    assert_eq!(
        (
            os.id.as_str(),
            os.version_id.as_str(),
            os.ecosystem.as_deref()
        ),
        ("debian", "12", Some("Debian:12"))
    );
    assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
    let expected: Vec<&FixturePackage> = fixtures
        .packages("debian")
        .filter(|p| p.layout.as_deref() == Some(layout))
        .collect();
    assert_eq!(expected.len(), 4);
    assert_eq!(
        inventory.packages.len(),
        expected.len(),
        "{layout}: exactly the dpkg packages: {:#?}",
        inventory.packages
    );
    for e in expected {
        let p = find(inventory, &e.name, &e.version);
        assert_eq!(p.ecosystem, "Debian:12", "{}", e.name);
        assert_eq!(Some(&p.match_name), e.source.as_ref(), "{}", e.name);
        assert_eq!(
            Some(&p.match_version),
            e.source_version.as_ref(),
            "{}",
            e.name
        );
        let location = match layout {
            "status" => "var/lib/dpkg/status".to_string(),
            _ => format!("var/lib/dpkg/status.d/{}", e.name),
        };
        assert_eq!(p.location, location);
        assert!(
            p.purl.starts_with(&format!("pkg:deb/debian/{}@", e.name))
                && p.purl.contains("arch=amd64")
                && p.purl.contains("distro=debian-12"),
            "{}",
            p.purl
        );
    }
    assert!(
        inventory.notes.is_empty(),
        "nothing skipped: {:?}",
        inventory.notes
    );
}

/// What a user sees for the Debian packages, with the made-up records.
fn assert_debian_matches(inventory: &Inventory) {
    let index = debian_index();
    let got: BTreeMap<&str, BTreeSet<String>> = inventory
        .packages
        .iter()
        .map(|p| (p.name.as_str(), ids(&index, p)))
        .collect();
    let want: BTreeMap<&str, BTreeSet<String>> = [
        ("zlib1g", set(&["TEST-DEB-ZLIB", "TEST-DEB-ANY-ZLIB"])),
        ("libexpat1", set(&[])),
        ("bzip2", set(&["TEST-DEB-BZIP2"])),
        ("libbz2-1.0", set(&["TEST-DEB-BZIP2"])),
    ]
    .into();
    assert_eq!(got, want);
    let zlib = index.matches(find(inventory, "zlib1g", "1:1.2.13.dfsg-1"));
    let fixes: BTreeMap<&str, Option<&str>> = zlib
        .iter()
        .map(|m| (m.advisory_id.as_str(), m.fixed.as_deref()))
        .collect();
    assert_eq!(
        fixes,
        [
            ("TEST-DEB-ZLIB", Some("1:1.2.13.dfsg-2")),
            ("TEST-DEB-ANY-ZLIB", Some("1:1.2.13.dfsg-3"))
        ]
        .into()
    );
    // last_affected names no fix.
    let bzip2 = index.matches(find(inventory, "libbz2-1.0", "1.0.8-5+b1"));
    assert_eq!(bzip2[0].fixed, None);
    assert_eq!(bzip2[0].aliases.len(), 1);

    // The name the matcher uses for expat is the right one: a later fix does match.
    let control = AdvisoryIndex::new([deb_record(
        "TEST-DEB-EXPAT-LATER",
        "Debian:12",
        "expat",
        r#"[{"introduced":"0"},{"fixed":"2.5.0-1+deb12u3"}]"#,
    )]);
    assert_eq!(
        ids(&control, find(inventory, "libexpat1", "2.5.0-1+deb12u2")),
        set(&["TEST-DEB-EXPAT-LATER"])
    );
    // The real Debian record (nginx, Debian 7) matches nothing here.
    let real = AdvisoryIndex::new(real_advisories("Debian"));
    assert!(inventory
        .packages
        .iter()
        .all(|p| real.matches(p).is_empty()));
}

/// A Debian root filesystem: `Debian:12` from os-release (a symbolic link into
/// usr/lib), dpkg's packages by their source names and versions, and the made-up
/// records matched by source: zlib vulnerable, expat's backported fix honoured, the
/// binNMU bzip2 binaries matched on their source version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_image_matches_by_source_package() {
    let Some(fixtures) = fixtures() else { return };
    let img = debian_image(&fixtures, "linux", "amd64");
    let entries = read_layer(&img.layers[0].1);
    let link = entries.iter().find(|e| e.path == "etc/os-release").unwrap();
    assert_eq!(
        (link.kind, link.link.as_deref()),
        (EntryKind::Symlink, Some("../usr/lib/os-release")),
        "the fixture's os-release is a link, as in debian:12"
    );
    let inventory = push_and_scan("base/debian", &img).await;
    assert_debian_inventory(&fixtures, &inventory, "status");
    assert_debian_matches(&inventory);
}

/// The distroless layout (one control file per package in var/lib/dpkg/status.d,
/// `.md5sums` next to them): the same packages, the same matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distroless_status_d_gives_the_same_packages() {
    let Some(fixtures) = fixtures() else { return };
    let os_release = std::fs::read(fixtures.debian_rootfs().join("usr/lib/os-release")).unwrap();
    let img = image(vec![
        layer_from_files(&[("etc/os-release", 0o644, &os_release)], Compression::Gzip),
        layer_from_dir(
            &fixtures.debian_status_d(),
            "var/lib/dpkg/status.d",
            Compression::Zstd,
        ),
    ]);
    let distroless = push_and_scan("base/distroless", &img).await;
    assert_debian_inventory(&fixtures, &distroless, "status.d");
    assert_debian_matches(&distroless);

    let full = push_and_scan("base/debian", &debian_image(&fixtures, "linux", "amd64")).await;
    let strip = |inv: &Inventory| -> Vec<Package> {
        inv.packages
            .iter()
            .map(|p| Package {
                location: String::new(),
                ..p.clone()
            })
            .collect()
    };
    assert_eq!(strip(&distroless), strip(&full));
}

// ---------------------------------------------------------------------------------------
// 5: Alpine
// ---------------------------------------------------------------------------------------

/// Alpine v3.12: libexif 0.6.21-r0 is the fix of the real CVE-2012-2812 record; the
/// fixture's made-up 0.6.20-r0 is before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpine_image_matches_the_real_libexif_record() {
    let Some(fixtures) = fixtures() else { return };
    let index = AdvisoryIndex::new(real_advisories("Alpine"));
    for made_up in [false, true] {
        let inventory = push_and_scan(
            "base/alpine",
            &alpine_image(&fixtures, made_up, "linux", "amd64"),
        )
        .await;
        let os = inventory.os.as_ref().expect("the os-release is read");
        assert_eq!(os.ecosystem.as_deref(), Some("Alpine:v3.12"));
        assert_eq!(os.version_id, "3.12.12");
        let path = if made_up {
            "alpine/rootfs-made-up"
        } else {
            "alpine/rootfs"
        };
        let expected: Vec<&FixturePackage> = fixtures
            .packages("alpine")
            .filter(|p| p.path == path)
            .collect();
        assert_eq!(
            inventory.packages.len(),
            expected.len(),
            "{path}: {:#?}",
            inventory.packages
        );
        for e in expected {
            let p = find(&inventory, &e.name, &e.version);
            assert_eq!(p.ecosystem, "Alpine:v3.12");
            assert_eq!(p.location, "lib/apk/db/installed");
            assert_eq!(
                (p.match_name.as_str(), p.match_version.as_str()),
                (e.name.as_str(), e.version.as_str())
            );
            assert!(
                p.purl.starts_with(&format!("pkg:apk/alpine/{}@", e.name)),
                "{}",
                p.purl
            );
            let want: BTreeSet<String> = e
                .expected_ids
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            assert_eq!(ids(&index, p), want, "{path}: {} {}", e.name, e.version);
        }
        let libexif = inventory
            .packages
            .iter()
            .find(|p| p.name == "libexif")
            .unwrap();
        let m = index.matches(libexif);
        if made_up {
            assert_eq!(libexif.version, "0.6.20-r0");
            assert_eq!(m.len(), 1);
            assert_eq!(m[0].advisory_id, "CVE-2012-2812");
            assert_eq!(m[0].fixed.as_deref(), Some("0.6.21-r0"));
        } else {
            assert_eq!(libexif.version, "0.6.21-r0");
            assert!(m.is_empty(), "{m:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6: indexes
// ---------------------------------------------------------------------------------------

/// A multi-platform index (Debian amd64, Alpine arm64/v8) with BuildKit's attestation
/// manifest (`unknown/unknown`): one scan per platform, the attestation skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_is_scanned_per_platform_without_attestations() {
    let Some(fixtures) = fixtures() else { return };
    let store = TestRegistry::new().await;
    let repo = "base/multi";
    let debian = debian_image(&fixtures, "linux", "amd64");
    let alpine = alpine_image(&fixtures, true, "linux", "arm64/v8");
    let platforms = [("linux", "amd64", &debian), ("linux", "arm64/v8", &alpine)];
    for (_, _, img) in &platforms {
        push_untagged(&store.registry, repo, img).await;
    }

    // The attestation: an image manifest of an in-toto statement, as BuildKit writes it.
    let statement = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[]}"#;
    let config = br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let attestation = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor("application/vnd.in-toto+json", statement)],
    });
    let attestation_digest = push_raw_manifest(
        &store,
        repo,
        &[statement, config],
        media::OCI_MANIFEST,
        &attestation,
    )
    .await;
    let mut idx: serde_json::Value = serde_json::from_slice(&index(&platforms)).unwrap();
    let attestation_body = serde_json::to_vec(&attestation).unwrap();
    idx["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": attestation_digest.to_string(),
            "size": attestation_body.len(),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": debian.manifest_digest.to_string(),
            },
        }));
    let body = serde_json::to_vec(&idx).unwrap();
    let digest = push_manifest(&store.registry, repo, "v1", media::OCI_INDEX, &body).await;

    let scans = scan(&store, repo, &digest, &Limits::default()).await;
    let got: Vec<(Digest, Option<&str>)> = scans
        .iter()
        .map(|s| (s.manifest.clone(), s.platform.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (debian.manifest_digest.clone(), Some("linux/amd64")),
            (alpine.manifest_digest.clone(), Some("linux/arm64/v8")),
        ]
    );
    let debian_inv = scans[0].outcome.as_ref().unwrap();
    let alpine_inv = scans[1].outcome.as_ref().unwrap();
    assert_debian_inventory(&fixtures, debian_inv, "status");
    assert_eq!(
        alpine_inv.os.as_ref().and_then(|o| o.ecosystem.as_deref()),
        Some("Alpine:v3.12")
    );
    assert_eq!(
        ids(
            &AdvisoryIndex::new(real_advisories("Alpine")),
            find(alpine_inv, "libexif", "0.6.20-r0")
        ),
        set(&["CVE-2012-2812"])
    );

    // Each platform's manifest is also an image on its own.
    let alone = scan(&store, repo, &alpine.manifest_digest, &Limits::default()).await;
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0].platform, None);
    assert_eq!(alone[0].outcome, scans[1].outcome);
}

// ---------------------------------------------------------------------------------------
// 7: hostile images
// ---------------------------------------------------------------------------------------

/// A gzip bomb (32 MiB of zeros in tens of KiB) against a 16 MiB budget: the
/// image's scan fails, saying which limit; in an index, the other platform's image is
/// still scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_fails_only_its_image_naming_the_limit() {
    let Some(fixtures) = fixtures() else { return };
    let limits = Limits {
        total_bytes: 16 * MIB,
        ..Limits::default()
    };
    let bomb = gzip_bomb(32 * MIB);
    assert!(bomb.len() < MIB as usize / 8, "{} bytes", bomb.len());
    let requests = fixtures.pypi("requests", "2.19.1");
    let bombed = image(vec![
        layer_from_dir(&requests, SITE_PACKAGES, Compression::Gzip),
        bomb,
    ]);
    let clean = alpine_image(&fixtures, false, "linux", "arm64/v8");

    let store = TestRegistry::new().await;
    let digest = push(&store.registry, "app/bomb", "v1", &bombed).await;
    let scans = scan(&store, "app/bomb", &digest, &limits).await;
    assert_eq!(scans.len(), 1);
    let err = scans[0].outcome.as_ref().unwrap_err();
    assert!(
        err.contains("total_bytes") && err.contains("16 MiB") && err.contains("decompression bomb"),
        "{err}"
    );

    let digest = push_index(
        &store.registry,
        "app/bomb",
        "multi",
        &[("linux", "amd64", &bombed), ("linux", "arm64/v8", &clean)],
    )
    .await;
    let scans = scan(&store, "app/bomb", &digest, &limits).await;
    assert_eq!(scans.len(), 2);
    assert!(scans[0]
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("total_bytes"));
    let inv = scans[1]
        .outcome
        .as_ref()
        .expect("the other platform is read");
    assert_eq!(inv.packages.len(), 2);
}

fn sha256_file(path: &str) -> Option<Digest> {
    std::fs::read(path).ok().map(|b| Digest::sha256_of(&b))
}

/// Entries that climb out of the image (`../../etc/passwd`), a hard link to a host
/// path, a symbolic link out of the root: nothing on the host is written or read, the
/// unsafe entries are noted, and the rest of the layer is scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_entries_are_noted_and_never_reach_the_host() {
    let Some(fixtures) = fixtures() else { return };
    let sentinel = format!(
        "tmp/wharf-scan-e2e-{}",
        Digest::sha256_of(format!("{:?}", std::time::SystemTime::now()).as_bytes())
            .to_string()
            .split_at(20)
            .1
    );
    let escape_sentinel = format!("../../../../../../{sentinel}");
    let passwd_before = sha256_file("/etc/passwd");
    let metadata = std::fs::read(
        fixtures.path(
            fixtures
                .package("pypi", "urllib3", "1.24.1")
                .metadata
                .as_deref()
                .unwrap(),
        ),
    )
    .unwrap();
    let dist_info = format!("{SITE_PACKAGES}/urllib3-1.24.1.dist-info/METADATA");
    let pwned = b"root::0:0:pwned:/root:/bin/sh\n";
    let fake_status = b"Package: evil\nStatus: install ok installed\nVersion: 1.0\n\n";
    let r = |name: &'static [u8], data: &'static [u8]| RawEntry {
        name,
        kind: tar::EntryType::Regular,
        mode: 0o644,
        link: None,
        data,
    };
    let tar = raw_tar(&[
        r(b"../../etc/passwd", pwned),
        r(b"./../../../etc/shadow", pwned),
        r(b"usr/../../etc/passwd", pwned),
        RawEntry {
            name: escape_sentinel.as_bytes(),
            ..r(b"", pwned)
        },
        RawEntry {
            name: b"../var/lib/dpkg/status",
            ..r(b"", fake_status)
        },
        RawEntry {
            name: b"var/lib/dpkg/status",
            kind: tar::EntryType::Link,
            mode: 0o644,
            link: Some(b"../../../../etc/passwd"),
            data: b"",
        },
        RawEntry {
            name: b"etc/os-release",
            kind: tar::EntryType::Symlink,
            mode: 0o777,
            link: Some(b"../../../../../../usr/lib/os-release"),
            data: b"",
        },
        RawEntry {
            name: dist_info.as_bytes(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            link: None,
            data: &metadata,
        },
    ]);
    let img = image(vec![compress(&tar, Compression::Gzip)]);
    let inventory = push_and_scan("app/evil", &img).await;

    // The layer's one real package is reported, nothing else.
    let found: Vec<(&str, &str, &str)> = inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.ecosystem.as_str(),
                p.match_name.as_str(),
                p.version.as_str(),
            )
        })
        .collect();
    assert_eq!(found, [("PyPI", "urllib3", "1.24.1")]);
    assert_eq!(inventory.os, None, "no os-release inside the image");

    // Each refused entry is noted, by its name.
    for name in [
        "../../etc/passwd",
        "./../../../etc/shadow",
        "usr/../../etc/passwd",
        escape_sentinel.as_str(),
        "../var/lib/dpkg/status",
    ] {
        assert!(
            inventory
                .notes
                .iter()
                .any(|n| n.contains("unsafe path") && n.contains(&format!("{name:?}"))),
            "{name}: {:#?}",
            inventory.notes
        );
    }
    assert!(
        inventory
            .notes
            .iter()
            .any(|n| n.contains("hard link var/lib/dpkg/status") && n.contains("unsafe")),
        "{:#?}",
        inventory.notes
    );

    // The host is as it was.
    assert_eq!(sha256_file("/etc/passwd"), passwd_before);
    assert!(!std::path::Path::new(&format!("/{sentinel}")).exists());
    // Nor was anything extracted next to the test (where a naive tar reader writes).
    for dir in [std::env::temp_dir(), std::env::current_dir().unwrap()] {
        assert!(!dir.join("etc/passwd").exists(), "{}", dir.display());
    }
}

// ---------------------------------------------------------------------------------------
// 8: artifacts
// ---------------------------------------------------------------------------------------

/// An SBOM attached to an image (an OCI 1.1 referrer: empty config, artifactType) and a
/// Helm chart (its own config type) have no file system: no scan, not a failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_not_scanned() {
    let Some(fixtures) = fixtures() else { return };
    let store = TestRegistry::new().await;
    let repo = "app/python";
    let img = image(vec![layer_from_dir(
        &fixtures.pypi("requests", "2.19.1"),
        SITE_PACKAGES,
        Compression::Gzip,
    )]);
    let subject = push(&store.registry, repo, "v1", &img).await;

    let empty = b"{}";
    let sbom =
        br#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"app","packages":[]}"#;
    let referrer = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/spdx+json", sbom)],
        "subject": {
            "mediaType": media::OCI_MANIFEST,
            "digest": subject.to_string(),
            "size": img.manifest.len(),
        },
    });
    let sbom_digest =
        push_raw_manifest(&store, repo, &[empty, sbom], media::OCI_MANIFEST, &referrer).await;
    let scans = scan(&store, repo, &sbom_digest, &Limits::default()).await;
    assert!(scans.is_empty(), "{scans:?}");

    let chart_config = br#"{"name":"app","version":"1.0.0","apiVersion":"v2"}"#;
    let chart = layer_from_files(
        &[("app/Chart.yaml", 0o644, b"apiVersion: v2\nname: app\n")],
        Compression::Gzip,
    );
    let helm = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor("application/vnd.cncf.helm.config.v1+json", chart_config),
        "layers": [descriptor("application/vnd.cncf.helm.chart.content.v1.tar+gzip", &chart)],
    });
    let helm_digest = push_raw_manifest(
        &store,
        "charts/app",
        &[chart_config, &chart],
        media::OCI_MANIFEST,
        &helm,
    )
    .await;
    let scans = scan(&store, "charts/app", &helm_digest, &Limits::default()).await;
    assert!(scans.is_empty(), "{scans:?}");

    // The image the SBOM describes is still scanned.
    let scans = scan(&store, repo, &subject, &Limits::default()).await;
    assert_eq!(scans.len(), 1);
    assert!(scans[0].outcome.is_ok());
}

#[test]
fn made_up_records_are_marked_and_kept_apart_from_the_real_ones() {
    let real: BTreeSet<String> = ["Debian", "Alpine", "PyPI", "crates.io"]
        .iter()
        .flat_map(|e| real_advisories(e))
        .map(|a| a.id)
        .collect();
    assert!(real.iter().all(|id| !id.starts_with("TEST-")));
    assert!(real.contains("CVE-2012-2812") && real.contains("RUSTSEC-2021-0003"));
}

/// `pip install -U` in one Dockerfile step: one layer holds the old dist-info's
/// whiteout and the new release. Only the new release is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_in_one_layer_replaces_the_release() {
    let Some(fixtures) = fixtures() else { return };
    let old = fixtures.package("pypi", "urllib3", "1.24.1");
    let new = fixtures.package("pypi", "urllib3", "1.26.18");
    let old_dir = pypi_location(old)
        .strip_suffix("/METADATA")
        .unwrap()
        .to_string();
    let (parent, base) = old_dir.rsplit_once('/').unwrap();
    let whiteout = format!("{parent}/.wh.{base}");
    let metadata = std::fs::read(fixtures.path(new.metadata.as_deref().unwrap())).unwrap();
    let new_path = pypi_location(new);
    let upgrade = raw_tar(&[
        RawEntry {
            name: whiteout.as_bytes(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            link: None,
            data: b"",
        },
        RawEntry {
            name: new_path.as_bytes(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            link: None,
            data: &metadata,
        },
    ]);
    let img = image(vec![
        pypi_layer(&fixtures, &[old], Compression::Gzip),
        compress(&upgrade, Compression::Zstd),
    ]);
    let inventory = push_and_scan("app/python", &img).await;
    let found: Vec<(&str, &str, &str)> = inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.match_name.as_str(),
                p.version.as_str(),
                p.location.as_str(),
            )
        })
        .collect();
    assert_eq!(found, [("urllib3", "1.26.18", new_path.as_str())]);
    let index = AdvisoryIndex::new(real_advisories("PyPI"));
    assert!(index.matches(&inventory.packages[0]).is_empty());
}

/// What `docker build` (without BuildKit's OCI output) pushes: Docker schema 2 manifests
/// and configs, `tar.gzip` layer types, in a Docker manifest list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_lists_are_scanned_like_oci_indexes() {
    let Some(fixtures) = fixtures() else { return };
    let store = TestRegistry::new().await;
    let repo = "legacy/app";
    let images = [
        ("amd64", debian_image(&fixtures, "linux", "amd64")),
        ("arm64", alpine_image(&fixtures, true, "linux", "arm64")),
    ];
    let mut children = Vec::new();
    for (arch, img) in &images {
        for (digest, data) in &img.layers {
            push_blob(&store.registry, repo, digest, data).await;
        }
        push_blob(&store.registry, repo, &img.config_digest, &img.config).await;
        let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        m["mediaType"] = media::DOCKER_MANIFEST.into();
        m["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
        for layer in m["layers"].as_array_mut().unwrap() {
            // Docker has no zstd type; the scanner goes by magic bytes anyway.
            layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
        }
        let body = serde_json::to_vec(&m).unwrap();
        let digest = Digest::sha256_of(&body);
        push_manifest(
            &store.registry,
            repo,
            &digest.to_string(),
            media::DOCKER_MANIFEST,
            &body,
        )
        .await;
        children.push(serde_json::json!({
            "mediaType": media::DOCKER_MANIFEST,
            "digest": digest.to_string(),
            "size": body.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST_LIST,
        "manifests": children,
    }))
    .unwrap();
    let digest = push_manifest(
        &store.registry,
        repo,
        "latest",
        media::DOCKER_MANIFEST_LIST,
        &list,
    )
    .await;
    let scans = scan(&store, repo, &digest, &Limits::default()).await;
    let platforms: Vec<Option<&str>> = scans.iter().map(|s| s.platform.as_deref()).collect();
    assert_eq!(platforms, [Some("linux/amd64"), Some("linux/arm64")]);
    assert_debian_inventory(&fixtures, scans[0].outcome.as_ref().unwrap(), "status");
    let alpine = scans[1].outcome.as_ref().unwrap();
    assert_eq!(
        ids(
            &AdvisoryIndex::new(real_advisories("Alpine")),
            find(alpine, "libexif", "0.6.20-r0")
        ),
        set(&["CVE-2012-2812"])
    );
}
