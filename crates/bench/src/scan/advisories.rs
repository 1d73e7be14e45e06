//! Synthetic OSV advisories (every id `TEST-…`) in osv.dev-style `all.zip` archives, one
//! per ecosystem, spread as in docs/design/scanning-research.md §7.4: Debian:12 30%, PyPI
//! 30%, npm 20%, Alpine:v3.19 10%, crates.io 5%, Go 5%. Each record has 1–3 affected
//! entries with ECOSYSTEM or SEMVER ranges (some open-ended, some `last_affected`), PyPI
//! ones also a `versions` list; about half carry a CVSS v3.1 vector, a fifth only a
//! severity word; 1% are withdrawn. Package names and versions come from the same pools
//! as the re-match inventories ([`name`], [`version`]), so matches are dense.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use wharf_scan::matching::AdvisoryIndex;
use wharf_scan::osv::{self, Advisory, Affected, AffectedPackage, Event, Range, SeverityEntry};
use wharf_scan::Severity;

use super::content::Rng;

/// (ecosystem, share of the records, id prefix, range type).
pub const ECOSYSTEMS: [(&str, f64, &str, &str); 6] = [
    ("Debian:12", 0.30, "DEB", "ECOSYSTEM"),
    ("PyPI", 0.30, "PYSEC", "ECOSYSTEM"),
    ("npm", 0.20, "GHSA-NPM", "SEMVER"),
    ("Alpine:v3.19", 0.10, "ALPINE", "ECOSYSTEM"),
    ("crates.io", 0.05, "RUSTSEC", "SEMVER"),
    ("Go", 0.05, "GO", "SEMVER"),
];

/// Versions per package name in the pools: version `v` orders before `v + 1`.
pub const VERSIONS: u64 = 10;

/// The `i`th package name of an ecosystem's pool.
pub fn name(ecosystem: &str, i: u64) -> String {
    match ecosystem {
        "Debian:12" => format!("libtest{i}"),
        "PyPI" => format!("test-py-{i}"),
        "npm" => format!("test-js-{i}"),
        "Alpine:v3.19" => format!("apk-test{i}"),
        "crates.io" => format!("test-crate-{i}"),
        _ => format!("example.com/test/mod{i}"),
    }
}

/// Version `v` of a pool package, in the ecosystem's own syntax (Go's with its `v`).
pub fn version(ecosystem: &str, v: u64) -> String {
    match ecosystem {
        "Debian:12" => format!("{}.{}.{}-{}", 1 + v / 4, v % 4, v % 3, 1 + v % 2),
        "Alpine:v3.19" => format!("{}.{}.{}-r{}", 1 + v / 4, v % 4, v % 3, v % 2),
        "Go" => format!("v1.{v}.0"),
        _ => format!("{}.{}.{}", 1 + v / 4, v % 4, v % 3),
    }
}

/// A version as OSV ranges write it (Go's without the `v`).
fn range_version(ecosystem: &str, v: u64) -> String {
    let s = version(ecosystem, v);
    s.strip_prefix('v').map(str::to_string).unwrap_or(s)
}

/// Sizes of the pools: names per ecosystem, for `records` advisories over `distinct`
/// packages in the re-match (half of them OS packages, a quarter PyPI, a quarter npm).
#[derive(Debug, Clone, Copy)]
pub struct Pools {
    pub debian: u64,
    pub pypi: u64,
    pub npm: u64,
}

impl Pools {
    pub fn for_distinct(distinct: u64) -> Pools {
        Pools {
            debian: (distinct / 2 / VERSIONS).max(1),
            pypi: (distinct / 4 / VERSIONS).max(1),
            npm: (distinct / 4 / VERSIONS).max(1),
        }
    }

    fn names(&self, ecosystem: &str) -> u64 {
        match ecosystem {
            "Debian:12" => self.debian,
            "PyPI" => self.pypi,
            "npm" => self.npm,
            // Ecosystems no inventory uses: a pool of their own size.
            _ => 2000,
        }
    }
}

const CVSS_AV: [&str; 4] = ["N", "A", "L", "P"];
const CVSS_LOW_HIGH: [&str; 2] = ["L", "H"];
const CVSS_PR: [&str; 3] = ["N", "L", "H"];
const CVSS_CIA: [&str; 3] = ["N", "L", "H"];

