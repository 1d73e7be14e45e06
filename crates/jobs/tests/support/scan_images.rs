//! Test images for the scanner, built in memory from real packages.
//!
//! `scripts/build-scan-fixtures.sh` fetches the raw inputs once (installed PyPI releases,
//! cargo-auditable binaries, a Debian root filesystem from Debian's .deb files, an Alpine
//! package database) and lists them in `manifest.json`; these helpers turn directories of
//! them into OCI layers (tar, gzip, zstd), whiteout layers, image manifests and configs,
//! indexes, and push them into a wharf registry backed by SQLite and the filesystem, as a
//! client's push would.
//!
//! ```ignore
//! let Some(fixtures) = fixtures() else { return };
//! let requests = fixtures.pypi("requests", "2.19.1");
//! let layer = layer_from_dir(&requests, SITE_PACKAGES, Compression::Gzip);
//! let img = image(vec![layer]);
//! let store = TestRegistry::new().await;
//! let digest = push(&store.registry, "app/python", "v1", &img).await;
//! ```
#![allow(dead_code)] // each test binary uses its own share of the helpers

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use wharf_oci::{media, Digest, Reference, RepoName};
use wharf_registry::{Limits, Registry};

/// Where Python packages go in the images (a python:3.11 image's site-packages).
pub const SITE_PACKAGES: &str = "usr/local/lib/python3.11/site-packages";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Every entry's modification time: layers are byte-for-byte reproducible.
const MTIME: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// The fixture directory, if `scripts/build-scan-fixtures.sh` has built it; see [`fixtures`].
pub fn fixtures_dir() -> Option<PathBuf> {
    fixtures().map(|f| f.dir)
}

/// The fixtures, if `scripts/build-scan-fixtures.sh` has built them
/// (`$WHARF_SCAN_FIXTURES`, else `~/.cache/wharf-scan-fixtures`). Missing: a skip, but a
/// failure under `CI=true` (a skipped check is not a pass).
pub fn fixtures() -> Option<Fixtures> {
    let dir = match std::env::var_os("WHARF_SCAN_FIXTURES") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/wharf-scan-fixtures"),
    };
    let manifest = dir.join("manifest.json");
    if !manifest.is_file() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{} is missing: run scripts/build-scan-fixtures.sh (scripts/install-test-deps.sh does)",
                manifest.display()
            );
        }
        eprintln!(
            "SKIPPED: no scanner fixtures at {}; run scripts/build-scan-fixtures.sh",
            dir.display()
        );
        return None;
    }
    let text = std::fs::read(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let manifest: FixtureManifest = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("manifest.json").display()));
    Some(Fixtures { dir, manifest })
}

/// The built fixtures and what `manifest.json` says they hold.
pub struct Fixtures {
    pub dir: PathBuf,
    pub manifest: FixtureManifest,
}

#[derive(Debug, Deserialize)]
pub struct FixtureManifest {
    pub format: u32,
    pub packages: Vec<FixturePackage>,
}

/// One package of a part, as `manifest.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct FixturePackage {
    /// `pypi`, `rust`, `debian` or `alpine`.
    pub part: String,
    /// OSV ecosystem: `PyPI`, `crates.io`, `Debian:12`, `Alpine:v3.12`.
    pub ecosystem: String,
    /// PyPI names normalised (PEP 503); others as the package database has them.
    pub name: String,
    pub version: String,
    /// Relative to the fixture directory: the install tree (pypi), the binary (rust),
    /// the root filesystem or status.d directory (debian), the root filesystem (alpine).
    pub path: String,
    /// Whether packages.json lists advisories for this version (absent: not listed).
    pub vulnerable: Option<bool>,
    /// The advisory ids packages.json expects for this version, if it lists it.
    pub expected_ids: Option<Vec<String>>,
    /// debian: `status` (var/lib/dpkg/status) or `status.d` (distroless).
    pub layout: Option<String>,
    /// debian: the source package and its version.
    pub source: Option<String>,
    pub source_version: Option<String>,
    /// rust: a direct dependency of the binary.
    pub direct: Option<bool>,
    /// rust: `runtime` or `build` (as the embedded list says).
    pub kind: Option<String>,
    /// alpine: a made-up version (not a real Alpine package).
    pub made_up: Option<bool>,
    /// pypi: `wheel` or `sdist-egg-info`.
    pub form: Option<String>,
    /// pypi: the metadata file, relative to the fixture directory.
    pub metadata: Option<String>,
}

impl Fixtures {
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    pub fn packages(&self, part: &str) -> impl Iterator<Item = &FixturePackage> {
        let part = part.to_string();
        self.manifest
            .packages
            .iter()
            .filter(move |p| p.part == part)
    }

