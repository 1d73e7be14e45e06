//! dpkg's `var/lib/dpkg/status`, and distroless images' `var/lib/dpkg/status.d/*`.

use std::collections::BTreeMap;

use super::{purl, Os};
use crate::Package;

/// RFC 822-style stanzas separated by blank lines. Continuation lines (Description,
/// Conffiles) start with a space and are not needed.
pub(crate) fn stanzas(text: &str) -> Vec<BTreeMap<&str, &str>> {
    let mut out = Vec::new();
    let mut current = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            current.entry(key.trim()).or_insert(value.trim());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `Source: name` or `Source: name (version)`: the source package, and its version when it
/// differs from the binary's (binNMUs: binary `2.38.1-5+b1` of source `2.38.1-5`).
fn source(field: &str) -> (String, Option<String>) {
    match field.split_once(' ') {
        Some((name, version)) => {
            let version = version.trim().trim_start_matches('(').trim_end_matches(')');
            (name.to_string(), Some(version.trim().to_string()))
        }
        None => (field.to_string(), None),
    }
}

/// The installed packages of a dpkg status file. A stanza counts when its `Status` says
/// `installed` (status.d files have no `Status`: every stanza there is installed).
/// `ecosystem` is the OS's (`Debian:12`); `os` gives the purl's namespace and distro.
pub fn parse(text: &str, location: &str, ecosystem: &str, os: Option<&Os>) -> Vec<Package> {
    let namespace = match os {
        Some(os) if os.id == "ubuntu" => "ubuntu",
        _ => "debian",
    };
    let distro = purl::distro(os);
    stanzas(text)
        .into_iter()
        .filter(|s| {
            s.get("Status")
                .is_none_or(|status| status.split_whitespace().nth(2) == Some("installed"))
        })
        .filter_map(|s| {
            let name = s.get("Package")?.to_string();
            let version = s.get("Version")?.to_string();
            let arch = s.get("Architecture").copied().unwrap_or_default();
            let (source_name, source_version) = match s.get("Source") {
                Some(field) => source(field),
                None => (name.clone(), None),
            };
            let upstream = if source_name != name {
                source_name.as_str()
            } else {
                ""
            };
            let purl = purl::build(
                "deb",
                Some(namespace),
                &name,
                &version,
                &[("arch", arch), ("distro", &distro), ("upstream", upstream)],
            );
            Some(Package {
                ecosystem: ecosystem.to_string(),
                match_version: source_version.unwrap_or_else(|| version.clone()),
                match_name: source_name,
                name,
                version,
                purl,
                location: location.to_string(),
            })
        })
        .collect()
}
