//! The synthetic image of `wharf-bench scan`: a Debian 12–like file system of many small
//! files in eight layers, written gzip-compressed (and zstd-compressed, as a second
//! image of the same tar layers) into a blob store, with its config and OCI manifest in
//! a metadata store, through the stores' own APIs (upload, commit, `complete_upload`,
//! `put_manifest`) as a push would leave them.
//!
//! Inventories are not trivial: a dpkg status of a few hundred packages (rewritten by a
//! later layer, as `apt-get install` does, with a few removed-but-configured stanzas that
//! do not count), Python `*.dist-info/METADATA` in two layers (one whited out by a later
//! layer), `node_modules/*/package.json` (scoped and nested ones, and test fixtures that
//! do not count). [`Expected`] says what the scan must find.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::json;
use wharf_blobstore::{BlobStore, UploadWriter};
use wharf_metastore::{MetaStore, NewManifest, UploadSession};
use wharf_oci::{Digest, Hasher, RepoName, Tag, UploadId};

use super::content::{self, Rng, Words};
use crate::registry::OCI_MANIFEST;

pub const REPO: &str = "bench/scan";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// dpkg packages in the final status file; the base layer's has the first 60%.
const DPKG_PACKAGES: usize = 320;
/// Stanzas of removed packages whose configuration files remain (not installed).
const DPKG_CONFIG_FILES: usize = 6;
const PY_SYSTEM: usize = 45;
const PY_VENV: usize = 90;
const NPM_TOP: usize = 380;
/// Of those, every `NPM_NESTED_EVERY`th has a nested node_modules package of its own.
const NPM_NESTED_EVERY: usize = 10;
const MTIME: u64 = 1_700_000_000;

/// What the scan must report for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub dpkg: usize,
    pub pypi: usize,
    pub npm: usize,
}

/// One compression of the image, as stored.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: &'static str,
    pub manifest: Digest,
    pub compressed_bytes: u64,
}

/// The image, as written.
#[derive(Debug, Clone)]
pub struct Built {
    pub variants: Vec<Variant>,
    pub layers: usize,
    /// Uncompressed tar bytes of all layers together.
    pub tar_bytes: u64,
    /// Tar entries (files, directories, whiteouts) of all layers together.
    pub entries: u64,
    pub files: u64,
    pub expected: Expected,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    BaseOs,
    AptInstall,
    PythonSystem,
    PythonVenv,
    Node,
    App,
    Config,
    Final,
}

/// The layers, bottom first, with their share of the image's bytes.
const PLAN: [(Kind, f64); 8] = [
    (Kind::BaseOs, 0.28),
    (Kind::AptInstall, 0.20),
    (Kind::PythonSystem, 0.12),
    (Kind::PythonVenv, 0.13),
    (Kind::Node, 0.15),
    (Kind::App, 0.08),
    (Kind::Config, 0.03),
    (Kind::Final, 0.01),
];

const VENV: &str = "opt/venv/lib/python3.11/site-packages";
const PY_SYS: &str = "usr/lib/python3/dist-packages";
const NODE: &str = "usr/src/app/node_modules";

pub fn expected() -> Expected {
    Expected {
        dpkg: DPKG_PACKAGES,
        // One venv package is whited out by the Config layer.
        pypi: PY_SYSTEM + PY_VENV - 1,
        npm: NPM_TOP + NPM_TOP.div_ceil(NPM_NESTED_EVERY),
    }
}

/// Names used across the layers.
struct Names {
    words: Words,
    dpkg: Vec<(String, String, Option<String>)>,
    python: Vec<(String, String)>,
    npm: Vec<(String, String)>,
}