    /// The manifest's entry for a package (PyPI names compared normalised).
    pub fn package(&self, part: &str, name: &str, version: &str) -> &FixturePackage {
        let want = normalise(name);
        self.packages(part)
            .find(|p| normalise(&p.name) == want && p.version == version)
            .unwrap_or_else(|| panic!("manifest.json lists no {part} {name} {version}"))
    }

    /// The installed tree of a PyPI release (its contents go into site-packages).
    pub fn pypi(&self, name: &str, version: &str) -> PathBuf {
        self.path(&self.package("pypi", name, version).path)
    }

    /// A cargo-auditable binary, `rust/bin/<binary>`.
    pub fn rust_binary(&self, binary: &str) -> PathBuf {
        let p = self.dir.join("rust/bin").join(binary);
        assert!(p.is_file(), "{} is missing", p.display());
        p
    }

    /// The Debian root filesystem (files, var/lib/dpkg/status, os-release).
    pub fn debian_rootfs(&self) -> PathBuf {
        self.dir.join("debian/rootfs")
    }

    /// The distroless layout's control files, for `var/lib/dpkg/status.d`.
    pub fn debian_status_d(&self) -> PathBuf {
        self.dir.join("debian/status.d")
    }

    /// The Alpine root filesystem (lib/apk/db/installed, etc/os-release); `made_up`: the
    /// variant with the fixture's synthetic vulnerable libexif.
    pub fn alpine_rootfs(&self, made_up: bool) -> PathBuf {
        self.dir.join(if made_up {
            "alpine/rootfs-made-up"
        } else {
            "alpine/rootfs"
        })
    }
}

/// PEP 503 normalisation: lower case, runs of `-_.` as one `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => LAYER_GZIP,
            Compression::Zstd => LAYER_ZSTD,
            Compression::None => LAYER_TAR,
        }
    }

    /// What a layer's first bytes say it is.
    pub fn detect(layer: &[u8]) -> Compression {
        if layer.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if layer.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A layer holding the tree under `root` at `prefix_in_image` ("" for the image's root),
/// with the files' own modes (executable bits included), symbolic links as links, and
/// the prefix's parent directories. Owner root, a fixed mtime, entries sorted: the same
/// tree always gives the same bytes.
pub fn layer_from_dir(root: &Path, prefix_in_image: &str, compression: Compression) -> Vec<u8> {
    layer_from_dirs(&[(root, prefix_in_image)], compression)
}

/// One layer holding several trees (e.g. several PyPI releases in one site-packages).
pub fn layer_from_dirs(trees: &[(&Path, &str)], compression: Compression) -> Vec<u8> {
    let mut b = TarWriter::default();
    for (root, prefix) in trees {
        assert!(root.is_dir(), "{} is not a directory", root.display());
        let prefix = prefix.trim_matches('/');
        b.parents(prefix);
        b.tree(root, prefix);
    }
    compress(&b.finish(), compression)
}

/// A gzip layer that deletes `paths` from the layers below: `a/b/c` becomes the whiteout
/// `a/b/.wh.c`, and `a/b/` (a trailing slash) the opaque whiteout `a/b/.wh..wh..opq`
/// (the directory's lower contents go, the directory stays).
pub fn whiteout_layer(paths: &[&str]) -> Vec<u8> {
    let mut b = TarWriter::default();
    for path in paths {
        let whiteout = if let Some(dir) = path.strip_suffix('/') {
            format!("{}/.wh..wh..opq", dir.trim_start_matches('/'))
        } else {
            let path = path.trim_matches('/');
            match path.rsplit_once('/') {
                Some((dir, name)) => format!("{dir}/.wh.{name}"),
                None => format!(".wh.{path}"),
            }
        };
        if let Some((dir, _)) = whiteout.rsplit_once('/') {
            b.parents(dir);
        }
        b.file(&whiteout, 0o644, &[]);
    }
    compress(&b.finish(), Compression::Gzip)
}

/// A layer from entries given in code: `(path, mode, contents)` files, in this order.
pub fn layer_from_files(files: &[(&str, u32, &[u8])], compression: Compression) -> Vec<u8> {
    let mut b = TarWriter::default();
    for (path, mode, data) in files {
        if let Some((dir, _)) = path.trim_matches('/').rsplit_once('/') {
            b.parents(dir);
        }
        b.file(path.trim_matches('/'), *mode, data);
    }
    compress(&b.finish(), compression)
}

pub fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("writing to memory");
            e.finish().expect("writing to memory")
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// The tar inside a layer, whatever its compression.
pub fn decompress(layer: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match Compression::detect(layer) {
        Compression::None => out.extend_from_slice(layer),
        // Multi-member, as estargz layers (and the runtime's reader) have it.
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(layer)
                .read_to_end(&mut out)
                .expect("a valid gzip layer");
        }
        Compression::Zstd => {
            ruzstd::decoding::StreamingDecoder::new(layer)
                .expect("a valid zstd frame")
                .read_to_end(&mut out)
                .expect("a valid zstd layer");
        }
    }
    out
}

/// An entry read back from a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerEntry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub data: Vec<u8>,
    /// Symbolic links: the target.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Every entry of a layer, in order.
pub fn read_layer(layer: &[u8]) -> Vec<LayerEntry> {
    let tar = decompress(layer);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        let mode = entry.header().mode().expect("a mode") & 0o7777;
        let link = entry
            .link_name()
            .expect("a link name")
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        out.push(LayerEntry {
            path: path.trim_end_matches('/').to_string(),
            kind,
            mode,
            data,
            link,
        });
    }
    out
}

