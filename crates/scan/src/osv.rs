//! OSV advisories (https://ossf.github.io/osv-schema/): the record format, reading an
//! osv.dev `all.zip`, CVSS scoring, and whether an advisory affects a package version
//! (design: docs/design/scanning-research.md §4).
//!
//! The model is tolerant on purpose: real data breaks the schema now and then (Alpine's
//! `"versions": null`), and one odd record must not stop a database import. Fields the
//! scanner does not read are kept as JSON values so that a stored record stays whole.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::io::{Read, Seek};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::versions::{equality_fingerprint, Scheme, Version};

/// One OSV record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    /// Checked by [`Advisory::validate`] rather than by the parser, so that the error
    /// can say which problem the record has.
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    /// Set when the record was retracted: it then matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub aliases: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub related: Vec<String>,
    /// Ubuntu names the upstream CVE here rather than in `aliases`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub severity: Vec<SeverityEntry>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub affected: Vec<Affected>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub references: Vec<Reference>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub credits: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

/// `{type, score}`: a CVSS vector for the `CVSS_V*` types, a word for others (`Ubuntu`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeverityEntry {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub score: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One affected package: which versions, as a list and/or as ranges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<AffectedPackage>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub severity: Vec<SeverityEntry>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ranges: Vec<Range>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AffectedPackage {
    #[serde(default)]
    pub ecosystem: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

/// A range of versions, as events. `kind` is `ECOSYSTEM`, `SEMVER` or `GIT` (commits,
/// which say nothing about package versions and are ignored here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Range {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

/// One event; exactly one field is set in a valid record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Introduced,
    Fixed,
    LastAffected,
    Limit,
}

impl Event {
    /// The event's kind and version; the first field set wins if a record sets several.
    fn kind_and_value(&self) -> Option<(EventKind, &str)> {
        let fields = [
            (EventKind::Introduced, &self.introduced),
            (EventKind::Fixed, &self.fixed),
            (EventKind::LastAffected, &self.last_affected),
            (EventKind::Limit, &self.limit),
        ];
        fields
            .into_iter()
            .find_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
    }

