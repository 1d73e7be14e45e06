//! `os-release` (https://www.freedesktop.org/software/systemd/man/os-release.html) and the
//! OSV ecosystem of the OS's packages.

use std::collections::BTreeMap;

use super::Os;

/// `KEY=value` lines, values optionally quoted; comments and malformed lines are ignored.
fn fields(text: &str) -> BTreeMap<&str, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        out.insert(key.trim(), unquote(value.trim()));
    }
    out
}

/// `"a \"b\""` → `a "b"`; `'x'` → `x`; bare values as they are.
fn unquote(value: &str) -> String {
    let quoted = |q: char| value.len() >= 2 && value.starts_with(q) && value.ends_with(q);
    if quoted('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if !quoted('"') {
        return value.to_string();
    }
    let mut out = String::new();
    let mut chars = value[1..value.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The OS that an os-release file describes; `None` without an `ID`.
pub fn parse(text: &str) -> Option<Os> {
    let fields = fields(text);
    let id = fields.get("ID")?.to_ascii_lowercase();
    if id.is_empty() {
        return None;
    }
    let version_id = fields.get("VERSION_ID").cloned().unwrap_or_default();
    let version = fields.get("VERSION").cloned().unwrap_or_default();
    let pretty_name = fields.get("PRETTY_NAME").cloned().unwrap_or_default();
    let lts = version.contains("LTS") || pretty_name.contains("LTS");
    Some(Os {
        ecosystem: ecosystem(&id, &version_id, lts),
        id,
        version_id,
        pretty_name,
    })
}

/// The leading `n` numeric components of a version: `3.19.1`, 2 → `3.19`.
fn numeric_prefix(version: &str, n: usize) -> Option<String> {
    let parts: Vec<&str> = version.split('.').take(n).collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() == n && parts.iter().all(numeric)).then(|| parts.join("."))
}

/// The OSV ecosystem of an OS release, as osv.dev names it:
///
/// | os-release | ecosystem |
/// |---|---|
/// | `debian` `12` | `Debian:12` (major only) |
/// | `ubuntu` `22.04`, LTS | `Ubuntu:22.04:LTS`; non-LTS `Ubuntu:24.10` |
/// | `alpine` `3.19.1` | `Alpine:v3.19` |
/// | `rocky` `9.3` | `Rocky Linux:9` |
/// | `almalinux` `9.3` | `AlmaLinux:9` |
/// | `rhel` `9.3` | `Red Hat:enterprise_linux:9` |
///
/// Debian and Alpine were checked against OSV records; Ubuntu against its naming; Rocky,
/// AlmaLinux and Red Hat are **not verified** (no fixtures). Red Hat's OSV ecosystems go on
/// with a repository (`Red Hat:enterprise_linux:9::appstream`), which a package's
/// database does not say: the matcher has to take this as a prefix. Fedora, and Debian
/// testing/sid (no `VERSION_ID`), have no OSV release ecosystem: `None`, so that the scan
/// says the OS is not matched instead of guessing.
pub fn ecosystem(id: &str, version_id: &str, lts: bool) -> Option<String> {
    match id {
        "debian" => numeric_prefix(version_id, 1).map(|major| format!("Debian:{major}")),
        "ubuntu" => numeric_prefix(version_id, 2)
            .map(|release| format!("Ubuntu:{release}{}", if lts { ":LTS" } else { "" })),
        "alpine" => numeric_prefix(version_id, 2).map(|release| format!("Alpine:v{release}")),
        "rocky" => numeric_prefix(version_id, 1).map(|major| format!("Rocky Linux:{major}")),
        "almalinux" => numeric_prefix(version_id, 1).map(|major| format!("AlmaLinux:{major}")),
        "rhel" => {
            numeric_prefix(version_id, 1).map(|major| format!("Red Hat:enterprise_linux:{major}"))
        }
        _ => None,
    }
}

/// The ecosystem family of an OS id, used without a release when the release is unknown.
pub fn family(id: &str) -> Option<&'static str> {
    Some(match id {
        "debian" => "Debian",
        "ubuntu" => "Ubuntu",
        "alpine" => "Alpine",
        "rocky" => "Rocky Linux",
        "almalinux" => "AlmaLinux",
        "rhel" => "Red Hat",
        "fedora" => "Fedora",
        _ => return None,
    })
}
