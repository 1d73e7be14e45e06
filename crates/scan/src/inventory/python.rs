//! Python distributions: `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, and `*.egg-info`
//! files (distutils).

use super::purl;
use crate::Package;

/// PEP 503: lower case, and each run of `-`, `_` and `.` becomes one `-` (`PyYAML` →
/// `pyyaml`, `zope.interface` → `zope-interface`): the name PyPI advisories use.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.extend(c.to_lowercase());
            in_separator = false;
        }
    }
    out
}

/// The distribution that a metadata file describes: e-mail style headers up to the first
/// blank line, `Name` and `Version`.
pub fn parse(text: &str, location: &str) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            let slot = match key.trim().to_ascii_lowercase().as_str() {
                "name" => &mut name,
                "version" => &mut version,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.trim().to_string());
        }
    }
    let name: String = name.filter(|n| !n.is_empty())?;
    let version: String = version.filter(|v| !v.is_empty())?;
    let normalised = pep503(&name);
    Some(Package {
        ecosystem: "PyPI".to_string(),
        purl: purl::build("pypi", None, &normalised, &version, &[]),
        match_name: normalised,
        match_version: version.clone(),
        name,
        version,
        location: location.to_string(),
    })
}
