//! Test content: incompressible pseudo-random blobs and small OCI images, all built in
//! memory before any timing starts.

use bytes::Bytes;
use wharf_oci::Digest;

use crate::registry::OCI_MANIFEST;

/// `len` pseudo-random bytes from `seed` (splitmix64: fast, and distinct seeds give
/// distinct content, which is all a registry benchmark needs — no crypto quality).
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&next().to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A blob and its digest.
#[derive(Clone)]
pub struct Blob {
    pub data: Bytes,
    pub digest: Digest,
}

impl Blob {
    pub fn new(data: Bytes) -> Blob {
        let digest = Digest::sha256_of(&data);
        Blob { data, digest }
    }
}

/// A one-layer OCI image: layer, config, and the manifest that names them.
#[derive(Clone)]
pub struct Image {
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
}

impl Image {
    /// A unique image: `layer_len` random bytes and a config that names `id`, so no two
    /// images share a blob or a manifest digest.
    pub fn unique(id: u64, layer_len: usize) -> Image {
        let layer = Blob::new(random_bytes(layer_len, id.wrapping_mul(0xB10B)));
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "wharf-bench.image": id.to_string() } },
            "rootfs": { "type": "layers", "diff_ids": [layer.digest.to_string()] },
        });
        let config = Blob::new(Bytes::from(
            serde_json::to_vec(&config).expect("JSON value serializes"),
        ));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest.to_string(),
                "size": config.data.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer.digest.to_string(),
                "size": layer.data.len(),
            }],
        });
        let manifest = Blob::new(Bytes::from(
            serde_json::to_vec(&manifest).expect("JSON value serializes"),
        ));
        Image {
            layer,
            config,
            manifest,
        }
    }
}

/// Median of the samples (mean of the middle two for an even count); NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile `p` (0–100) of the samples; NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_sized_and_seeded() {
        assert_eq!(random_bytes(13, 1).len(), 13);
        assert_eq!(random_bytes(64, 1), random_bytes(64, 1));
        assert_ne!(random_bytes(64, 1), random_bytes(64, 2));
    }

    #[test]
    fn images_are_unique() {
        let (a, b) = (Image::unique(1, 1024), Image::unique(2, 1024));
        assert_ne!(a.layer.digest, b.layer.digest);
        assert_ne!(a.config.digest, b.config.digest);
        assert_ne!(a.manifest.digest, b.manifest.digest);
        assert!(a.manifest.digest.matches(&a.manifest.data));
    }

    #[test]
    fn median_and_percentile() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&v, 50.0), 100.0);
    }
}
