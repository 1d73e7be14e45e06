//! The database update as wharf runs it, through the metadata store: the import job's
//! code (`wharf_jobs::vulndb::import_archives`: read, validate, score, stage, swap in
//! one transaction) and the re-match job's (`wharf_jobs::vulndb::rematch`: every
//! distinct package matched again page by page, only the differences written, then every
//! image's summary refreshed), on SQLite and, with `--postgres-url`, on PostgreSQL.
//!
//! The steps, each timed:
//! 1. import revision 0 of the synthetic database into an empty store;
//! 2. store the inventories and match each one's packages new to the registry, as the
//!    scan job does (`store_inventory`, `match_new_packages`): the state before the
//!    update;
//! 3. import revision 1 (1% of the records changed) and re-match: the figure the target
//!    is about.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use async_trait::async_trait;
use wharf_jobs::vulndb::{import_archives, match_new_packages, rematch, Log};
use wharf_metastore::scan::{InventoryRow, PackageRow};
use wharf_metastore::MetaStore;

use super::advisories::{self, Pools, ECOSYSTEMS};
use super::rematch::Inventories;

/// The store's figures for one backend.
#[derive(Debug, Clone, Default)]
pub struct StorePhase {
    pub records: u64,
    pub first_import_secs: f64,
    pub inventories: u64,
    pub inventory_rows: u64,
    pub distinct: usize,
    pub store_inventories_secs: f64,
    pub first_match_secs: f64,
    pub first_matches: u64,
    pub update_import_secs: f64,
    pub rematch_secs: f64,
    pub added: u64,
    pub removed: u64,
    pub newly_affected: u64,
}

impl StorePhase {
    /// What the re-match target is judged on: importing the update and re-matching.
    pub fn update_secs(&self) -> f64 {
        self.update_import_secs + self.rematch_secs
    }
}

/// Progress on stderr, never stops.
struct Stderr;

#[async_trait]
impl Log for Stderr {
    async fn line(&self, line: String) {
        eprintln!("  {line}");
    }
}

/// Both revisions' archives, written once and imported into each backend.
pub struct Archives {
    pub rev0: Vec<(String, PathBuf)>,
    pub rev1: Vec<(String, PathBuf)>,
}

impl Archives {
    pub fn write(dir: &Path, total: u64, pools: &Pools) -> Result<Archives> {
        let labelled = |paths: Vec<PathBuf>| -> Vec<(String, PathBuf)> {
            ECOSYSTEMS
                .iter()
                .map(|(eco, ..)| eco.to_string())
                .zip(paths)
                .collect()
        };
        let (rev0, _) = advisories::write_archives(&dir.join("rev0"), total, pools, 0)?;
        let (rev1, _) = advisories::write_archives(&dir.join("rev1"), total, pools, 1)?;
        Ok(Archives {
            rev0: labelled(rev0),
            rev1: labelled(rev1),
        })
    }
}

fn package_row(p: &wharf_scan::Package) -> PackageRow {
    PackageRow {
        ecosystem: p.ecosystem.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        match_name: p.match_name.clone(),
        match_version: p.match_version.clone(),
        purl: format!("pkg:generic/{}@{}", p.name, p.version),
        location: String::new(),
    }
}

/// A manifest digest for synthetic image `i`.
fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

/// Runs the three steps on `meta`, an empty store.
pub async fn run(
    backend: &'static str,
    meta: Arc<dyn MetaStore>,
    archives: &Archives,
    inventories: &Inventories,
) -> Result<StorePhase> {
    let mut r = StorePhase {
        inventories: inventories.members.len() as u64,
        inventory_rows: inventories.rows(),
        distinct: inventories.packages.len(),
        ..StorePhase::default()
    };
    eprintln!("[{backend}] importing revision 0");
    let t = Instant::now();
    let first = import_archives(meta.as_ref(), "file:bench-rev0", &archives.rev0, &Stderr)
        .await
        .context("importing revision 0")?;
    r.first_import_secs = t.elapsed().as_secs_f64();
    r.records = first.records;

    eprintln!(
        "[{backend}] storing and matching {} inventories ({} rows), as the scan job does",
        r.inventories, r.inventory_rows
    );
    let rows: Vec<PackageRow> = inventories.packages.iter().map(package_row).collect();
    let (mut store_secs, mut match_secs) = (0.0, 0.0);
    for (i, members) in inventories.members.iter().enumerate() {
        let inventory = InventoryRow {
            status: "scanned".into(),
            os_json: None,
            scanner_version: "wharf-bench".into(),
            error: None,
            notes_json: "[]".into(),
            packages: members.iter().map(|&p| rows[p as usize].clone()).collect(),
        };
        let t = Instant::now();
        let stored = meta
            .store_inventory(&digest(i), &inventory)
            .await
            .with_context(|| format!("storing inventory {i}"))?;
        store_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let changes = match_new_packages(meta.as_ref(), &stored.new_packages).await?;
        match_secs += t.elapsed().as_secs_f64();
        r.first_matches += changes.added;
    }
    r.store_inventories_secs = store_secs;
    r.first_match_secs = match_secs;

    eprintln!("[{backend}] importing revision 1 and re-matching");
    let t = Instant::now();
    import_archives(meta.as_ref(), "file:bench-rev1", &archives.rev1, &Stderr)
        .await
        .context("importing revision 1")?;
    r.update_import_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let summary = rematch(meta.as_ref(), &Stderr).await?;
    r.rematch_secs = t.elapsed().as_secs_f64();
    r.added = summary.added;
    r.removed = summary.removed;
    r.newly_affected = summary.newly_affected_images;
    if r.first_matches == 0 || r.added + r.removed == 0 {
        anyhow::bail!("the store found no matches or no changes: the data is wrong ({r:?})");
    }
    Ok(r)
}
