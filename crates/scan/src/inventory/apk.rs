//! Alpine's `lib/apk/db/installed`.

use super::{purl, Os};
use crate::Package;

/// One package's header fields. The file lists (`F:`, `R:`, `Z:`, `a:`) come after them
/// and repeat, so only the first occurrence of each key counts.
#[derive(Default)]
struct Stanza<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    arch: Option<&'a str>,
    origin: Option<&'a str>,
}

impl<'a> Stanza<'a> {
    fn into_package(self, location: &str, ecosystem: &str, distro: &str) -> Option<Package> {
        let name = self.name?.to_string();
        let version = self.version?.to_string();
        // Alpine's advisories name the origin (source) package; same version.
        let origin = self.origin.unwrap_or(&name).to_string();
        let upstream = if origin != name { origin.as_str() } else { "" };
        let purl = purl::build(
            "apk",
            Some("alpine"),
            &name,
            &version,
            &[
                ("arch", self.arch.unwrap_or_default()),
                ("distro", distro),
                ("upstream", upstream),
            ],
        );
        Some(Package {
            ecosystem: ecosystem.to_string(),
            match_version: version.clone(),
            match_name: origin,
            name,
            version,
            purl,
            location: location.to_string(),
        })
    }
}

/// The packages of an apk `installed` database: `X:value` lines, a blank line between
/// packages; `P` name, `V` version, `A` arch, `o` origin.
pub fn parse(text: &str, location: &str, ecosystem: &str, os: Option<&Os>) -> Vec<Package> {
    let distro = purl::distro(os);
    let mut out = Vec::new();
    let mut current = Stanza::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(std::mem::take(&mut current).into_package(location, ecosystem, &distro));
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "P" => &mut current.name,
            "V" => &mut current.version,
            "A" => &mut current.arch,
            "o" => &mut current.origin,
            _ => continue,
        };
        slot.get_or_insert(value.trim());
    }
    out.extend(current.into_package(location, ecosystem, &distro));
    out
}
