//! The advisory database in the metadata store: importing OSV archives (or directories
//! of OSV records) as a new database version, re-matching the registry's distinct
//! packages after an import, and matching the packages a scan found for the first time.
//!
//! - [`import_archives`] stages every record in batches and swaps the whole advisory
//!   set in one commit; the first record that does not validate fails the import and
//!   leaves the current database as it was.
//! - [`rematch`] matches every distinct package against the current advisories and
//!   writes only what changed, recording for stored images what they gained or lost.
//! - [`match_new_packages`] matches only a scan's new packages (the others already
//!   have their matches).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use async_trait::async_trait;
use wharf_metastore::scan::{
    AdvisoryRow, AffectedEntry, AffectedRow, MatchChanges, MatchDiff, NewMatch, PackageRow,
};
use wharf_metastore::MetaStore;
use wharf_scan::matching::{normalize_name, AdvisoryIndex};
use wharf_scan::osv::{self, Advisory, Affected};
use wharf_scan::Package;

use crate::{JobContext, Stop};

/// Advisories staged per call to the store.
pub const STAGE_BATCH: usize = 5_000;

/// Distinct packages matched per page of a re-match.
pub const REMATCH_PAGE: usize = 1_000;

/// Where the import and re-match report to: a job's log, or the replica's.
#[async_trait]
pub trait Log: Send + Sync {
    async fn line(&self, line: String);

    /// Whether to stop now (between batches and pages).
    fn should_stop(&self) -> Option<Stop> {
        None
    }
}

#[async_trait]
impl Log for JobContext {
    async fn line(&self, line: String) {
        self.log(line).await
    }

    fn should_stop(&self) -> Option<Stop> {
        JobContext::should_stop(self)
    }
}

/// Logs to the replica's log (`tracing`), never stops: for tests and tools.
pub struct TracingLog;

#[async_trait]
impl Log for TracingLog {
    async fn line(&self, line: String) {
        tracing::info!("{line}");
    }
}

/// The work stopped early for this reason (an import is abandoned: nothing current is
/// replaced; a re-match simply runs again from the start).
#[derive(Debug, thiserror::Error)]
#[error("stopped ({0:?}) before it was done")]
pub struct Interrupted(pub Stop);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub version_id: i64,
    /// Advisories in the new database (as the store counts them: a record in two
    /// archives counts once).
    pub records: u64,
    /// Records read per ecosystem (per archive label).
    pub per_ecosystem: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RematchSummary {
    /// The database version matched against (`None`: no database yet, nothing done).
    pub db_version: Option<i64>,
    /// Distinct packages matched.
    pub packages: u64,
    pub added: u64,
    pub removed: u64,
    /// Images that gained an advisory they did not have, each counted once.
    pub newly_affected_images: u64,
    /// Images that lost every match of some advisory, counted likewise.
    pub unaffected_images: u64,
}

/// The archives (or record directories) under `path`, with their ecosystem label:
/// - a zip file: one archive (`osv-PyPI.zip`/`PyPI.zip` → `PyPI`; `all.zip` takes its
///   folder's name, as in osv.dev's `<ecosystem>/all.zip` layout);
/// - a directory of `<Ecosystem>.zip` / `osv-<Ecosystem>.zip`, or of `<Ecosystem>/`
///   folders holding an `all.zip` or `*.json` records;
/// - a directory of `*.json` records: one ecosystem, the directory's name.
///
/// In name order.
pub fn archives_in(path: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if meta.is_file() {
        if !is_zip(path) {
            bail!("{}: not a zip archive (.zip)", path.display());
        }
        return Ok(vec![(zip_ecosystem(path), path.to_path_buf())]);
    }
    let mut zips = Vec::new();
    let mut folders = Vec::new();
    let mut has_json = false;
    for entry in read_dir_sorted(path)? {
        if entry.is_dir() {
            folders.push(entry);
        } else if is_zip(&entry) {
            zips.push((zip_ecosystem(&entry), entry));
        } else if is_json(&entry) {
            has_json = true;
        }
    }
    if has_json && zips.is_empty() && folders.is_empty() {
        return Ok(vec![(file_name(path), path.to_path_buf())]);
    }
    let mut out = zips;
    for folder in folders {
        let all = folder.join("all.zip");
        if all.is_file() {
            out.push((file_name(&folder), all));
        } else if read_dir_sorted(&folder)?.iter().any(|p| is_json(p)) {
            out.push((file_name(&folder), folder));
        }
    }
    if out.is_empty() && has_json {
        out.push((file_name(path), path.to_path_buf()));
    }
    if out.is_empty() {
        bail!(
            "{}: no OSV archives (*.zip) or records (*.json) found",
            path.display()
        );
    }
    out.sort();
    Ok(out)
}

