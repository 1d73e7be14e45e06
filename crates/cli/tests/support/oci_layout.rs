//! Fixtures for the client tests, built without extra dependencies: pseudo-random
//! content, real tar archives and real (stored-block) gzip streams, OCI images and
//! indexes, and OCI image layout directories to write and read back.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub fn sha256(data: &[u8]) -> String {
    wharf_oci::Digest::sha256_of(data).to_string()
}

/// SplitMix64: fast, good enough for test content, seeded differently on every call.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Rng(nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// `n` lowercase hex digits: safe in tags, repository and container names.
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n + 16);
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(n);
        s
    }
}

// ---------------------------------------------------------------------------------
// tar (ustar) and gzip

pub enum TarEntry<'a> {
    Dir {
        path: &'a str,
        mode: u32,
    },
    File {
        path: &'a str,
        mode: u32,
        data: &'a [u8],
    },
    Symlink {
        path: &'a str,
        target: &'a str,
    },
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    assert!(
        s.len() == width,
        "{value} does not fit a {width}-digit tar field"
    );
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

fn tar_header(path: &str, mode: u32, size: u64, typeflag: u8, link: &str) -> [u8; 512] {
    assert!(
        path.len() < 100 && link.len() < 100,
        "tar names must be short: {path} -> {link}"
    );
    let mut h = [0u8; 512];
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000); // mtime: fixed, so archives are reproducible
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field full of spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// A tar archive (ustar, what `tar` and Docker read).
pub fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            TarEntry::Dir { path, mode } => {
                out.extend_from_slice(&tar_header(path, *mode, 0, b'5', ""))
            }
            TarEntry::Symlink { path, target } => {
                out.extend_from_slice(&tar_header(path, 0o777, 0, b'2', target))
            }
            TarEntry::File { path, mode, data } => {
                out.extend_from_slice(&tar_header(path, *mode, data.len() as u64, b'0', ""));
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
    }
    out.resize(out.len() + 1024, 0); // two zero blocks end the archive
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// A valid gzip stream of `data` made of stored (uncompressed) deflate blocks:
/// every gunzip reads it, and no compression library is needed to write it.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last)); // BFINAL, BTYPE=00 (stored), padded to the byte
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------
// blobs, images, indexes

#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    pub fn json(media_type: &str, value: &Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(value).expect("json"))
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// An image: config, gzip'd tar layers and the OCI manifest that names them.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The uncompressed digest of each layer, as the config's `rootfs.diff_ids` lists it.
    pub diff_ids: Vec<String>,
    pub manifest: Blob,
}

impl Image {
    /// Config, layers, then the manifest.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v = vec![&self.config];
        v.extend(self.layers.iter());
        v.push(&self.manifest);
        v
    }

    /// Config and layers: what a manifest requires.
    pub fn content(&self) -> Vec<&Blob> {
        let mut v = vec![&self.config];
        v.extend(self.layers.iter());
        v
    }
}

/// A linux image for `arch` with one real tar+gzip layer per entry of `layer_sizes`,
/// each holding a file of that many random bytes.
pub fn random_image(rng: &mut Rng, arch: &str, layer_sizes: &[usize]) -> Image {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, &size) in layer_sizes.iter().enumerate() {
        let data = rng.bytes(size);
        let note = format!("layer {i} of a {arch} wharf test image, {size} random bytes\n");
        let bin = format!("wharf/{arch}-{i}.bin");
        let txt = format!("wharf/{arch}-{i}.txt");
        let tarball = tar(&[
            TarEntry::Dir {
                path: "wharf/",
                mode: 0o755,
            },
            TarEntry::File {
                path: &bin,
                mode: 0o644,
                data: &data,
            },
            TarEntry::File {
                path: &txt,
                mode: 0o644,
                data: note.as_bytes(),
            },
        ]);
        diff_ids.push(sha256(&tarball));
        layers.push(Blob::new(OCI_LAYER_GZIP, gzip(&tarball)));
    }
    let history: Vec<Value> = (0..layers.len())
        .map(|i| json!({ "created": "2024-01-01T00:00:00Z", "created_by": format!("wharf test layer {i}") }))
        .collect();
    let config = Blob::json(
        OCI_CONFIG,
        &json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": { "Cmd": ["/bin/true"], "Labels": { "org.wharf.test.nonce": rng.hex(16) } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        }),
    );
    let manifest = Blob::json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            "annotations": { "org.wharf.test.arch": arch },
        }),
    );
    Image {
        config,
        layers,
        diff_ids,
        manifest,
    }
}

/// An OCI image index over linux images, each entry with its platform.
pub fn index_of(images: &[(&str, &Image)]) -> Blob {
    let manifests: Vec<Value> = images
        .iter()
        .map(|(arch, img)| {
            let mut d = img.manifest.descriptor();
            d["platform"] = json!({ "architecture": arch, "os": "linux" });
            d
        })
        .collect();
    Blob::json(
        OCI_INDEX,
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
    )
}

// ---------------------------------------------------------------------------------
// OCI image layout directories

/// Writes an OCI image layout: `oci-layout`, every blob under `blobs/sha256/`, and an
/// `index.json` naming each `(tag, manifest or index)` with a ref-name annotation.
pub fn write_layout(dir: &Path, blobs: &[&Blob], tagged: &[(&str, &Blob)]) {
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).expect("create layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    for b in blobs.iter().chain(tagged.iter().map(|(_, b)| b)) {
        let hex = b.digest.strip_prefix("sha256:").expect("sha256 digest");
        fs::write(blob_dir.join(hex), &b.bytes).expect("write blob");
    }
    let manifests: Vec<Value> = tagged
        .iter()
        .map(|(tag, b)| {
            let mut d = b.descriptor();
            d["annotations"] = json!({ REF_NAME: tag });
            d
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .expect("write index.json");
}

/// An OCI image layout read back from disk (as another tool wrote it).
pub struct Layout {
    pub dir: PathBuf,
    pub index: Value,
}

impl Layout {
    pub fn open(dir: &Path) -> Layout {
        let layout = fs::read_to_string(dir.join("oci-layout"))
            .unwrap_or_else(|e| panic!("{} has no oci-layout file: {e}", dir.display()));
        let layout: Value = serde_json::from_str(&layout).expect("oci-layout is JSON");
        assert_eq!(
            layout["imageLayoutVersion"], "1.0.0",
            "oci-layout: {layout}"
        );
        let index = fs::read(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("{} has no index.json: {e}", dir.display()));
        let index = serde_json::from_slice(&index).expect("index.json is JSON");
        Layout {
            dir: dir.to_path_buf(),
            index,
        }
    }

    /// The index.json entry tagged `tag`.
    pub fn descriptor(&self, tag: &str) -> &Value {
        self.index["manifests"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["annotations"][REF_NAME] == tag))
            .unwrap_or_else(|| {
                panic!(
                    "no entry tagged {tag} in {}/index.json: {}",
                    self.dir.display(),
                    self.index
                )
            })
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn blob(&self, digest: &str) -> Vec<u8> {
        fs::read(self.blob_path(digest))
            .unwrap_or_else(|e| panic!("blob {digest} is missing from {}: {e}", self.dir.display()))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("algorithm:hex");
        self.dir.join("blobs").join(alg).join(hex)
    }
}