impl Names {
    fn new() -> Names {
        let words = Words::new(6000, 0x5CA7);
        let mut seen = HashSet::new();
        let mut unique = |base: String| {
            let mut name = base.clone();
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}{n}");
                n += 1;
            }
            name
        };
        let mut rng = Rng::new(0xD9C6);
        let dpkg = (0..DPKG_PACKAGES)
            .map(|i| {
                let w = words.nth(300 + i * 7);
                let name = unique(match i % 6 {
                    0 | 1 => format!("lib{w}{}", 1 + i % 4),
                    2 => format!("python3-{w}"),
                    3 => format!("{w}-utils"),
                    _ => w.to_string(),
                });
                let epoch = if i % 23 == 0 { "1:" } else { "" };
                let version = format!(
                    "{epoch}{}.{}.{}-{}{}",
                    1 + i % 5,
                    rng.below(30),
                    rng.below(10),
                    1 + rng.below(4),
                    if i % 9 == 0 { "+deb12u1" } else { "" }
                );
                let source = match i % 5 {
                    0 => Some(words.nth(300 + i * 7).to_string()),
                    1 => Some(format!("{} (1.{}.0-1)", words.nth(300 + i * 7), i % 9)),
                    _ => None,
                };
                (name, version, source)
            })
            .collect();
        let python = (0..PY_SYSTEM + PY_VENV)
            .map(|i| {
                let w = words.nth(2000 + i * 5);
                let name = unique(match i % 4 {
                    0 => format!("py{w}"),
                    1 => format!("{w}_{}", words.nth(i)),
                    2 => format!("{w}-client"),
                    _ => w.to_string(),
                });
                (
                    name,
                    format!("{}.{}.{}", i % 4, rng.below(40), rng.below(12)),
                )
            })
            .collect();
        let npm = (0..NPM_TOP + NPM_TOP.div_ceil(NPM_NESTED_EVERY))
            .map(|i| {
                let w = words.nth(3500 + i * 3);
                let name = unique(match i % 10 {
                    0 => format!("@{}/{w}", words.nth(i % 40)),
                    1 | 2 => format!("{w}-js"),
                    _ => w.to_string(),
                });
                (
                    name,
                    format!("{}.{}.{}", i % 7, rng.below(25), rng.below(20)),
                )
            })
            .collect();
        Names {
            words,
            dpkg,
            python,
            npm,
        }
    }
}

/// One layer's tar, built in memory.
struct Layer {
    tar: tar::Builder<Vec<u8>>,
    dirs: HashSet<String>,
    entries: u64,
    files: u64,
    rng: Rng,
    buf: Vec<u8>,
}

impl Layer {
    fn new(seed: u64, capacity: usize) -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::with_capacity(capacity)),
            dirs: HashSet::new(),
            entries: 0,
            files: 0,
            rng: Rng::new(seed),
            buf: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.tar.get_ref().len()
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_string());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(MTIME);
        self.tar
            .append_data(&mut h, format!("{path}/"), std::io::empty())?;
        self.entries += 1;
        Ok(())
    }

    /// Adds the file `path` with the content in `self.buf`.
    fn put(&mut self, path: &str, mode: u32) -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(self.buf.len() as u64);
        h.set_mtime(MTIME);
        self.tar.append_data(&mut h, path, &self.buf[..])?;
        self.entries += 1;
        self.files += 1;
        Ok(())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.put(path, mode)
    }

    fn text(&mut self, path: &str, len: usize, words: &Words) -> Result<()> {
        self.buf.clear();
        content::text(&mut self.buf, len, words, &mut self.rng);
        self.put(path, 0o644)
    }

    fn whiteout(&mut self, dir: &str, name: &str) -> Result<()> {
        self.buf.clear();
        self.put(&format!("{dir}/.wh.{name}"), 0o644)
    }

    /// Generic files under the layer's directories until the layer holds `target` bytes.
    fn fill(&mut self, kind: Kind, target: usize, words: &Words) -> Result<()> {
        let dirs: &[(&str, &str, u8, u32)] = match kind {
            // (directory, extension, content: 0 text 1 binary 2 random, mode)
            Kind::BaseOs | Kind::AptInstall => &[
                ("usr/share/doc", "txt", 0, 0o644),
                ("usr/share/perl5", "pm", 0, 0o644),
                ("usr/share/locale", "mo", 1, 0o644),
                ("usr/lib/x86_64-linux-gnu", "so", 1, 0o644),
                ("usr/share/man/man1", "1.gz", 2, 0o644),
                ("usr/share/zoneinfo", "tz", 1, 0o644),
                ("usr/bin", "", 1, 0o755),
                ("etc", "conf", 0, 0o644),
            ],
            Kind::PythonSystem => &[
                (PY_SYS, "py", 0, 0o644),
                ("usr/lib/python3.11", "py", 0, 0o644),
                ("usr/lib/python3.11/lib-dynload", "so", 1, 0o644),
            ],
            Kind::PythonVenv => &[
                (VENV, "py", 0, 0o644),
                (
                    "opt/venv/lib/python3.11/site-packages/_native",
                    "so",
                    1,
                    0o644,
                ),
                ("opt/venv/share", "dat", 2, 0o644),
            ],
            Kind::Node => &[
                (NODE, "js", 0, 0o644),
                (NODE, "d.ts", 0, 0o644),
                (NODE, "map", 0, 0o644),
                ("usr/src/app/public", "png", 2, 0o644),
            ],
            Kind::App | Kind::Final => &[
                ("usr/src/app/src", "ts", 0, 0o644),
                ("usr/src/app/dist", "js", 0, 0o644),
                ("usr/src/app/assets", "woff2", 2, 0o644),
            ],
            Kind::Config => &[("etc", "conf", 0, 0o644), ("var/lib/app", "db", 1, 0o644)],
        };
        let mut n = 0usize;
        while self.len() < target {
            let (dir, ext, content, mode) = dirs[self.rng.below(dirs.len() as u64) as usize];
            let size = if self.rng.chance(2) {
                self.rng.log_uniform(256 << 10, 4 << 20)
            } else {
                self.rng.log_uniform(200, 64 << 10)
            } as usize;
            let size = size.min(target.saturating_sub(self.len()).max(200));
            let sub = words.pick(&mut self.rng).to_string();
            let leaf = words.pick(&mut self.rng).to_string();
            let path = if ext.is_empty() {
                format!("{dir}/{leaf}{n}")
            } else {
                format!("{dir}/{sub}/{leaf}{n}.{ext}")
            };
            self.buf.clear();
            match content {
                0 => content::text(&mut self.buf, size, words, &mut self.rng),
                1 => content::binary(&mut self.buf, size, &mut self.rng),
                _ => content::random(&mut self.buf, size, &mut self.rng),
            }
            self.put(&path, mode)?;
            n += 1;
        }
        Ok(())
    }
}