fn cvss_vector(rng: &mut Rng) -> String {
    let mut pick = |xs: &[&'static str]| xs[rng.below(xs.len() as u64) as usize];
    format!(
        "CVSS:3.1/AV:{}/AC:{}/PR:{}/UI:{}/S:{}/C:{}/I:{}/A:{}",
        pick(&CVSS_AV),
        pick(&CVSS_LOW_HIGH),
        pick(&CVSS_PR),
        pick(&["N", "R"]),
        pick(&["U", "C"]),
        pick(&CVSS_CIA),
        pick(&CVSS_CIA),
        pick(&CVSS_CIA),
    )
}

/// Record `i` of ecosystem `e` (an index into [`ECOSYSTEMS`]). `revision` 1 is the
/// updated database of the re-match: records chosen by [`changed`] get other fixes (or
/// are withdrawn); the rest are the same as in revision 0.
pub fn advisory(e: usize, i: u64, pools: &Pools, revision: u32) -> Advisory {
    let (ecosystem, _, prefix, range_type) = ECOSYSTEMS[e];
    let mut rng = Rng::new((e as u64) << 40 | i);
    let id = format!("TEST-{prefix}-{i:06}");
    let bumped = revision > 0 && changed(e, i);
    let mut affected = Vec::new();
    for _ in 0..1 + rng.below(3) {
        // 70% name a package of the pool; the rest packages no inventory has.
        let n = pools.names(ecosystem);
        let k = if rng.chance(70) {
            rng.below(n)
        } else {
            n + rng.below(n)
        };
        let lo = rng.below(VERSIONS - 2);
        let mut hi = lo + 1 + rng.below(VERSIONS - lo - 1);
        if bumped {
            hi = (hi + 2).min(VERSIONS - 1).max(lo + 1);
        }
        let introduced = if lo == 0 && rng.chance(50) {
            "0".to_string()
        } else {
            range_version(ecosystem, lo)
        };
        let mut events = vec![Event {
            introduced: Some(introduced),
            ..Event::default()
        }];
        match rng.below(10) {
            // Not fixed yet.
            0 => {}
            1 => events.push(Event {
                last_affected: Some(range_version(ecosystem, hi - 1)),
                ..Event::default()
            }),
            _ => events.push(Event {
                fixed: Some(range_version(ecosystem, hi)),
                ..Event::default()
            }),
        }
        let versions = if ecosystem == "PyPI" {
            (lo..hi).map(|v| version(ecosystem, v)).collect()
        } else {
            Vec::new()
        };
        affected.push(Affected {
            package: Some(AffectedPackage {
                ecosystem: ecosystem.to_string(),
                name: name(ecosystem, k),
                purl: None,
            }),
            ranges: vec![Range {
                kind: range_type.to_string(),
                events,
                ..Range::default()
            }],
            versions,
            ..Affected::default()
        });
    }
    let (mut severity, mut database_specific) = (Vec::new(), None);
    match rng.below(10) {
        0..=4 => severity.push(SeverityEntry {
            kind: "CVSS_V3".into(),
            score: cvss_vector(&mut rng),
        }),
        5 | 6 => {
            let word = ["LOW", "MODERATE", "HIGH", "CRITICAL"][rng.below(4) as usize];
            database_specific = Some(json!({ "severity": word }));
        }
        _ => {}
    }
    let withdrawn = (i % 100 == 37 || (bumped && i.is_multiple_of(7)))
        .then(|| "2025-02-01T00:00:00Z".to_string());
    Advisory {
        id,
        schema_version: Some("1.6.0".into()),
        modified: Some(format!(
            "2025-01-{:02}T00:00:00Z",
            1 + i % 28 + u64::from(bumped)
        )),
        published: Some("2024-06-01T00:00:00Z".into()),
        withdrawn,
        aliases: vec![format!("CVE-2099-{:05}", (e as u64) * 100_000 + i)],
        summary: Some(format!(
            "synthetic advisory {i} for {ecosystem} (wharf-bench)"
        )),
        details: Some(format!(
            "A synthetic record generated by wharf-bench scan. It names {} package(s) of \
             {ecosystem} and is not a real vulnerability. Lorem ipsum dolor sit amet, \
             consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
            affected.len()
        )),
        severity,
        affected,
        references: vec![osv::Reference {
            kind: Some("ADVISORY".into()),
            url: Some(format!(
                "https://example.org/advisories/TEST-{prefix}-{i:06}"
            )),
        }],
        database_specific,
        ..Advisory::default()
    }
}

/// Whether the re-match's updated database changes record `i` of ecosystem `e`: 1%.
pub fn changed(e: usize, i: u64) -> bool {
    (i.wrapping_mul(2_654_435_761) ^ e as u64) % 100 == 3
}

/// Records per ecosystem for `total` records.
pub fn counts(total: u64) -> Vec<u64> {
    ECOSYSTEMS
        .iter()
        .map(|(_, share, _, _)| (total as f64 * share).round() as u64)
        .collect()
}

/// Writes one `all.zip` per ecosystem under `dir`, the records at `revision` (1% of
/// them differ between revisions 0 and 1); returns (paths, total zip bytes).
pub fn write_archives(
    dir: &Path,
    total: u64,
    pools: &Pools,
    revision: u32,
) -> Result<(Vec<PathBuf>, u64)> {
    let counts = counts(total);
    let mut paths = Vec::new();
    let mut bytes = 0;
    for (e, n) in counts.iter().enumerate() {
        let sub = dir.join(ECOSYSTEMS[e].0.replace(':', "-"));
        std::fs::create_dir_all(&sub)?;
        let path = sub.join("all.zip");
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for i in 0..*n {
            let a = advisory(e, i, pools, revision);
            zip.start_file(format!("{}.json", a.id), options)?;
            zip.write_all(&serde_json::to_vec(&a)?)?;
        }
        zip.finish()?.flush()?;
        bytes += std::fs::metadata(&path)?.len();
        paths.push(path);
    }
    Ok((paths, bytes))
}

/// What the timed import did.
#[derive(Debug, Clone, Default)]
pub struct Import {
    pub records: u64,
    pub invalid: u64,
    pub withdrawn: u64,
    pub cvss_scored: u64,
    pub indexed: usize,
    /// Seconds in each step: reading and parsing (zip inflate + JSON), validate,
    /// severity, inserting into the index.
    pub parse_secs: f64,
    pub validate_secs: f64,
    pub severity_secs: f64,
    pub index_secs: f64,
    pub total_secs: f64,
    pub by_severity: [u64; 5],
}

/// The import, as far as it exists: every archive read record by record
/// ([`osv::read_archive`]), each record validated and scored, and inserted into an
/// [`AdvisoryIndex`] (what matching loads). The metadata-store side (staging rows,
/// swapping them in) does not exist yet and is not timed.
pub fn import(paths: &[PathBuf]) -> Result<(Import, AdvisoryIndex)> {
    let mut r = Import::default();
    let mut index = AdvisoryIndex::default();
    let t0 = Instant::now();
    for path in paths {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut records = osv::read_archive(BufReader::new(file))?;
        loop {
            let t = Instant::now();
            let Some(next) = records.next() else {
                r.parse_secs += t.elapsed().as_secs_f64();
                break;
            };
            let t1 = Instant::now();
            r.parse_secs += (t1 - t).as_secs_f64();
            let advisory = next?;
            r.records += 1;
            let valid = advisory.validate().is_ok();
            let t2 = Instant::now();
            r.validate_secs += (t2 - t1).as_secs_f64();
            if !valid {
                r.invalid += 1;
                continue;
            }
            let (severity, score) = advisory.severity();
            let t3 = Instant::now();
            r.severity_secs += (t3 - t2).as_secs_f64();
            r.cvss_scored += u64::from(score.is_some());
            r.by_severity[Severity::ALL
                .iter()
                .position(|s| *s == severity)
                .unwrap_or(4)] += 1;
            r.withdrawn += u64::from(advisory.is_withdrawn());
            index.insert(advisory);
            r.index_secs += t3.elapsed().as_secs_f64();
        }
    }
    r.total_secs = t0.elapsed().as_secs_f64();
    r.indexed = index.len();
    Ok((r, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_valid_and_the_archive_reads_back() {
        let pools = Pools::for_distinct(600);
        for (e, _) in ECOSYSTEMS.iter().enumerate() {
            for i in 0..200 {
                let a = advisory(e, i, &pools, 0);
                a.validate().unwrap();
                assert_eq!(a, advisory(e, i, &pools, 0));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (paths, bytes) = write_archives(dir.path(), 600, &pools, 0).unwrap();
        assert_eq!(paths.len(), 6);
        assert!(bytes > 0);
        let (r, index) = import(&paths).unwrap();
        assert_eq!(r.records, counts(600).iter().sum::<u64>());
        assert_eq!(r.invalid, 0);
        assert_eq!(index.len() as u64, r.records - r.withdrawn);
        assert!(r.cvss_scored > 0);
    }
}
