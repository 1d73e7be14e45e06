//! The re-match after an advisory database update (docs/design/scanning-research.md
//! §7.3): inventories are drawn from shared pools of package versions, as a real
//! registry's images repeat their base images, so the distinct packages are far fewer
//! than the inventory rows; the advisories are matched against the distinct packages
//! once with the old database and once with a database in which 1% of the records
//! changed, and the two results are diffed.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use wharf_scan::matching::{diff, AdvisoryIndex};
use wharf_scan::Package;

use super::advisories::{self, Pools, ECOSYSTEMS, VERSIONS};
use super::content::Rng;

/// What the re-match did and how long each step took.
#[derive(Debug, Clone, Default)]
pub struct Rematch {
    pub inventories: u64,
    pub inventory_rows: u64,
    pub distinct: usize,
    /// Untimed in the target: building the inventories and finding the distinct packages
    /// (the store's `packages` table does that in wharf).
    pub dedup_secs: f64,
    /// Matching with the old database (the state before the update).
    pub first_index_secs: f64,
    pub first_match_secs: f64,
    pub first_pairs: usize,
    /// The re-match: load the updated database into an index, match, diff.
    pub index_secs: f64,
    pub match_secs: f64,
    pub diff_secs: f64,
    pub added: usize,
    pub removed: usize,
    pub pairs: usize,
    /// In-memory stand-in for the store's "newly affected images" query.
    pub affected_secs: f64,
    pub newly_affected: usize,
    pub changed_records: u64,
}

impl Rematch {
    /// What the target is judged on: the re-match proper (index, match, diff).
    pub fn total_secs(&self) -> f64 {
        self.index_secs + self.match_secs + self.diff_secs
    }
}

fn package(ecosystem: &str, name: String, version: String) -> Package {
    Package {
        ecosystem: ecosystem.to_string(),
        purl: String::new(),
        location: String::new(),
        match_name: name.clone(),
        match_version: version.clone(),
        name,
        version,
    }
}

/// The records of `total` advisories at `revision`, generated in memory.
fn records(
    total: u64,
    pools: &Pools,
    revision: u32,
) -> impl Iterator<Item = wharf_scan::osv::Advisory> + '_ {
    advisories::counts(total)
        .into_iter()
        .enumerate()
        .flat_map(move |(e, n)| (0..n).map(move |i| advisories::advisory(e, i, pools, revision)))
}

/// Synthetic inventories: `inventories` images of `os` Debian packages and `lang` PyPI
/// and npm packages each, drawn from shared pools of about `distinct` package versions.
pub struct Inventories {
    /// The distinct packages.
    pub packages: Vec<Package>,
    /// Each image's packages, as indexes into `packages`.
    pub members: Vec<Vec<u32>>,
}

impl Inventories {
    pub fn generate(inventories: u64, os: u64, lang: u64, pools: &Pools) -> Inventories {
        // A package's key in the pools: (ecosystem index, name index, version).
        let mut ids: HashMap<(u8, u64, u64), u32> = HashMap::new();
        let mut packages: Vec<Package> = Vec::new();
        let mut members: Vec<Vec<u32>> = Vec::with_capacity(inventories as usize);
        let mut rng = Rng::new(0x12E_3A7C);
        for _ in 0..inventories {
            let mut rows = Vec::with_capacity((os + lang) as usize);
            // Images share a base: each inventory takes its OS packages around one of a
            // few hundred "base images", its language packages at random.
            let base = rng.below(300) * (pools.debian / 300).max(1);
            for k in 0..os + lang {
                let (e, n) = if k < os {
                    (
                        0u8,
                        (base + rng.below(pools.debian.min(3 * os).max(1))) % pools.debian,
                    )
                } else if k % 2 == 0 {
                    (1, rng.below(pools.pypi))
                } else {
                    (2, rng.below(pools.npm))
                };
                let v = rng.below(VERSIONS);
                let next = packages.len() as u32;
                let id = *ids.entry((e, n, v)).or_insert_with(|| {
                    let eco = ECOSYSTEMS[e as usize].0;
                    packages.push(package(
                        eco,
                        advisories::name(eco, n),
                        advisories::version(eco, v),
                    ));
                    next
                });
                rows.push(id);
            }
            rows.sort_unstable();
            rows.dedup();
            members.push(rows);
        }
        Inventories { packages, members }
    }

    pub fn rows(&self) -> u64 {
        self.members.iter().map(|m| m.len() as u64).sum()
    }
}

/// Runs the re-match: `inventories` inventories of `os` Debian packages and `lang` PyPI
/// and npm packages each, over pools of about `distinct` package versions, against
/// `total` advisories of which 1% change.
pub fn run(inventories: u64, os: u64, lang: u64, distinct: u64, total: u64) -> Rematch {
    let pools = Pools::for_distinct(distinct);
    let mut r = Rematch {
        inventories,
        ..Rematch::default()
    };

    let t = Instant::now();
    let Inventories { packages, members } = Inventories::generate(inventories, os, lang, &pools);
    r.inventory_rows = members.iter().map(|m| m.len() as u64).sum();
    r.distinct = packages.len();
    r.dedup_secs = t.elapsed().as_secs_f64();
    let numbered = || packages.iter().enumerate().map(|(i, p)| (i as i64, p));

    let t = Instant::now();
    let old_index = AdvisoryIndex::new(records(total, &pools, 0));
    r.first_index_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let old: BTreeSet<(i64, String)> = old_index.match_all(numbered());
    r.first_match_secs = t.elapsed().as_secs_f64();
    r.first_pairs = old.len();
    drop(old_index);

    r.changed_records = advisories::counts(total)
        .iter()
        .enumerate()
        .map(|(e, n)| (0..*n).filter(|i| advisories::changed(e, *i)).count() as u64)
        .sum();
    // The updated database, generated before timing starts, as a download would be.
    let updated: Vec<wharf_scan::osv::Advisory> = records(total, &pools, 1).collect();
    let t = Instant::now();
    let index = AdvisoryIndex::new(updated);
    r.index_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let new = index.match_all(numbered());
    r.match_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (added, removed) = diff(&old, &new);
    r.diff_secs = t.elapsed().as_secs_f64();
    r.added = added.len();
    r.removed = removed.len();
    r.pairs = new.len();

    let t = Instant::now();
    let mut hit = vec![false; packages.len()];
    for (id, _) in &added {
        hit[*id as usize] = true;
    }
    r.newly_affected = members
        .iter()
        .filter(|rows| rows.iter().any(|p| hit[*p as usize]))
        .count();
    r.affected_secs = t.elapsed().as_secs_f64();
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_rematch_finds_matches_and_changes() {
        let r = super::run(200, 50, 25, 3000, 3000);
        assert!(r.distinct > 1000, "{r:?}");
        assert!(r.first_pairs > 0, "{r:?}");
        assert!(r.added + r.removed > 0, "{r:?}");
        assert!(r.changed_records > 0);
    }
}