fn dpkg_status(names: &Names, upto: usize, rng: &mut Rng) -> String {
    let mut s = String::new();
    for (i, (name, version, source)) in names.dpkg[..upto].iter().enumerate() {
        s += &format!("Package: {name}\nStatus: install ok installed\n");
        s += &format!(
            "Priority: optional\nSection: libs\nInstalled-Size: {}\n",
            20 + rng.below(9000)
        );
        s += "Maintainer: Debian Bench Maintainers <bench@example.org>\nArchitecture: amd64\n";
        s += "Multi-Arch: same\n";
        if let Some(src) = source {
            s += &format!("Source: {src}\n");
        }
        s += &format!("Version: {version}\n");
        if i > 0 {
            let dep = &names.dpkg[(i * 7) % i].0;
            s += &format!("Depends: libc6 (>= 2.36), {dep}\n");
        }
        s += &format!(
            "Description: {} library for {}\n {} {} {}\n .\n This package is part of the wharf-bench synthetic image.\n",
            names.words.nth(i),
            names.words.nth(i + 11),
            names.words.nth(i + 3),
            names.words.nth(i + 5),
            names.words.nth(i + 8),
        );
        if i % 4 == 0 {
            s +=
                &format!("Conffiles:\n /etc/{name}/{name}.conf 0123456789abcdef0123456789abcdef\n");
        }
        s += "\n";
    }
    for i in 0..DPKG_CONFIG_FILES {
        s += &format!(
            "Package: removed-{}\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 0.{i}-1\n\n",
            names.words.nth(i + 40)
        );
    }
    s
}

