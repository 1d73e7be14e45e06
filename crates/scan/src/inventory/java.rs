//! Java archives (`.jar`, `.war`, `.ear`), read from memory through the zip central
//! directory: streaming readers miss entries with data descriptors, which is every
//! deflated entry the JDK's `jar` tool writes. Packages come from
//! `META-INF/maven/<group>/<artifact>/pom.properties`; the jars nested in
//! `BOOT-INF/lib/` (Spring Boot) and `WEB-INF/lib/` (wars) are read one level deep.

use std::io::{Cursor, Read};

use super::purl;
use crate::Package;

/// Largest pom.properties read.
const PROPERTIES_LIMIT: u64 = 64 * 1024;
/// Largest nested jar decompressed into memory.
const NESTED_JAR_LIMIT: u64 = 64 << 20;
/// Decompressed bytes of nested jars per archive, against zip bombs.
const NESTED_TOTAL_LIMIT: u64 = 512 << 20;

/// `key=value` / `key: value` lines of a Java properties file (no continuations needed).
fn property<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with('!') {
            return None;
        }
        let split = line.find(['=', ':'])?;
        (line[..split].trim() == key).then(|| line[split + 1..].trim())
    })
}

/// The Maven package a pom.properties describes.
pub fn pom_properties(text: &str, location: &str) -> Option<Package> {
    let group = property(text, "groupId").filter(|g| !g.is_empty())?;
    let artifact = property(text, "artifactId").filter(|a| !a.is_empty())?;
    let version = property(text, "version").filter(|v| !v.is_empty())?;
    let name = format!("{group}:{artifact}");
    Some(Package {
        ecosystem: "Maven".to_string(),
        purl: purl::build("maven", Some(group), artifact, version, &[]),
        match_name: name.clone(),
        match_version: version.to_string(),
        name,
        version: version.to_string(),
        location: location.to_string(),
    })
}

fn is_pom_properties(entry: &str) -> bool {
    let parts: Vec<&str> = entry.split('/').collect();
    parts.len() == 5
        && parts[0] == "META-INF"
        && parts[1] == "maven"
        && parts[4] == "pom.properties"
}

fn is_nested_jar(entry: &str) -> bool {
    let Some(file) = entry
        .strip_prefix("BOOT-INF/lib/")
        .or_else(|| entry.strip_prefix("WEB-INF/lib/"))
    else {
        return false;
    };
    !file.contains('/') && file.to_ascii_lowercase().ends_with(".jar")
}

/// The Maven packages of an archive held in memory, and of the jars nested in it.
pub fn packages(bytes: &[u8], location: &str) -> Vec<Package> {
    let mut out = Vec::new();
    read_archive(bytes, location, true, &mut out);
    out
}

fn read_archive(bytes: &[u8], location: &str, read_nested: bool, out: &mut Vec<Package>) {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        return;
    };
    let mut nested_budget = NESTED_TOTAL_LIMIT;
    for index in 0..archive.len() {
        let Ok(entry) = archive.by_index(index) else {
            continue; // encrypted, or a compression method not built in
        };
        let name = entry.name().to_string();
        if is_pom_properties(&name) {
            let mut text = String::new();
            if entry
                .take(PROPERTIES_LIMIT)
                .read_to_string(&mut text)
                .is_ok()
            {
                out.extend(pom_properties(&text, location));
            }
        } else if read_nested && is_nested_jar(&name) {
            let limit = NESTED_JAR_LIMIT.min(nested_budget);
            let mut nested = Vec::new();
            // One byte over the limit tells a jar that is too big from one that fits.
            if entry.take(limit + 1).read_to_end(&mut nested).is_err() {
                continue;
            }
            nested_budget = nested_budget.saturating_sub(nested.len() as u64);
            if nested.len() as u64 > limit {
                continue;
            }
            read_archive(&nested, &format!("{location}!/{name}"), false, out);
        }
    }
}
