//! Go binaries' build information (Go ≥ 1.18): the toolchain version and the modules.
//!
//! The data starts with a 32-byte header at a 16-byte-aligned offset: `\xff Go buildinf:`
//! (14 bytes), the pointer size (1 byte), flags (1 byte; bit 1 = strings inline, Go ≥ 1.18),
//! padding. Two varint-length-prefixed strings follow: the Go version, and the module info
//! wrapped in 16-byte sentinels, whose lines are `path\t…`, `mod\tpath\tversion\tsum`,
//! `dep\tpath\tversion\tsum`, `=>\tpath\tversion\tsum` (replacing the line above) and
//! `build\tkey=value`.

use super::purl;
use crate::Package;

pub const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const ALIGN: usize = 16;
const FLAG_INLINE_STRINGS: u8 = 2;

/// What a Go binary says about how it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// `go1.21.5`
    pub go_version: String,
    /// The main module (`mod`) and the dependencies (`dep`, after replacements), as
    /// (module path, version); a version is empty for `(devel)` or a local replacement.
    pub modules: Vec<(String, String)>,
}

/// A uvarint-prefixed string at `*at`, moving `*at` past it.
fn read_string(bin: &[u8], at: &mut usize) -> Option<Vec<u8>> {
    let (mut len, mut shift) = (0u64, 0u32);
    loop {
        let byte = *bin.get(*at)?;
        *at += 1;
        len |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return None;
        }
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let bytes = bin.get(*at..end)?.to_vec();
    *at = end;
    Some(bytes)
}

/// The build information of a Go ≥ 1.18 binary; `None` for anything else (including Go
/// < 1.18 binaries, whose header holds pointers into the program instead).
pub fn buildinfo(bin: &[u8]) -> Option<BuildInfo> {
    let start = (0..bin.len())
        .step_by(ALIGN)
        .find(|&i| bin[i..].starts_with(MAGIC))?;
    let flags = *bin.get(start + 15)?;
    if flags & FLAG_INLINE_STRINGS == 0 {
        return None;
    }
    let mut at = start + HEADER_LEN;
    let go_version = String::from_utf8_lossy(&read_string(bin, &mut at)?).into_owned();
    let modinfo = read_string(bin, &mut at).unwrap_or_default();
    let modinfo = if modinfo.len() >= 33 {
        String::from_utf8_lossy(&modinfo[16..modinfo.len() - 16]).into_owned()
    } else {
        String::new()
    };
    let mut modules: Vec<(String, String)> = Vec::new();
    for line in modinfo.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let version = |v: &str| {
            if v == "(devel)" {
                String::new()
            } else {
                v.to_string()
            }
        };
        match fields.as_slice() {
            ["mod" | "dep", path, rest @ ..] => {
                modules.push((path.to_string(), version(rest.first().unwrap_or(&""))))
            }
            ["=>", path, rest @ ..] => {
                if let Some(last) = modules.last_mut() {
                    *last = (path.to_string(), version(rest.first().unwrap_or(&"")));
                }
            }
            _ => {}
        }
    }
    Some(BuildInfo {
        go_version,
        modules,
    })
}

/// The OSV version of the Go toolchain: `go1.19.8` → `1.19.8`, `go1.20` → `1.20.0`,
/// `go1.21rc2` → `1.21.0-rc.2`. `None` for development builds (`devel go1.23-…`).
pub fn stdlib_version(go_version: &str) -> Option<String> {
    let token = go_version.split_whitespace().next()?.strip_prefix("go")?;
    let split = token
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(token.len());
    let (numbers, pre) = token.split_at(split);
    let mut parts: Vec<&str> = numbers.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    while parts.len() < 3 {
        parts.push("0");
    }
    let mut version = parts.join(".");
    if !pre.is_empty() {
        let digits = pre.find(|c: char| c.is_ascii_digit()).unwrap_or(pre.len());
        let (word, number) = pre.split_at(digits);
        version.push('-');
        version.push_str(word);
        if !number.is_empty() {
            version.push('.');
            version.push_str(number);
        }
    }
    Some(version)
}

/// The Go packages of a binary: its modules (OSV `Go` versions have no `v`), and the
/// toolchain as the package `stdlib`.
pub fn packages(bin: &[u8], location: &str) -> Vec<Package> {
    let Some(info) = buildinfo(bin) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(version) = stdlib_version(&info.go_version) {
        out.push(Package {
            ecosystem: "Go".to_string(),
            name: "stdlib".to_string(),
            version: info.go_version.clone(),
            match_name: "stdlib".to_string(),
            match_version: version.clone(),
            purl: purl::build("golang", None, "stdlib", &version, &[]),
            location: location.to_string(),
        });
    }
    for (path, version) in info.modules {
        if version.is_empty() {
            continue;
        }
        let (namespace, name) = match path.rsplit_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, path.as_str()),
        };
        out.push(Package {
            ecosystem: "Go".to_string(),
            purl: purl::build("golang", namespace, name, &version, &[]),
            match_name: path.clone(),
            match_version: version.strip_prefix('v').unwrap_or(&version).to_string(),
            name: path,
            version,
            location: location.to_string(),
        });
    }
    out
}