/// Builds layer `index` of the plan as an uncompressed tar.
fn build_layer(index: usize, total: u64, names: &Names) -> Result<(Vec<u8>, u64, u64)> {
    let (kind, share) = PLAN[index];
    let target = (total as f64 * share) as usize;
    let mut l = Layer::new(0x1A7E_u64 + index as u64, target + (8 << 20));
    let words = &names.words;
    let mut rng = Rng::new(0xF11E + index as u64);
    match kind {
        Kind::BaseOs => {
            l.file(
                "etc/os-release",
                0o644,
                b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL=\"https://www.debian.org/\"\n",
            )?;
            let base = DPKG_PACKAGES * 6 / 10;
            let status = dpkg_status(names, base, &mut rng);
            l.file("var/lib/dpkg/status", 0o644, status.as_bytes())?;
            for (name, _, _) in &names.dpkg[..base] {
                l.text(
                    &format!("usr/share/doc/{name}/copyright"),
                    600 + rng.below(6000) as usize,
                    words,
                )?;
                l.text(
                    &format!("var/lib/dpkg/info/{name}.list"),
                    200 + rng.below(3000) as usize,
                    words,
                )?;
                l.text(
                    &format!("var/lib/dpkg/info/{name}.md5sums"),
                    200 + rng.below(2000) as usize,
                    words,
                )?;
            }
        }
        Kind::AptInstall => {
            let base = DPKG_PACKAGES * 6 / 10;
            let status = dpkg_status(names, DPKG_PACKAGES, &mut rng);
            l.file("var/lib/dpkg/status", 0o644, status.as_bytes())?;
            for (name, _, _) in &names.dpkg[base..] {
                l.text(
                    &format!("usr/share/doc/{name}/copyright"),
                    600 + rng.below(6000) as usize,
                    words,
                )?;
                l.text(
                    &format!("var/lib/dpkg/info/{name}.list"),
                    200 + rng.below(3000) as usize,
                    words,
                )?;
            }
        }
        Kind::PythonSystem | Kind::PythonVenv => {
            let (root, range) = match kind {
                Kind::PythonSystem => (PY_SYS, 0..PY_SYSTEM),
                _ => (VENV, PY_SYSTEM..PY_SYSTEM + PY_VENV),
            };
            for (name, version) in &names.python[range] {
                let dir = name.replace('-', "_");
                let info = format!("{root}/{dir}-{version}.dist-info");
                let mut meta = format!(
                    "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {} {}\nHome-page: https://example.org/{name}\nAuthor: Bench\nLicense: MIT\nRequires-Python: >=3.8\nClassifier: Programming Language :: Python :: 3\n\n",
                    words.nth(version.len()),
                    words.nth(name.len())
                );
                let mut body = Vec::new();
                content::text(&mut body, 500 + rng.below(4000) as usize, words, &mut rng);
                meta += &String::from_utf8_lossy(&body);
                l.file(&format!("{info}/METADATA"), 0o644, meta.as_bytes())?;
                l.text(
                    &format!("{info}/RECORD"),
                    300 + rng.below(3000) as usize,
                    words,
                )?;
                l.file(&format!("{info}/WHEEL"), 0o644, b"Wheel-Version: 1.0\nGenerator: bdist_wheel (0.41.2)\nRoot-Is-Purelib: true\nTag: py3-none-any\n")?;
                l.file(
                    &format!("{info}/top_level.txt"),
                    0o644,
                    format!("{dir}\n").as_bytes(),
                )?;
                for m in 0..1 + rng.below(8) {
                    l.text(
                        &format!("{root}/{dir}/{}{m}.py", words.pick(&mut rng)),
                        500 + rng.below(20_000) as usize,
                        words,
                    )?;
                }
            }
        }
        Kind::Node => {
            for (i, (name, version)) in names.npm[..NPM_TOP].iter().enumerate() {
                let dir = format!("{NODE}/{name}");
                let manifest = json!({
                    "name": name, "version": version,
                    "description": format!("{} {}", words.nth(i), words.nth(i + 1)),
                    "main": "lib/index.js", "license": "MIT",
                    "dependencies": { names.npm[(i * 13) % NPM_TOP].0.clone(): format!("^{version}") },
                });
                l.file(
                    &format!("{dir}/package.json"),
                    0o644,
                    &serde_json::to_vec_pretty(&manifest)?,
                )?;
                l.text(
                    &format!("{dir}/lib/index.js"),
                    300 + rng.below(15_000) as usize,
                    words,
                )?;
                l.text(
                    &format!("{dir}/README.md"),
                    300 + rng.below(4000) as usize,
                    words,
                )?;
                if i % NPM_NESTED_EVERY == 0 {
                    let (nested, nv) = &names.npm[NPM_TOP + i / NPM_NESTED_EVERY];
                    let m = json!({ "name": nested, "version": nv });
                    l.file(
                        &format!("{dir}/node_modules/{nested}/package.json"),
                        0o644,
                        &serde_json::to_vec_pretty(&m)?,
                    )?;
                }
                if i % 37 == 0 {
                    // A fixture in a package's tests: not an installed package.
                    let m = json!({ "name": "fixture", "version": "0.0.0" });
                    l.file(
                        &format!("{dir}/test/fixtures/package.json"),
                        0o644,
                        &serde_json::to_vec(&m)?,
                    )?;
                }
            }
        }
        Kind::Config => {
            let (name, version) = &names.python[PY_SYSTEM];
            l.whiteout(
                VENV,
                &format!("{}-{version}.dist-info", name.replace('-', "_")),
            )?;
            l.whiteout("usr/share/doc", &names.dpkg[0].0)?;
        }
        Kind::App | Kind::Final => {}
    }
    l.fill(kind, target, words)?;
    let (entries, files) = (l.entries, l.files);
    Ok((l.tar.into_inner()?, entries, files))
}

