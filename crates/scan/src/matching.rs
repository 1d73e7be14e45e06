//! Matching distinct packages against a set of advisories, and the difference between
//! two match results (design: docs/design/scanning-research.md §7.3).
//!
//! The registry matches each *distinct* package version once, not each image's
//! inventory: a re-match after a database update evaluates ~62,000 packages and writes
//! only the pairs that changed ([`diff`]).
//!
//! OS packages match only their distribution's own advisories, by source package name
//! and version ([`crate::Package::match_name`], [`crate::Package::match_version`]):
//! that is what makes backported fixes count, and why a dpkg package is never matched
//! against upstream ecosystems.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use crate::osv::{Advisory, Affected, InstalledVersion, Verdict};
use crate::versions::Scheme;
use crate::{Package, Severity};

/// One advisory that affects a package.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub advisory_id: String,
    /// The version that fixes it, when the advisory names one.
    pub fixed: Option<String>,
    pub severity: Severity,
    pub score: Option<f64>,
    pub aliases: Vec<String>,
}

/// What the index keeps of an advisory besides its affected entries.
#[derive(Debug)]
struct AdvisorySummary {
    id: String,
    aliases: Vec<String>,
    severity: Severity,
    score: Option<f64>,
}

/// Affected entries of one ecosystem (exact string, release included), by normalised
/// package name.
#[derive(Debug, Default)]
struct EcosystemEntries {
    by_name: HashMap<String, Vec<(usize, Affected)>>,
}

/// Advisories keyed by (ecosystem, normalised package name), ready for matching.
/// Withdrawn advisories are left out.
#[derive(Debug, Default)]
pub struct AdvisoryIndex {
    advisories: Vec<AdvisorySummary>,
    by_ecosystem: HashMap<String, EcosystemEntries>,
}

impl AdvisoryIndex {
    pub fn new(advisories: impl IntoIterator<Item = Advisory>) -> AdvisoryIndex {
        let mut index = AdvisoryIndex::default();
        for advisory in advisories {
            index.insert(advisory);
        }
        index
    }

    /// Adds one advisory (ignored if withdrawn). Affected entries without a package
    /// (commit ranges only) cannot match a package and are dropped.
    pub fn insert(&mut self, advisory: Advisory) {
        if advisory.is_withdrawn() {
            return;
        }
        let (severity, score) = advisory.severity();
        let number = self.advisories.len();
        self.advisories.push(AdvisorySummary {
            id: advisory.id,
            aliases: advisory.aliases,
            severity,
            score,
        });
        for affected in advisory.affected {
            let Some(package) = &affected.package else {
                continue;
            };
            let name = normalize_name(&package.ecosystem, &package.name).into_owned();
            self.by_ecosystem
                .entry(package.ecosystem.clone())
                .or_default()
                .by_name
                .entry(name)
                .or_default()
                .push((number, affected));
        }
    }

    /// The number of (non-withdrawn) advisories.
    pub fn len(&self) -> usize {
        self.advisories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.advisories.is_empty()
    }

    /// The advisories that affect `package`, each once, in index order.
    ///
    /// Ecosystems compare exactly (`Debian:12` matches `Debian:12` records only, so a
    /// v3.19 Alpine image never matches a v3.12 entry), with two widenings: a record for
    /// the bare distribution (`Debian`) applies to all its releases, as the OSV schema
    /// says; and an Ubuntu package with an `+esm` version also matches the `Ubuntu:Pro:`
    /// records of its release, where Canonical publishes ESM fixes.
    pub fn matches(&self, package: &Package) -> Vec<Match> {
        let mut found: Vec<Match> = Vec::new();
        let mut matched: Vec<usize> = Vec::new();
        let installed =
            InstalledVersion::new(Scheme::of(&package.ecosystem), &package.match_version);
        let name = normalize_name(&package.ecosystem, &package.match_name);
        let ecosystems = related_ecosystems(&package.ecosystem, &package.match_version);
        for ecosystem in ecosystems.iter().flatten() {
            let Some(entries) = self
                .by_ecosystem
                .get(ecosystem.as_ref())
                .and_then(|e| e.by_name.get(name.as_ref()))
            else {
                continue;
            };
            for (number, affected) in entries {
                let Verdict::Affected { fixed } = affected.evaluate(&installed) else {
                    continue;
                };
                // One advisory can list a package in several entries; report it once,
                // with the first fix named.
                if let Some(at) = matched.iter().position(|n| n == number) {
                    if found[at].fixed.is_none() {
                        found[at].fixed = fixed.map(str::to_owned);
                    }
                    continue;
                }
                let summary = &self.advisories[*number];
                matched.push(*number);
                found.push(Match {
                    advisory_id: summary.id.clone(),
                    fixed: fixed.map(str::to_owned),
                    severity: summary.severity,
                    score: summary.score,
                    aliases: summary.aliases.clone(),
                });
            }
        }
        found
    }