fn read_dir_sorted(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        entries.push(entry.with_context(|| format!("{}", dir.display()))?.path());
    }
    entries.sort();
    Ok(entries)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_zip(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip"))
}

fn is_json(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "json")
}

fn zip_ecosystem(p: &Path) -> String {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem == "all" {
        if let Some(parent) = p.parent() {
            return file_name(parent);
        }
    }
    stem.strip_prefix("osv-").unwrap_or(&stem).to_string()
}

/// An advisory as the store keeps it. `affected` entries are found by ecosystem and
/// normalised name (what packages' `match_name` holds); entries without a package
/// (commit ranges) match nothing and are left out.
pub fn advisory_row(a: &Advisory) -> anyhow::Result<AdvisoryRow> {
    let (severity, score) = a.severity();
    let mut affected = Vec::new();
    for entry in &a.affected {
        let Some(p) = &entry.package else { continue };
        affected.push(AffectedRow {
            ecosystem: p.ecosystem.clone(),
            name: normalize_name(&p.ecosystem, &p.name).into_owned(),
            affected_json: serde_json::to_string(entry)?,
        });
    }
    Ok(AdvisoryRow {
        id: a.id.clone(),
        modified: a.modified.clone().unwrap_or_default(),
        withdrawn: a.withdrawn.clone().filter(|w| !w.is_empty()),
        aliases: a.aliases.clone(),
        severity: severity.as_str().to_string(),
        score,
        summary: a.summary.clone().unwrap_or_default(),
        affected,
    })
}