/// A `Write` into a new upload session of the blob store, hashing as it goes. Called on
/// a blocking thread: each chunk is handed to the async writer with `block_on`.
struct StoreSink {
    handle: tokio::runtime::Handle,
    writer: Option<Box<dyn UploadWriter>>,
    id: UploadId,
    buf: Vec<u8>,
    hasher: Hasher,
    len: u64,
}

const SINK_CHUNK: usize = 4 << 20;

impl StoreSink {
    fn open(handle: &tokio::runtime::Handle, blobs: &dyn BlobStore, id: String) -> Result<Self> {
        let id = UploadId::new_unchecked(id);
        let writer = handle.block_on(blobs.upload_writer(&id, 0))?;
        Ok(StoreSink {
            handle: handle.clone(),
            writer: Some(writer),
            id,
            buf: Vec::with_capacity(SINK_CHUNK),
            hasher: Hasher::new(wharf_oci::Algorithm::Sha256),
            len: 0,
        })
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SINK_CHUNK),
        ));
        let w = self.writer.as_mut().expect("open until finished");
        self.handle
            .block_on(w.write(chunk))
            .map_err(std::io::Error::other)
    }

    /// Ends the upload: (session id, digest, size).
    fn finish(mut self) -> Result<(UploadId, Digest, u64)> {
        self.send()?;
        let w = self.writer.take().expect("open until finished");
        self.handle.block_on(w.finish())?;
        Ok((self.id, self.hasher.finish(), self.len))
    }
}