    /// Matches many distinct packages (by their database id) and returns the
    /// (package id, advisory id) pairs, ready for [`diff`] against the stored ones.
    pub fn match_all<'p>(
        &self,
        packages: impl IntoIterator<Item = (i64, &'p Package)>,
    ) -> BTreeSet<(i64, String)> {
        packages
            .into_iter()
            .flat_map(|(id, package)| {
                self.matches(package)
                    .into_iter()
                    .map(move |m| (id, m.advisory_id))
            })
            .collect()
    }
}

/// The ecosystems whose records apply to a package of `ecosystem` (at most three, no
/// allocation unless the Ubuntu ESM case applies).
fn related_ecosystems<'a>(ecosystem: &'a str, version: &str) -> [Option<Cow<'a, str>>; 3] {
    let mut out = [Some(Cow::Borrowed(ecosystem)), None, None];
    if let Some((base, release)) = ecosystem.split_once(':') {
        if matches!(Scheme::of(base), Scheme::Dpkg | Scheme::Apk | Scheme::Rpm) {
            out[1] = Some(Cow::Borrowed(base));
        }
        if base == "Ubuntu" && !release.starts_with("Pro:") && version.contains("+esm") {
            out[2] = Some(Cow::Owned(format!("Ubuntu:Pro:{release}")));
        }
    }
    out
}

/// The name advisories use for a package: PEP 503 for PyPI (lower case, runs of `-`,
/// `_`, `.` as one `-`), as given elsewhere.
pub fn normalize_name<'a>(ecosystem: &str, name: &'a str) -> Cow<'a, str> {
    if ecosystem != "PyPI" {
        return Cow::Borrowed(name);
    }
    let is_separator = |c: char| matches!(c, '-' | '_' | '.');
    let already = !name
        .chars()
        .any(|c| c.is_ascii_uppercase() || c == '_' || c == '.')
        && !name.contains("--");
    if already {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if is_separator(c) {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator = false;
        }
    }
    Cow::Owned(out)
}

