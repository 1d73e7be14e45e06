//! RubyGems: `specifications/*.gemspec`, as `gem` writes them. The file is Ruby source and
//! is never evaluated: only the literal `s.name = "…"` and `s.version = "…"` lines are read.

use super::purl;
use crate::Package;

/// `  s.name = "rack".freeze` with attribute `name` → `rack`.
fn literal_assignment<'a>(line: &'a str, attribute: &str) -> Option<&'a str> {
    let (target, value) = line.trim().split_once('=')?;
    let (receiver, field) = target.trim().split_once('.')?;
    if field != attribute || receiver.is_empty() {
        return None;
    }
    if !receiver
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let value = value.trim();
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &value[1..];
    let end = rest.find(quote)?;
    Some(&rest[..end])
}

/// The gem a gemspec describes. The version falls back on the file name
/// (`rack-2.2.22.gemspec`) when it is not a literal string.
pub fn parse(text: &str, location: &str) -> Option<Package> {
    let name = text
        .lines()
        .find_map(|l| literal_assignment(l, "name"))?
        .to_string();
    let version = text
        .lines()
        .find_map(|l| literal_assignment(l, "version"))
        .map(str::to_string)
        .or_else(|| {
            let file = location.rsplit('/').next()?.strip_suffix(".gemspec")?;
            let version = file.strip_prefix(name.as_str())?.strip_prefix('-')?;
            Some(version.to_string())
        })?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    Some(Package {
        ecosystem: "RubyGems".to_string(),
        purl: purl::build("gem", None, &name, &version, &[]),
        match_name: name.clone(),
        match_version: version.clone(),
        name,
        version,
        location: location.to_string(),
    })
}