impl Write for StoreSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SINK_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Commits an upload as a blob of `REPO`, as the registry does at the end of a push.
async fn commit(
    meta: &dyn MetaStore,
    blobs: &dyn BlobStore,
    (id, digest, size): (UploadId, Digest, u64),
) -> Result<Digest> {
    let repo: RepoName = REPO.parse()?;
    let now = now_ms();
    meta.create_upload(&UploadSession {
        id: id.clone(),
        repo: repo.clone(),
        size,
        created_at_ms: now,
        updated_at_ms: now,
    })
    .await?;
    blobs.upload_commit(&id, &digest).await?;
    meta.complete_upload(&id, &repo, &digest, size).await?;
    blobs.upload_delete(&id).await?;
    Ok(digest)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A layer as written: per variant (session, digest, size); and its tar's diff id.
struct Written {
    diff_id: Digest,
    tar_bytes: u64,
    entries: u64,
    files: u64,
    uploads: Vec<(UploadId, Digest, u64)>,
}

/// Builds the image (`total` uncompressed bytes, about), writes it gzip-compressed at
/// `gzip_level` and, with `zstd`, as a second image with the same layers compressed by
/// ruzstd, and tags them `gzip` and `zstd` in `REPO`. Two layers are built at once.
pub async fn build(
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    total: u64,
    gzip_level: u32,
    zstd: bool,
) -> Result<Built> {
    let handle = tokio::runtime::Handle::current();
    let b = blobs.clone();
    let written: Vec<Written> = tokio::task::spawn_blocking(move || -> Result<Vec<Written>> {
        let names = Names::new();
        let next = AtomicUsize::new(0);
        let out: Mutex<Vec<Option<Result<Written>>>> =
            Mutex::new((0..PLAN.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= PLAN.len() {
                        break;
                    }
                    let r = (|| -> Result<Written> {
                        let (tar, entries, files) = build_layer(i, total, &names)?;
                        let mut h = Hasher::new(wharf_oci::Algorithm::Sha256);
                        h.update(&tar);
                        let mut uploads = Vec::new();
                        let mut sink =
                            StoreSink::open(&handle, b.as_ref(), format!("scan-bench-{i}-gz"))?;
                        let mut gz = flate2::write::GzEncoder::new(
                            &mut sink,
                            flate2::Compression::new(gzip_level),
                        );
                        gz.write_all(&tar)?;
                        gz.finish()?;
                        uploads.push(sink.finish()?);
                        if zstd {
                            let mut sink = StoreSink::open(
                                &handle,
                                b.as_ref(),
                                format!("scan-bench-{i}-zst"),
                            )?;
                            ruzstd::encoding::compress(
                                &tar[..],
                                &mut sink,
                                ruzstd::encoding::CompressionLevel::Fastest,
                            );
                            uploads.push(sink.finish()?);
                        }
                        Ok(Written {
                            diff_id: h.finish(),
                            tar_bytes: tar.len() as u64,
                            entries,
                            files,
                            uploads,
                        })
                    })();
                    out.lock().expect("not poisoned")[i] = Some(r);
                });
            }
        });
        out.into_inner()
            .expect("not poisoned")
            .into_iter()
            .map(|r| r.context("a layer was not built")?)
            .collect()
    })
    .await??;

    let mut variants = Vec::new();
    let names: &[(&'static str, &str)] = if zstd {
        &[("gzip", "gzip"), ("zstd", "zstd")]
    } else {
        &[("gzip", "gzip")]
    };
    for (v, (name, suffix)) in names.iter().enumerate() {
        let mut layers = Vec::new();
        for w in &written {
            let digest = commit(meta.as_ref(), blobs.as_ref(), w.uploads[v].clone()).await?;
            layers.push(json!({
                "mediaType": format!("application/vnd.oci.image.layer.v1.tar+{suffix}"),
                "digest": digest.to_string(),
                "size": w.uploads[v].2,
            }));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Labels": { "wharf-bench": "scan" } },
            "rootfs": { "type": "layers", "diff_ids": written.iter().map(|w| w.diff_id.to_string()).collect::<Vec<_>>() },
        }))?;
        let cfg_digest = Digest::sha256_of(&config);
        let cfg_size = config.len() as u64;
        let id = UploadId::new_unchecked(format!("scan-bench-config-{name}"));
        let mut w = blobs.upload_writer(&id, 0).await?;
        w.write(Bytes::from(config)).await?;
        w.finish().await?;
        let finished = (id, cfg_digest.clone(), cfg_size);
        commit(meta.as_ref(), blobs.as_ref(), finished).await?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": cfg_digest.to_string(), "size": cfg_size },
            "layers": layers,
        }))?;
        let digest = Digest::sha256_of(&manifest);
        let mut required = vec![cfg_digest];
        required.extend(
            layers
                .iter()
                .filter_map(|l| l["digest"].as_str()?.parse().ok()),
        );
        let repo: RepoName = REPO.parse()?;
        let tag: Tag = name.parse()?;
        meta.put_manifest(
            &repo,
            &NewManifest {
                digest: digest.clone(),
                media_type: OCI_MANIFEST.into(),
                payload: Bytes::from(manifest),
                artifact_type: Some(CONFIG_MEDIA_TYPE.into()),
                subject: None,
                annotations_json: None,
                required_blobs: required,
                required_manifests: vec![],
                scan: None,
                summary: None,
                references_on_demand: false,
            },
            Some(&tag),
        )
        .await?;
        variants.push(Variant {
            name,
            manifest: digest,
            compressed_bytes: written.iter().map(|w| w.uploads[v].2).sum(),
        });
    }
    if written.len() != PLAN.len() {
        bail!("{} layers written, {} planned", written.len(), PLAN.len());
    }
    Ok(Built {
        variants,
        layers: written.len(),
        tar_bytes: written.iter().map(|w| w.tar_bytes).sum(),
        entries: written.iter().map(|w| w.entries).sum(),
        files: written.iter().map(|w| w.files).sum(),
        expected: expected(),
    })
}