/// Reads one archive or record directory on this (blocking) thread, sending batches
/// of rows; the first bad record ends it with an error naming it.
fn read_source(
    ecosystem: &str,
    path: &Path,
    tx: &tokio::sync::mpsc::Sender<Vec<AdvisoryRow>>,
) -> Result<(), String> {
    let label = format!("{ecosystem}/{}", file_name(path));
    let mut batch = Vec::with_capacity(STAGE_BATCH);
    let push = |advisory: Advisory, batch: &mut Vec<AdvisoryRow>| -> Result<bool, String> {
        advisory.validate().map_err(|e| format!("{label}: {e}"))?;
        let row = advisory_row(&advisory).map_err(|e| format!("{label}: {e}"))?;
        batch.push(row);
        if batch.len() >= STAGE_BATCH {
            let full = std::mem::replace(batch, Vec::with_capacity(STAGE_BATCH));
            // A closed channel: the import gave up; stop reading.
            return Ok(tx.blocking_send(full).is_ok());
        }
        Ok(true)
    };
    if path.is_dir() {
        for file in read_dir_sorted(path).map_err(|e| format!("{label}: {e:#}"))? {
            if !is_json(&file) {
                continue;
            }
            let name = format!("{ecosystem}/{}", file_name(&file));
            let bytes = std::fs::read(&file).map_err(|e| format!("{name}: {e}"))?;
            let advisory = osv::parse(&bytes).map_err(|e| format!("{name}: {e}"))?;
            advisory.validate().map_err(|e| format!("{name}: {e}"))?;
            if !push(advisory, &mut batch)? {
                return Ok(());
            }
        }
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("{label}: {e}"))?;
        let records = osv::read_archive(std::io::BufReader::new(file))
            .map_err(|e| format!("{label}: {e}"))?;
        for record in records {
            let advisory = record.map_err(|e| format!("{label}: {e}"))?;
            if !push(advisory, &mut batch)? {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// Imports `archives` (see [`archives_in`]) as a new database version from `source`
/// (`file:<path>`, a URL, …). All or nothing: on any error the import is marked failed
/// and the current database stays current.
pub async fn import_archives(
    meta: &dyn MetaStore,
    source: &str,
    archives: &[(String, PathBuf)],
    log: &dyn Log,
) -> anyhow::Result<ImportSummary> {
    import_archives_with_validators(meta, source, archives, "{}", log).await
}

/// [`import_archives`], recording with the new version the HTTP validators of the
/// downloaded archives (JSON, [`crate::vulndb_fetch::ValidatorsByEcosystem`]), for the
/// next conditional download.
pub async fn import_archives_with_validators(
    meta: &dyn MetaStore,
    source: &str,
    archives: &[(String, PathBuf)],
    validators_json: &str,
    log: &dyn Log,
) -> anyhow::Result<ImportSummary> {
    let version_id = meta.begin_vulndb_import(source).await?;
    log.line(format!(
        "importing the advisory database from {source} as version {version_id}"
    ))
    .await;
    match stage_all(meta, version_id, archives, log).await {
        Ok(per_ecosystem) => {
            let ecosystems_json = serde_json::to_string(&per_ecosystem)?;
            let records = match meta
                .commit_vulndb_import(version_id, &ecosystems_json, validators_json)
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    let error = format!("the commit failed: {e}");
                    let _ = meta.fail_vulndb_import(version_id, &error).await;
                    bail!("{error}");
                }
            };
            log.line(format!(
                "version {version_id} is current: {records} advisories ({})",
                per_ecosystem
                    .iter()
                    .map(|(e, n)| format!("{e} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await;
            Ok(ImportSummary {
                version_id,
                records,
                per_ecosystem,
            })
        }
        Err(e) => {
            let error = format!("{e:#}");
            if let Err(fail) = meta.fail_vulndb_import(version_id, &error).await {
                log.line(format!(
                    "could not mark import {version_id} as failed: {fail}"
                ))
                .await;
            }
            log.line(format!(
                "import {version_id} failed: {error}; the current database stays"
            ))
            .await;
            Err(e)
        }
    }
}

async fn stage_all(
    meta: &dyn MetaStore,
    version_id: i64,
    archives: &[(String, PathBuf)],
    log: &dyn Log,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut per_ecosystem: BTreeMap<String, u64> = BTreeMap::new();
    for (ecosystem, path) in archives {
        if let Some(why) = log.should_stop() {
            return Err(Interrupted(why).into());
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reader = {
            let (ecosystem, path) = (ecosystem.clone(), path.clone());
            tokio::task::spawn_blocking(move || read_source(&ecosystem, &path, &tx))
        };
        let mut count = 0u64;
        let staged: anyhow::Result<()> = async {
            while let Some(batch) = rx.recv().await {
                if let Some(why) = log.should_stop() {
                    return Err(Interrupted(why).into());
                }
                meta.stage_advisories(version_id, &batch).await?;
                count += batch.len() as u64;
            }
            Ok(())
        }
        .await;
        drop(rx); // a reader still sending stops at its next batch
        let read = reader.await.context("the archive reader stopped")?;
        staged?;
        read.map_err(anyhow::Error::msg)?;
        log.line(format!(
            "{ecosystem}: {count} records from {}",
            path.display()
        ))
        .await;
        *per_ecosystem.entry(ecosystem.clone()).or_default() += count;
    }
    Ok(per_ecosystem)
}

/// Builds the matcher's index from stored `affected` entries (the advisories' other
/// fields are not needed to decide what matches).
fn index_of(entries: Vec<AffectedEntry>) -> anyhow::Result<AdvisoryIndex> {
    let mut by_id: BTreeMap<String, Vec<Affected>> = BTreeMap::new();
    for e in entries {
        let affected: Affected = serde_json::from_str(&e.affected_json)
            .with_context(|| format!("{}: stored affected entry does not parse", e.advisory_id))?;
        by_id.entry(e.advisory_id).or_default().push(affected);
    }
    Ok(AdvisoryIndex::new(by_id.into_iter().map(
        |(id, affected)| Advisory {
            id,
            affected,
            ..Advisory::default()
        },
    )))
}

fn package_of(p: &PackageRow) -> Package {
    Package {
        ecosystem: p.ecosystem.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        match_name: p.match_name.clone(),
        match_version: p.match_version.clone(),
        purl: p.purl.clone(),
        location: p.location.clone(),
    }
}

/// The matches of `packages` against `index`, by (package id, advisory id).
fn match_packages(
    index: &AdvisoryIndex,
    packages: &[(i64, PackageRow)],
) -> BTreeMap<(i64, String), Option<String>> {
    let mut out = BTreeMap::new();
    for (id, row) in packages {
        for m in index.matches(&package_of(row)) {
            out.insert((*id, m.advisory_id), m.fixed);
        }
    }
    out
}

/// Re-matches every distinct package against the current database, page by page,
/// writing only the differences (recorded in `vuln_changes`), then refreshes every
/// image's summary once.
pub async fn rematch(meta: &dyn MetaStore, log: &dyn Log) -> anyhow::Result<RematchSummary> {
    let Some(current) = meta.current_vulndb().await? else {
        log.line("no advisory database yet: nothing to match".into())
            .await;
        return Ok(RematchSummary::default());
    };
    let db_version = current.id;
    let index = index_of(meta.all_affected().await?)?;
    log.line(format!(
        "re-matching the registry's packages against version {db_version} ({} advisories)",
        index.len()
    ))
    .await;
    let mut summary = RematchSummary {
        db_version: Some(db_version),
        ..RematchSummary::default()
    };
    let mut after = 0i64;
    loop {
        if let Some(why) = log.should_stop() {
            return Err(Interrupted(why).into());
        }
        let page = meta.packages_page(after, REMATCH_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        let new = match_packages(&index, &page);
        let ids: Vec<i64> = page.iter().map(|(id, _)| *id).collect();
        let old: HashMap<(i64, String), Option<String>> = meta
            .package_vulns_for(&ids)
            .await?
            .into_iter()
            .map(|m| ((m.package_id, m.advisory_id), m.fixed))
            .collect();
        let mut diff = MatchDiff {
            db_version,
            record_changes: true,
            refresh_summaries: false,
            ..MatchDiff::default()
        };
        for (key, fixed) in &new {
            // New pairs, and known ones whose fix changed (the store updates `fixed`).
            if old.get(key) != Some(fixed) {
                diff.added.push(NewMatch {
                    package_id: key.0,
                    advisory_id: key.1.clone(),
                    fixed: fixed.clone(),
                });
            }
        }
        let mut removed: BTreeSet<(i64, String)> = BTreeSet::new();
        for key in old.keys() {
            if !new.contains_key(key) {
                removed.insert(key.clone());
            }
        }
        diff.removed = removed.into_iter().collect();
        summary.packages += page.len() as u64;
        if !diff.added.is_empty() || !diff.removed.is_empty() {
            let changes = meta.apply_matches(&diff).await?;
            add_changes(&mut summary, changes);
        }
    }
    meta.refresh_all_summaries(db_version).await?;
    // The pages' own counts add up an image once per page it gained something in.
    let (newly, un) = meta.vuln_change_counts(db_version).await?;
    summary.newly_affected_images = newly;
    summary.unaffected_images = un;
    log.line(format!(
        "re-match done: {} packages, {} matches added, {} removed, {} newly affected images",
        summary.packages, summary.added, summary.removed, summary.newly_affected_images
    ))
    .await;
    Ok(summary)
}

fn add_changes(summary: &mut RematchSummary, c: MatchChanges) {
    summary.added += c.added;
    summary.removed += c.removed;
    summary.newly_affected_images += c.newly_affected_inventories;
    summary.unaffected_images += c.unaffected_inventories;
}

/// The `(ecosystem, name)` keys whose records apply to a package: its own ecosystem,
/// the bare distribution for OS releases (`Debian` for `Debian:12`), and Ubuntu's Pro
/// records for `+esm` versions (as [`AdvisoryIndex::matches`] widens them).
fn lookup_keys(p: &PackageRow) -> Vec<(String, String)> {
    let name = normalize_name(&p.ecosystem, &p.match_name).into_owned();
    let mut keys = vec![(p.ecosystem.clone(), name.clone())];
    if let Some((base, release)) = p.ecosystem.split_once(':') {
        keys.push((base.to_string(), name.clone()));
        if base == "Ubuntu" && !release.starts_with("Pro:") && p.match_version.contains("+esm") {
            keys.push((format!("Ubuntu:Pro:{release}"), name));
        }
    }
    keys
}

/// Matches a scan's new packages (from [`wharf_metastore::scan::StoredInventory`])
/// against the current database and stores their matches, refreshing the summaries of
/// the images that hold them. Nothing to do without a database.
pub async fn match_new_packages(
    meta: &dyn MetaStore,
    new_packages: &[(i64, PackageRow)],
) -> anyhow::Result<MatchChanges> {
    if new_packages.is_empty() {
        return Ok(MatchChanges::default());
    }
    let Some(current) = meta.current_vulndb().await? else {
        return Ok(MatchChanges::default());
    };
    let keys: Vec<(String, String)> = new_packages
        .iter()
        .flat_map(|(_, p)| lookup_keys(p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index = index_of(meta.affected_for(&keys).await?)?;
    let matches = match_packages(&index, new_packages);
    if matches.is_empty() {
        return Ok(MatchChanges::default());
    }
    let diff = MatchDiff {
        db_version: current.id,
        added: matches
            .into_iter()
            .map(|((package_id, advisory_id), fixed)| NewMatch {
                package_id,
                advisory_id,
                fixed,
            })
            .collect(),
        removed: Vec::new(),
        record_changes: false,
        refresh_summaries: true,
    };
    Ok(meta.apply_matches(&diff).await?)
}