/// What changed between two match results: (added, removed), each in order. The store
/// inserts and deletes only these rows.
pub fn diff<T: Ord + Clone>(old: &BTreeSet<T>, new: &BTreeSet<T>) -> (Vec<T>, Vec<T>) {
    let added = new.difference(old).cloned().collect();
    let removed = old.difference(new).cloned().collect();
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osv::{AffectedPackage, Event, Range};

    fn package(ecosystem: &str, name: &str, version: &str) -> Package {
        Package {
            ecosystem: ecosystem.into(),
            name: name.into(),
            version: version.into(),
            match_name: name.into(),
            match_version: version.into(),
            purl: String::new(),
            location: String::new(),
        }
    }

    fn advisory(id: &str, ecosystem: &str, name: &str, fixed: &str) -> Advisory {
        Advisory {
            id: id.into(),
            affected: vec![Affected {
                package: Some(AffectedPackage {
                    ecosystem: ecosystem.into(),
                    name: name.into(),
                    purl: None,
                }),
                ranges: vec![Range {
                    kind: "ECOSYSTEM".into(),
                    events: vec![
                        Event {
                            introduced: Some("0".into()),
                            ..Event::default()
                        },
                        Event {
                            fixed: Some(fixed.into()),
                            ..Event::default()
                        },
                    ],
                    ..Range::default()
                }],
                ..Affected::default()
            }],
            ..Advisory::default()
        }
    }

    #[test]
    fn pep503_names() {
        assert_eq!(normalize_name("PyPI", "PyYAML"), "pyyaml");
        assert_eq!(normalize_name("PyPI", "zope.interface"), "zope-interface");
        assert_eq!(normalize_name("PyPI", "a__b-.c"), "a-b-c");
        assert_eq!(normalize_name("PyPI", "a--b"), "a-b");
        assert!(matches!(
            normalize_name("PyPI", "requests"),
            Cow::Borrowed(_)
        ));
        assert_eq!(normalize_name("npm", "@Scope/Pkg"), "@Scope/Pkg");
    }

    #[test]
    fn releases_and_withdrawn_records() {
        let mut withdrawn = advisory("TEST-W", "Debian:12", "zlib", "2.0");
        withdrawn.withdrawn = Some("2024-01-01T00:00:00Z".into());
        let index = AdvisoryIndex::new([
            advisory("TEST-12", "Debian:12", "zlib", "1:1.2.13.dfsg-2"),
            advisory("TEST-11", "Debian:11", "zlib", "1:1.2.13.dfsg-2"),
            advisory("TEST-ANY", "Debian", "zlib", "1:1.2.13.dfsg-1"),
            withdrawn,
        ]);
        assert_eq!(index.len(), 3);
        let ids = |p: &Package| -> Vec<String> {
            index
                .matches(p)
                .into_iter()
                .map(|m| m.advisory_id)
                .collect()
        };
        assert_eq!(
            ids(&package("Debian:12", "zlib", "1:1.2.13.dfsg-1")),
            ["TEST-12"]
        );
        assert_eq!(
            ids(&package("Debian:12", "zlib", "1:1.2.11.dfsg-2")),
            ["TEST-12", "TEST-ANY"]
        );
        assert!(ids(&package("Debian:12", "zlib", "1:1.2.13.dfsg-2")).is_empty());
        let m = &index.matches(&package("Debian:12", "zlib", "1:1.2.13.dfsg-1"))[0];
        assert_eq!(m.fixed.as_deref(), Some("1:1.2.13.dfsg-2"));
    }

    #[test]
    fn ubuntu_esm_versions_also_see_pro_records() {
        let index = AdvisoryIndex::new([advisory(
            "TEST-ESM",
            "Ubuntu:Pro:16.04:LTS",
            "openssl",
            "1.0.2g-1ubuntu4.20+esm12",
        )]);
        let esm = package("Ubuntu:16.04:LTS", "openssl", "1.0.2g-1ubuntu4.20+esm11");
        assert_eq!(index.matches(&esm).len(), 1);
        let plain = package("Ubuntu:16.04:LTS", "openssl", "1.0.2g-1ubuntu4.20");
        assert!(index.matches(&plain).is_empty());
    }

    #[test]
    fn diff_reports_only_changes() {
        let old: BTreeSet<(i64, String)> = [(1, "A".into()), (2, "B".into())].into();
        let new: BTreeSet<(i64, String)> = [(2, "B".into()), (3, "C".into())].into();
        let (added, removed) = diff(&old, &new);
        assert_eq!(added, [(3, "C".to_string())]);
        assert_eq!(removed, [(1, "A".to_string())]);
    }

    /// The registry's scale (design §7.4): 100,000 advisories, 60,000 distinct packages.
    /// Prints the time; asserts only that it finishes and finds what it should.
    #[test]
    fn matches_at_registry_scale() {
        const ECOSYSTEMS: [(&str, usize); 6] = [
            ("Debian:12", 30_000),
            ("PyPI", 30_000),
            ("npm", 20_000),
            ("Alpine:v3.19", 10_000),
            ("crates.io", 5_000),
            ("Go", 5_000),
        ];
        let version_of = |ecosystem: &str, minor: usize| match ecosystem {
            "Debian:12" => format!("1.{minor}.0-1"),
            "Alpine:v3.19" => format!("1.{minor}.0-r0"),
            "Go" => format!("v1.{minor}.0"),
            _ => format!("1.{minor}.0"),
        };
        let started = std::time::Instant::now();
        let mut advisories = Vec::new();
        for (ecosystem, count) in ECOSYSTEMS {
            for i in 0..count {
                // About three advisories per package name, fixed at different minors.
                let name = format!("pkg-{}", i / 3);
                let fixed = version_of(ecosystem, i % 3 * 4 + 2);
                let mut a = advisory(&format!("TEST-{ecosystem}-{i}"), ecosystem, &name, &fixed);
                if ecosystem == "PyPI" {
                    // Older releases and `1.0`, which PEP 440 equates with `1.0.0`.
                    let listed = (0..20).map(|m| format!("0.{m}")).chain(["1.0".into()]);
                    a.affected[0].versions = listed.collect();
                }
                if ecosystem == "Go" || ecosystem == "crates.io" {
                    a.affected[0].ranges[0].kind = "SEMVER".into();
                    a.affected[0].ranges[0].events[1].fixed =
                        Some(fixed.trim_start_matches('v').to_string());
                }
                advisories.push(a);
            }
        }
        let index = AdvisoryIndex::new(advisories);
        let built = started.elapsed();

        let mut packages = Vec::new();
        for (ecosystem, count) in ECOSYSTEMS {
            for i in 0..count * 60_000 / 100_000 {
                let name = format!("pkg-{}", i / 2);
                packages.push(package(ecosystem, &name, &version_of(ecosystem, i % 2 * 7)));
            }
        }
        let started = std::time::Instant::now();
        let pairs = index.match_all(packages.iter().enumerate().map(|(i, p)| (i as i64, p)));
        let matched = started.elapsed();
        println!(
            "index of {} advisories built in {built:?}; {} packages matched in {matched:?}: {} pairs",
            index.len(),
            packages.len(),
            pairs.len()
        );
        assert_eq!(index.len(), 100_000);
        assert_eq!(packages.len(), 60_000);
        // Version 1.0 is below every fix (three matches); 1.7 only below the fix at 1.10.
        assert_eq!(pairs.len(), 30_000 * 3 + 30_000);
    }
}