/// Writes a tar with GNU headers (long names as GNU extensions).
#[derive(Default)]
struct TarWriter {
    builder: Option<tar::Builder<Vec<u8>>>,
    /// Directories written so far, so parents are written once.
    dirs: std::collections::BTreeSet<String>,
}

impl TarWriter {
    fn b(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.builder
            .get_or_insert_with(|| tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode & 0o7777);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    /// `path` and its parents, as directories (mode 0755), unless written already.
    fn parents(&mut self, path: &str) {
        let mut sofar = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !sofar.is_empty() {
                sofar.push('/');
            }
            sofar.push_str(part);
            self.dir(&sofar, 0o755);
        }
    }

    fn dir(&mut self, path: &str, mode: u32) {
        if self.dirs.insert(path.to_string()) {
            let mut h = Self::header(tar::EntryType::Directory, mode, 0);
            self.b()
                .append_data(&mut h, format!("{path}/"), std::io::empty())
                .expect("tar directory");
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b()
            .append_data(&mut h, path, data)
            .unwrap_or_else(|e| panic!("tar {path}: {e}"));
    }

    fn symlink(&mut self, path: &str, target: &Path) {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b()
            .append_link(&mut h, path, target)
            .unwrap_or_else(|e| panic!("tar {path}: {e}"));
    }

    /// The contents of `root` (not `root` itself) under `prefix`, depth first, sorted.
    fn tree(&mut self, root: &Path, prefix: &str) {
        use std::os::unix::fs::PermissionsExt;
        let mut children: Vec<_> = std::fs::read_dir(root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        children.sort();
        for child in children {
            let name = child.file_name().expect("a name").to_string_lossy();
            let path = if prefix.is_empty() {
                name.into_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(&child)
                .unwrap_or_else(|e| panic!("{}: {e}", child.display()));
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&child).expect("a link target");
                self.symlink(&path, &target);
            } else if meta.is_dir() {
                self.dir(&path, mode);
                self.tree(&child, &path);
            } else if meta.is_file() {
                let data =
                    std::fs::read(&child).unwrap_or_else(|e| panic!("{}: {e}", child.display()));
                self.file(&path, mode, &data);
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.b();
        self.builder
            .take()
            .expect("a builder")
            .into_inner()
            .expect("tar end")
    }
}

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

/// An image as a client pushes it: the blobs, then the manifest.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
    /// `(digest, bytes)` in the manifest's order, lowest layer first.
    pub layers: Vec<(Digest, Vec<u8>)>,
    /// The sha256 of each layer's uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<Digest>,
    pub os: String,
    pub architecture: String,
}

/// A linux/amd64 image of `layers` (lowest first; compression detected per layer).
pub fn image(layers: Vec<Vec<u8>>) -> TestImage {
    image_for("linux", "amd64", layers)
}

/// An image for a platform; `architecture` may carry a variant (`arm/v7`, `arm64/v8`).
pub fn image_for(os: &str, architecture: &str, layers: Vec<Vec<u8>>) -> TestImage {
    let (arch, variant) = match architecture.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (architecture, None),
    };
    let diff_ids: Vec<Digest> = layers
        .iter()
        .map(|l| Digest::sha256_of(&decompress(l)))
        .collect();
    let history: Vec<_> = (0..layers.len())
        .map(|i| {
            serde_json::json!({
                "created": "2026-01-01T00:00:00Z",
                "created_by": format!("wharf scanner test layer {i}"),
            })
        })
        .collect();
    let mut config = serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": arch,
        "os": os,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "history": history,
    });
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).expect("JSON");
    let config_digest = Digest::sha256_of(&config);
    let layers: Vec<(Digest, Vec<u8>)> = layers
        .into_iter()
        .map(|l| (Digest::sha256_of(&l), l))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers.iter().map(|(d, l)| serde_json::json!({
            "mediaType": Compression::detect(l).media_type(),
            "digest": d.to_string(),
            "size": l.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest).expect("JSON");
    TestImage {
        manifest_digest: Digest::sha256_of(&manifest),
        config,
        config_digest,
        manifest,
        layers,
        diff_ids,
        os: os.to_string(),
        architecture: architecture.to_string(),
    }
}

/// An OCI image index of `(os, architecture, image)` (architecture may carry a variant,
/// `arm64/v8`). Push the images first ([`push_index`] does).
pub fn index(platforms: &[(&str, &str, &TestImage)]) -> Vec<u8> {
    let manifests: Vec<_> = platforms
        .iter()
        .map(|(os, architecture, img)| {
            let mut platform = serde_json::json!({ "os": os });
            match architecture.split_once('/') {
                Some((a, v)) => {
                    platform["architecture"] = (*a).into();
                    platform["variant"] = v.into();
                }
                None => platform["architecture"] = (*architecture).into(),
            }
            serde_json::json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": img.manifest_digest.to_string(),
                "size": img.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("JSON")
}

// ---------------------------------------------------------------------------------------
// A registry to push into
// ---------------------------------------------------------------------------------------

/// A registry on a SQLite metadata store and a filesystem blob store in a temporary
/// directory, as a single-node wharf runs. The scanner job gets the same stores through
/// `registry.meta()` and `registry.blobs()`.
pub struct TestRegistry {
    pub registry: Registry,
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    pub async fn new() -> TestRegistry {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let meta = wharf_metastore::SqliteMetaStore::open(dir.path().join("meta.db"))
            .await
            .expect("a SQLite metadata store");
        let blobs =
            wharf_blobstore::FsBlobStore::open(dir.path().join("blobs")).expect("a blob store");
        TestRegistry {
            registry: Registry::new(Arc::new(meta), Arc::new(blobs), Limits::default()),
            dir,
        }
    }
}

/// Uploads a blob whole (`POST ?digest=`), as a client does.
pub async fn push_blob(registry: &Registry, repo: &str, digest: &Digest, data: &[u8]) {
    let repo: RepoName = repo.parse().expect("a repository name");
    let body = Bytes::copy_from_slice(data);
    let stream: wharf_registry::ByteStream =
        Box::pin(futures_util::stream::once(async move { Ok(body) }));
    registry
        .upload_whole(&repo, digest, stream, Some(data.len() as u64))
        .await
        .unwrap_or_else(|e| panic!("uploading {digest} to {repo}: {e}"));
}

/// Stores a manifest (or index) of `media_type` under `reference` (a tag or its digest).
pub async fn push_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Digest {
    let repo: RepoName = repo.parse().expect("a repository name");
    let reference: Reference = reference.parse().expect("a tag or digest");
    registry
        .put_manifest(
            &repo,
            &reference,
            Some(media_type),
            Bytes::copy_from_slice(body),
        )
        .await
        .unwrap_or_else(|e| panic!("pushing manifest {repo}:{reference}: {e}"))
        .digest
}

/// Pushes an image as a client does (layers, config, then the manifest under `tag`);
/// the manifest's digest.
pub async fn push(registry: &Registry, repo: &str, tag: &str, image: &TestImage) -> Digest {
    push_untagged(registry, repo, image).await;
    push_manifest(registry, repo, tag, media::OCI_MANIFEST, &image.manifest).await
}

/// Pushes an image's blobs and its manifest by digest, no tag (an index's children).
pub async fn push_untagged(registry: &Registry, repo: &str, image: &TestImage) -> Digest {
    for (digest, data) in &image.layers {
        push_blob(registry, repo, digest, data).await;
    }
    push_blob(registry, repo, &image.config_digest, &image.config).await;
    push_manifest(
        registry,
        repo,
        &image.manifest_digest.to_string(),
        media::OCI_MANIFEST,
        &image.manifest,
    )
    .await
}

/// Pushes every platform's image, then their index under `tag`; the index's digest.
pub async fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    platforms: &[(&str, &str, &TestImage)],
) -> Digest {
    for (_, _, img) in platforms {
        push_untagged(registry, repo, img).await;
    }
    push_manifest(registry, repo, tag, media::OCI_INDEX, &index(platforms)).await
}
