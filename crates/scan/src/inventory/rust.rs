//! Rust binaries built with `cargo auditable`: their `.dep-v0` section holds the
//! zlib-compressed JSON dependency tree.

use super::purl;
use crate::Package;

/// Largest decompressed dependency tree read (auditable-info's own default).
const JSON_LIMIT: usize = 8 << 20;

/// The fields of the audit data (the `auditable-serde` format) that an inventory needs;
/// `source` is `crates.io`, `local`, `git`, `registry` or another registry's name.
#[derive(serde::Deserialize)]
struct AuditData {
    packages: Vec<AuditPackage>,
}

#[derive(serde::Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    source: String,
}

/// The crates.io packages compiled into a binary. Local, git and other-registry crates
/// are left out: crates.io advisories do not apply to them.
pub fn packages(bin: &[u8], location: &str) -> Vec<Package> {
    let Ok(json) = auditable_info::json_from_slice(bin, JSON_LIMIT) else {
        return Vec::new();
    };
    let Ok(data) = serde_json::from_str::<AuditData>(&json) else {
        return Vec::new();
    };
    data.packages
        .into_iter()
        .filter(|p| p.source == "crates.io")
        .map(|p| {
            let version = p.version;
            Package {
                ecosystem: "crates.io".to_string(),
                purl: purl::build("cargo", None, &p.name, &version, &[]),
                match_name: p.name.clone(),
                match_version: version.clone(),
                name: p.name,
                version,
                location: location.to_string(),
            }
        })
        .collect()
}
