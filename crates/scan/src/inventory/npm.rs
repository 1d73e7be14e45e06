//! npm packages: `node_modules/<name>/package.json` and
//! `node_modules/@scope/<name>/package.json`, at any depth.

use super::purl;
use crate::Package;

#[derive(serde::Deserialize)]
struct Manifest {
    name: Option<String>,
    version: Option<String>,
}

/// The package a `package.json` describes; `None` without a string name and version.
pub fn parse(bytes: &[u8], location: &str) -> Option<Package> {
    let manifest: Manifest = serde_json::from_slice(bytes).ok()?;
    let name = manifest.name.filter(|n| !n.is_empty())?;
    let version = manifest.version.filter(|v| !v.is_empty())?;
    let (namespace, short) = match name.split_once('/') {
        Some((scope, short)) if scope.starts_with('@') => (Some(scope), short),
        _ => (None, name.as_str()),
    };
    Some(Package {
        ecosystem: "npm".to_string(),
        purl: purl::build("npm", namespace, short, &version, &[]),
        match_name: name.clone(),
        match_version: version.clone(),
        name,
        version,
        location: location.to_string(),
    })
}