    fn fields_set(&self) -> usize {
        [
            &self.introduced,
            &self.fixed,
            &self.last_affected,
            &self.limit,
        ]
        .iter()
        .filter(|f| f.is_some())
        .count()
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What went wrong with a record or an archive; `record` is the advisory id, or the
/// archive entry's name when the id cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OsvError {
    #[error("{record}: not an OSV record: {source}")]
    Json {
        record: String,
        source: serde_json::Error,
    },
    #[error("{record}: {problem}")]
    Invalid { record: String, problem: String },
    #[error("{entry}: larger than the limit of {limit} bytes")]
    EntryTooLarge { entry: String, limit: u64 },
    #[error("the archive has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("{entry}: cannot read the zip archive: {source}")]
    Zip {
        entry: String,
        source: zip::result::ZipError,
    },
    #[error("{entry}: cannot read: {source}")]
    Io {
        entry: String,
        source: std::io::Error,
    },
}

/// Parses one record (no validation: see [`Advisory::validate`]).
pub fn parse(bytes: &[u8]) -> Result<Advisory, OsvError> {
    parse_named("record", bytes)
}

/// Parses, naming the record by its id when that much can be read and else by `name`.
fn parse_named(name: &str, bytes: &[u8]) -> Result<Advisory, OsvError> {
    serde_json::from_slice(bytes).map_err(|source| {
        #[derive(Deserialize)]
        struct JustTheId {
            id: String,
        }
        let record = serde_json::from_slice::<JustTheId>(bytes)
            .map(|r| r.id)
            .unwrap_or_else(|_| name.to_string());
        OsvError::Json { record, source }
    })
}

impl Advisory {
    /// Checks what matching relies on: an id; each affected package has an ecosystem and
    /// a name; each range has a type and events; each event sets one non-empty version.
    /// Unknown ecosystems and range types are allowed (they just never match).
    pub fn validate(&self) -> Result<(), OsvError> {
        let invalid = |problem: String| OsvError::Invalid {
            record: if self.id.is_empty() {
                "record".to_string()
            } else {
                self.id.clone()
            },
            problem,
        };
        if self.id.trim().is_empty() {
            return Err(invalid("has no id".into()));
        }
        for (i, affected) in self.affected.iter().enumerate() {
            match &affected.package {
                Some(p) if p.ecosystem.trim().is_empty() => {
                    return Err(invalid(format!("affected[{i}].package has no ecosystem")))
                }
                Some(p) if p.name.trim().is_empty() => {
                    return Err(invalid(format!("affected[{i}].package has no name")))
                }
                Some(_) => {}
                // Allowed only for commit ranges: there is nothing else to match it on.
                None if affected.ranges.iter().all(|r| r.kind == "GIT") => {}
                None => return Err(invalid(format!("affected[{i}] has no package"))),
            }
            for (j, range) in affected.ranges.iter().enumerate() {
                if range.kind.trim().is_empty() {
                    return Err(invalid(format!("affected[{i}].ranges[{j}] has no type")));
                }
                if range.events.is_empty() {
                    return Err(invalid(format!("affected[{i}].ranges[{j}] has no events")));
                }
                for (k, event) in range.events.iter().enumerate() {
                    let at = format!("affected[{i}].ranges[{j}].events[{k}]");
                    if event.fields_set() != 1 {
                        return Err(invalid(format!(
                            "{at} must set exactly one of introduced, fixed, last_affected, limit"
                        )));
                    }
                    if event
                        .kind_and_value()
                        .is_some_and(|(_, v)| v.trim().is_empty())
                    {
                        return Err(invalid(format!("{at} has an empty version")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Severity bucket and CVSS base score. The highest score among the CVSS vectors of
    /// the record and its affected entries, preferring v3/v4 over v2 (v2 scores run high
    /// and NVD no longer assigns them); else a severity word (`database_specific`, then
    /// non-CVSS entries such as Ubuntu's, then the affected entries'); else Unknown.
    /// A vector that does not parse is skipped.
    pub fn severity(&self) -> (crate::Severity, Option<f64>) {
        let mut newest: Option<f64> = None;
        let mut v2: Option<f64> = None;
        let entries = self
            .severity
            .iter()
            .chain(self.affected.iter().flat_map(|a| a.severity.iter()));
        let mut consider = |vector: &str| {
            if let Some((score, is_v2)) = cvss_score(vector) {
                let best = if is_v2 { &mut v2 } else { &mut newest };
                *best = Some(best.map_or(score, |b: f64| b.max(score)));
            }
        };
        for entry in entries.clone() {
            if entry.kind.starts_with("CVSS_") {
                consider(&entry.score);
            }
        }
        // RustSec repeats its vector in each affected entry's database_specific.
        for affected in &self.affected {
            if let Some(vector) = affected
                .database_specific
                .as_ref()
                .and_then(|d| d.get("cvss"))
                .and_then(Value::as_str)
            {
                consider(vector);
            }
        }
        if let Some(score) = newest.or(v2) {
            return (crate::Severity::from_score(score), Some(score));
        }

        let word = |value: Option<&Value>| {
            value
                .and_then(|d| d.get("severity"))
                .and_then(Value::as_str)
                .and_then(crate::Severity::parse)
        };
        if let Some(s) = word(self.database_specific.as_ref()) {
            return (s, None);
        }
        let from_entries = entries
            .filter(|e| !e.kind.starts_with("CVSS_"))
            .filter_map(|e| crate::Severity::parse(e.score.trim()))
            .max();
        if let Some(s) = from_entries {
            return (s, None);
        }
        let from_affected = self
            .affected
            .iter()
            .flat_map(|a| {
                [
                    word(a.ecosystem_specific.as_ref()),
                    word(a.database_specific.as_ref()),
                ]
            })
            .flatten()
            .max();
        (from_affected.unwrap_or(crate::Severity::Unknown), None)
    }

    /// A withdrawn advisory matches nothing.
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.as_deref().is_some_and(|w| !w.is_empty())
    }
}

/// A CVSS vector's base score and whether it is v2; `None` if it does not parse. A plain
/// number between 0 and 10 is taken as a score (some databases put one there).
fn cvss_score(vector: &str) -> Option<(f64, bool)> {
    let vector = vector.trim();
    if let Ok(parsed) = vector.parse::<cvss::Cvss>() {
        let is_v2 = matches!(parsed, cvss::Cvss::CvssV20(_));
        let score = parsed.score();
        return score.is_finite().then_some((score, is_v2));
    }
    let number: f64 = vector.parse().ok()?;
    (0.0..=10.0).contains(&number).then_some((number, false))
}

/// An installed version prepared for evaluation against many advisories: parsed once
/// under its ecosystem's scheme, and under SemVer only if a `SEMVER` range asks.
#[derive(Debug)]
pub struct InstalledVersion<'v> {
    raw: &'v str,
    scheme: Scheme,
    parsed: Option<Version<'v>>,
    semver: OnceCell<Option<Version<'v>>>,
    fingerprint: u64,
}

impl<'v> InstalledVersion<'v> {
    pub fn new(scheme: Scheme, version: &'v str) -> InstalledVersion<'v> {
        InstalledVersion {
            raw: version,
            scheme,
            parsed: Version::parse(scheme, version),
            semver: OnceCell::new(),
            fingerprint: equality_fingerprint(scheme, version),
        }
    }

    fn under(&self, scheme: Scheme) -> Option<&Version<'v>> {
        if scheme == self.scheme {
            return self.parsed.as_ref();
        }
        // SEMVER ranges: the Go reading is SemVer plus the prefixes Go data carries.
        self.semver
            .get_or_init(|| Version::parse(Scheme::Go, self.raw))
            .as_ref()
    }
}

/// Whether an affected entry covers a version, and the fix that applies to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    NotAffected,
    /// `fixed` is the `fixed` event that closes the range holding the version (`None`
    /// when the range is open, ends with `last_affected`, or only `versions[]` lists it).
    Affected {
        fixed: Option<&'a str>,
    },
}

impl Affected {
    /// The version order of this entry's ecosystem.
    pub fn scheme(&self) -> Scheme {
        self.package
            .as_ref()
            .map_or(Scheme::Unknown, |p| Scheme::of(&p.ecosystem))
    }

    /// Whether `version` is affected, per the OSV evaluation rules.
    pub fn affects(&self, version: &str) -> bool {
        let installed = InstalledVersion::new(self.scheme(), version);
        matches!(self.evaluate(&installed), Verdict::Affected { .. })
    }

    /// The fixed version for `version`, if it is affected and a fix is known.
    pub fn fixed_version(&self, version: &str) -> Option<String> {
        let installed = InstalledVersion::new(self.scheme(), version);
        match self.evaluate(&installed) {
            Verdict::Affected { fixed } => fixed.map(str::to_owned),
            Verdict::NotAffected => None,
        }
    }

    /// Evaluation: affected when `versions[]` lists the version (as written, or equal
    /// under the scheme: PyPI `3.2` is `3.2.0`) or an `ECOSYSTEM`/`SEMVER` range holds
    /// it. `SEMVER` ranges always use SemVer order, `ECOSYSTEM` ranges the ecosystem's.
    /// `installed` must be prepared with this entry's scheme.
    pub fn evaluate(&self, installed: &InstalledVersion<'_>) -> Verdict<'_> {
        let mut affected = false;
        let mut fixed = None;
        for range in &self.ranges {
            let scheme = match range.kind.as_str() {
                "SEMVER" => Scheme::Go,
                "ECOSYSTEM" => installed.scheme,
                _ => continue,
            };
            if let Verdict::Affected { fixed: f } = evaluate_range(range, scheme, installed) {
                affected = true;
                fixed = fixed.or(f);
            }
        }
        if affected || self.lists(installed) {
            Verdict::Affected { fixed }
        } else {
            Verdict::NotAffected
        }
    }

    /// Whether `versions[]` holds the version: same string, or (after a cheap
    /// fingerprint check) equal under the scheme.
    fn lists(&self, installed: &InstalledVersion<'_>) -> bool {
        if self.versions.iter().any(|v| v == installed.raw) {
            return true;
        }
        let Some(version) = installed.parsed.as_ref() else {
            return false;
        };
        self.versions.iter().any(|listed| {
            equality_fingerprint(installed.scheme, listed) == installed.fingerprint
                && Version::parse(installed.scheme, listed).and_then(|l| version.compare(&l))
                    == Some(Ordering::Equal)
        })
    }
}

/// A range bound: `introduced: "0"` is before every version.
enum Bound<'a> {
    Zero,
    At(Version<'a>),
}

impl Bound<'_> {
    fn cmp(&self, other: &Bound<'_>) -> Option<Ordering> {
        match (self, other) {
            (Bound::Zero, Bound::Zero) => Some(Ordering::Equal),
            (Bound::Zero, Bound::At(_)) => Some(Ordering::Less),
            (Bound::At(_), Bound::Zero) => Some(Ordering::Greater),
            (Bound::At(a), Bound::At(b)) => a.compare(b),
        }
    }
}

/// One range, per the spec's algorithm: with the events sorted by version, the last
/// event at or below the version decides (introduced: affected; fixed or, strictly
/// below, last_affected: not), and a `limit` caps the range. Events are not sorted:
/// finding the greatest deciding event in one pass gives the same answer without
/// allocating (out-of-order events are real: PYSEC-2023-192). At equal versions a
/// closing event wins. A range whose bounds do not parse cannot be placed and is
/// treated as not covering the version.
fn evaluate_range<'a>(
    range: &'a Range,
    scheme: Scheme,
    installed: &InstalledVersion<'_>,
) -> Verdict<'a> {
    let events = || range.events.iter().filter_map(Event::kind_and_value);
    // "Everything from the start, never fixed" needs no order at all.
    if events().next().is_some()
        && events().all(|(kind, value)| kind == EventKind::Introduced && value == "0")
    {
        return Verdict::Affected { fixed: None };
    }
    let Some(version) = installed.under(scheme) else {
        return Verdict::NotAffected;
    };

    // The greatest event that has happened by `version`, and whether it opens the range.
    let mut decisive: Option<(Bound<'a>, bool)> = None;
    // The smallest closing event after `version`, and its `fixed` value if it is one.
    let mut next_close: Option<(Version<'a>, Option<&'a str>)> = None;
    let mut limits = 0;
    let mut below_a_limit = false;

    for (kind, value) in events() {
        let bound = if kind == EventKind::Introduced && value == "0" {
            Bound::Zero
        } else if kind == EventKind::Limit && value == "*" {
            continue;
        } else {
            match Version::parse(scheme, value) {
                Some(v) => Bound::At(v),
                None => return Verdict::NotAffected,
            }
        };
        let order = match &bound {
            Bound::Zero => Ordering::Greater,
            Bound::At(at) => match version.compare(at) {
                Some(order) => order,
                None => return Verdict::NotAffected,
            },
        };
        let happened = match kind {
            EventKind::Introduced | EventKind::Fixed => order != Ordering::Less,
            EventKind::LastAffected => order == Ordering::Greater,
            EventKind::Limit => {
                limits += 1;
                below_a_limit |= order == Ordering::Less;
                continue;
            }
        };
        let opens = kind == EventKind::Introduced;
        if happened {
            let later = match &decisive {
                None => true,
                Some((current, current_opens)) => match bound.cmp(current) {
                    Some(Ordering::Greater) => true,
                    Some(Ordering::Equal) => *current_opens && !opens,
                    _ => false,
                },
            };
            if later {
                decisive = Some((bound, opens));
            }
        } else if !opens {
            let Bound::At(at) = bound else { continue };
            let fixed = (kind == EventKind::Fixed).then_some(value);
            let sooner = match &next_close {
                None => true,
                Some((current, current_fixed)) => match at.compare(current) {
                    Some(Ordering::Less) => true,
                    // At one version, prefer naming the fix.
                    Some(Ordering::Equal) => current_fixed.is_none() && fixed.is_some(),
                    _ => false,
                },
            };
            if sooner {
                next_close = Some((at, fixed));
            }
        }
    }
    if limits > 0 && !below_a_limit {
        return Verdict::NotAffected;
    }
    match decisive {
        Some((_, true)) => Verdict::Affected {
            fixed: next_close.and_then(|(_, fixed)| fixed),
        },
        _ => Verdict::NotAffected,
    }
}

/// Limits for reading an archive: one record's size and the number of entries.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    pub max_entry_bytes: u64,
    pub max_entries: usize,
}

impl Default for ArchiveLimits {
    /// 16 MiB per record (the largest osv.dev records are a few MiB of version lists)
    /// and 2 million entries (every ecosystem together is well under a million).
    fn default() -> Self {
        ArchiveLimits {
            max_entry_bytes: 16 << 20,
            max_entries: 2_000_000,
        }
    }
}

/// Reads an osv.dev `all.zip` (one `<ID>.json` per record at the root) record by
/// record, with [`ArchiveLimits::default`]. Records are parsed but not validated.
pub fn read_archive<R: Read + Seek>(reader: R) -> Result<ArchiveRecords<R>, OsvError> {
    read_archive_with(reader, ArchiveLimits::default())
}

pub fn read_archive_with<R: Read + Seek>(
    reader: R,
    limits: ArchiveLimits,
) -> Result<ArchiveRecords<R>, OsvError> {
    let zip = zip::ZipArchive::new(reader).map_err(|source| OsvError::Zip {
        entry: "archive".into(),
        source,
    })?;
    if zip.len() > limits.max_entries {
        return Err(OsvError::TooManyEntries {
            count: zip.len(),
            limit: limits.max_entries,
        });
    }
    Ok(ArchiveRecords {
        zip,
        next: 0,
        limits,
        buffer: Vec::new(),
    })
}

/// The records of an archive, one at a time; only one record's bytes are held at once.
/// Entries that are not `.json` files are skipped. An error for one entry does not end
/// the iteration.
pub struct ArchiveRecords<R> {
    zip: zip::ZipArchive<R>,
    next: usize,
    limits: ArchiveLimits,
    buffer: Vec<u8>,
}

impl<R: Read + Seek> ArchiveRecords<R> {
    fn read_entry(&mut self, index: usize) -> Option<Result<Advisory, OsvError>> {
        let limit = self.limits.max_entry_bytes;
        let mut entry = match self.zip.by_index(index) {
            Ok(entry) => entry,
            Err(source) => {
                let entry = format!("entry {index}");
                return Some(Err(OsvError::Zip { entry, source }));
            }
        };
        let name = entry.name().to_string();
        if entry.is_dir() || !name.ends_with(".json") {
            return None;
        }
        if entry.size() > limit {
            return Some(Err(OsvError::EntryTooLarge { entry: name, limit }));
        }
        self.buffer.clear();
        // The declared size may lie; never read more than the limit allows.
        if let Err(source) = (&mut entry).take(limit + 1).read_to_end(&mut self.buffer) {
            return Some(Err(OsvError::Io {
                entry: name,
                source,
            }));
        }
        if self.buffer.len() as u64 > limit {
            return Some(Err(OsvError::EntryTooLarge { entry: name, limit }));
        }
        Some(parse_named(&name, &self.buffer))
    }
}

impl<R: Read + Seek> Iterator for ArchiveRecords<R> {
    type Item = Result<Advisory, OsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.zip.len() {
            let index = self.next;
            self.next += 1;
            if let Some(item) = self.read_entry(index) {
                return Some(item);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affected(ecosystem: &str, kind: &str, events: &[(&str, &str)]) -> Affected {
        let events = events
            .iter()
            .map(|(k, v)| {
                let v = Some(v.to_string());
                match *k {
                    "introduced" => Event {
                        introduced: v,
                        ..Event::default()
                    },
                    "fixed" => Event {
                        fixed: v,
                        ..Event::default()
                    },
                    "last_affected" => Event {
                        last_affected: v,
                        ..Event::default()
                    },
                    _ => Event {
                        limit: v,
                        ..Event::default()
                    },
                }
            })
            .collect();
        Affected {
            package: Some(AffectedPackage {
                ecosystem: ecosystem.into(),
                name: "p".into(),
                purl: None,
            }),
            ranges: vec![Range {
                kind: kind.into(),
                events,
                ..Range::default()
            }],
            ..Affected::default()
        }
    }

    #[test]
    fn events_in_any_order() {
        // PYSEC-2023-192's shape: two ranges written newest first.
        let a = affected(
            "PyPI",
            "ECOSYSTEM",
            &[
                ("introduced", "2.0.0"),
                ("fixed", "2.0.6"),
                ("introduced", "0"),
                ("fixed", "1.26.17"),
            ],
        );
        for (v, hit, fix) in [
            ("1.24.1", true, Some("1.26.17")),
            ("1.26.17", false, None),
            ("1.26.18", false, None),
            ("2.0.0", true, Some("2.0.6")),
            ("2.0.5", true, Some("2.0.6")),
            ("2.0.6", false, None),
        ] {
            assert_eq!(a.affects(v), hit, "{v}");
            assert_eq!(a.fixed_version(v).as_deref(), fix, "{v}");
        }
    }

    #[test]
    fn last_affected_and_limit() {
        let a = affected(
            "crates.io",
            "SEMVER",
            &[("introduced", "1.0.0"), ("last_affected", "1.2.0")],
        );
        assert!(!a.affects("0.9.0"));
        assert!(a.affects("1.2.0"));
        assert_eq!(a.fixed_version("1.2.0"), None);
        assert!(!a.affects("1.2.1"));

        let limited = affected("Go", "SEMVER", &[("introduced", "0"), ("limit", "1.5.0")]);
        assert!(limited.affects("v1.4.9"));
        assert!(!limited.affects("v1.5.0"));
    }

    #[test]
    fn semver_ranges_use_semver_order_in_any_ecosystem() {
        let a = affected(
            "PyPI",
            "SEMVER",
            &[("introduced", "0"), ("fixed", "1.10.0")],
        );
        assert!(a.affects("1.9.0"));
        assert!(!a.affects("1.10.0"));
    }

    #[test]
    fn open_ranges_need_no_order_and_git_ranges_are_ignored() {
        let open = affected("Hackage", "ECOSYSTEM", &[("introduced", "0")]);
        assert!(open.affects("anything"));
        let git = affected("PyPI", "GIT", &[("introduced", "0")]);
        assert!(!git.affects("1.0"));
    }

    #[test]
    fn unparsable_bounds_and_versions_never_match_a_range() {
        let a = affected(
            "PyPI",
            "ECOSYSTEM",
            &[("introduced", "0"), ("fixed", "not a version")],
        );
        assert!(!a.affects("1.0"));
        let b = affected(
            "PyPI",
            "ECOSYSTEM",
            &[("introduced", "0"), ("fixed", "2.0")],
        );
        assert!(!b.affects("not a version"));
    }

    #[test]
    fn a_bad_vector_is_skipped() {
        let advisory = Advisory {
            id: "TEST-1".into(),
            severity: vec![
                SeverityEntry {
                    kind: "CVSS_V3".into(),
                    score: "CVSS:3.1/AV:X/garbage".into(),
                },
                SeverityEntry {
                    kind: "CVSS_V2".into(),
                    score: "AV:N/AC:L/Au:N/C:P/I:P/A:P".into(),
                },
            ],
            ..Advisory::default()
        };
        assert_eq!(advisory.severity(), (crate::Severity::High, Some(7.5)));
    }

    #[test]
    fn validation_names_the_problem() {
        let record = br#"{"id":"TEST-2","affected":[{"package":{"ecosystem":"PyPI","name":""}}]}"#;
        let err = parse(record).unwrap().validate().unwrap_err().to_string();
        assert_eq!(err, "TEST-2: affected[0].package has no name");
        let err = parse(br#"{"id":"TEST-3","affected":3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("TEST-3: not an OSV record"), "{err}");
    }
}
