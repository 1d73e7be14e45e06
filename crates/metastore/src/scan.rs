//! Vulnerability scanning's metadata (schema level 3): the advisory database and its
//! versions, image inventories over the registry's distinct packages, the matches per
//! package with the severity summaries per image, and the pull policies with their
//! allowlist. Design: `docs/design/scanning-research.md` §7.
//!
//! Every method is one whole operation in one transaction. The types are plain rows
//! (strings and numbers): the jobs crate converts from and to `wharf-scan`'s types, so
//! this crate does not depend on the scanner.
//!
//! How the jobs use it:
//! - *import*: [`ScanStore::begin_vulndb_import`], then [`ScanStore::stage_advisories`]
//!   batch by batch (bounded memory), then [`ScanStore::commit_vulndb_import`], which
//!   swaps the whole advisory set in one transaction, or
//!   [`ScanStore::fail_vulndb_import`]. Until the commit, the current advisories are
//!   untouched whatever happens to the import.
//! - *scan*: [`ScanStore::store_inventory`] returns the packages the registry did not
//!   hold yet; only those need matching ([`ScanStore::affected_for`]), and
//!   [`ScanStore::apply_matches`] writes their matches.
//! - *re-match* after an import: [`ScanStore::packages_page`] page by page, the existing
//!   matches of each page ([`ScanStore::package_vulns_for`]), the diff through
//!   [`ScanStore::apply_matches`] (summaries off), then
//!   [`ScanStore::refresh_all_summaries`] once.

use async_trait::async_trait;

use crate::Result;

/// The severities, most severe first (the order findings are listed in).
pub const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

/// One import of the advisory database, whatever its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct VulndbVersion {
    pub id: i64,
    /// A URL, `upload:<file name>` or `file:<path>`.
    pub source: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// `importing`, `current`, `superseded` or `failed`.
    pub status: String,
    /// Advisories imported (once committed).
    pub records: Option<u64>,
    /// JSON: advisories per ecosystem, `{"PyPI": 143, ...}`.
    pub ecosystems_json: Option<String>,
    /// JSON: each archive's ETag / Last-Modified, for the next conditional download.
    pub validators_json: Option<String>,
    pub error: Option<String>,
}

/// One advisory (an OSV record), as the matcher and the reports need it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvisoryRow {
    pub id: String,
    pub modified: String,
    /// When it was withdrawn: a withdrawn advisory matches nothing.
    pub withdrawn: Option<String>,
    pub aliases: Vec<String>,
    /// One of [`SEVERITIES`].
    pub severity: String,
    pub score: Option<f64>,
    pub summary: String,
    pub affected: Vec<AffectedRow>,
}

/// One `affected` entry of an advisory: the OSV object as JSON, found by package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedRow {
    pub ecosystem: String,
    pub name: String,
    pub affected_json: String,
}

/// An `affected` entry with its advisory, for building the matcher's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedEntry {
    pub advisory_id: String,
    pub ecosystem: String,
    pub name: String,
    pub affected_json: String,
}

/// A package found in an image. The first six fields identify a distinct package of
/// the registry; `location` (where in the image it was found) belongs to the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageRow {
    /// The OSV ecosystem, with the release for OS packages (`Debian:12`).
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    /// What advisories name: the source package for dpkg/apk/rpm, the PEP 503 name for
    /// PyPI, `g:a` for Maven; otherwise the name.
    pub match_name: String,
    pub match_version: String,
    pub purl: String,
    /// Where it was found in the image; empty where a row stands for the distinct
    /// package (e.g. [`ScanStore::packages_page`]).
    pub location: String,
}

/// An image's inventory to store.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryRow {
    /// `scanned` or `failed`.
    pub status: String,
    /// JSON: id, version_id, pretty_name, ecosystem.
    pub os_json: Option<String>,
    pub scanner_version: String,
    /// Why a failed scan failed.
    pub error: Option<String>,
    /// JSON array: what the scanner skipped.
    pub notes_json: String,
    pub packages: Vec<PackageRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredInventory {
    pub inventory_id: i64,
    /// The packages the registry did not hold before (with their ids): the only ones
    /// that need matching. Each appears once, with the first location it was found at.
    pub new_packages: Vec<(i64, PackageRow)>,
}

/// A stored inventory with its packages (one row per package and location).
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryDetail {
    pub id: i64,
    pub manifest_digest: String,
    pub status: String,
    pub os_json: Option<String>,
    pub scanned_at_ms: i64,
    pub scanner_version: String,
    pub error: Option<String>,
    pub notes_json: String,
    pub sbom_digest: Option<String>,
    /// By ecosystem, name, version, location.
    pub packages: Vec<(i64, PackageRow)>,
}

/// A package's match with an advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMatch {
    pub package_id: i64,
    pub advisory_id: String,
    /// The first fixed version, when the advisory names one.
    pub fixed: Option<String>,
}

/// Match changes to write (see [`ScanStore::apply_matches`]).
#[derive(Debug, Clone, Default)]
pub struct MatchDiff {
    /// The database version the matches were computed against.
    pub db_version: i64,
    /// New matches; one already stored only gets its `fixed` updated.
    pub added: Vec<NewMatch>,
    /// `(package_id, advisory_id)` matches that no longer hold.
    pub removed: Vec<(i64, String)>,
    /// Record what changed for stored images in `vuln_changes` (a re-match after a
    /// database change: "newly affected images"); `false` for a new image's first
    /// matches, which change nothing that was known.
    pub record_changes: bool,
    /// Recompute the summaries of the images whose packages changed. A full re-match
    /// turns this off and calls [`ScanStore::refresh_all_summaries`] once at the end.
    pub refresh_summaries: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchChanges {
    /// Matches inserted (not counting ones that were already there).
    pub added: u64,
    pub removed: u64,
    /// Images that gained an advisory they did not have before this call.
    pub newly_affected_inventories: u64,
    /// Images that lost every match of some advisory in this call.
    pub unaffected_inventories: u64,
}

/// One vulnerability of an image: a package of it matched by an advisory.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub advisory_id: String,
    pub aliases: Vec<String>,
    pub severity: String,
    pub score: Option<f64>,
    pub summary: String,
    pub package_id: i64,
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub purl: String,
    pub fixed: Option<String>,
}

/// An image's severity counts: its findings (package × advisory) by severity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SummaryRow {
    /// `scanned` or `failed`.
    pub status: String,
    pub scanned_at_ms: i64,
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
    /// The database version the counts were computed with; `None` if never computed
    /// (a failed scan).
    pub db_version: Option<i64>,
}

/// What a database change did to a stored image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnChange {
    pub db_version: i64,
    pub inventory_id: i64,
    pub manifest_digest: String,
    pub advisory_id: String,
    /// `added` or `removed`.
    pub change: String,
}

/// A pull and scan policy, for a repository or (repository `''`) the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPolicy {
    pub scan_on_push: bool,
    /// Refuse pulls of images with a finding this severe or worse; `None`: never.
    pub block_severity: Option<String>,
    /// `allow` or `refuse` pulls of images not scanned (yet).
    pub unscanned: String,
    pub attach_sbom: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub repository: String,
    pub policy: ScanPolicy,
    pub updated_at_ms: i64,
}

/// A vulnerability a policy lets through, by advisory id or alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRow {
    /// `''` for the whole registry.
    pub repository: String,
    pub vuln_id: String,
    pub expires_at_ms: Option<i64>,
    pub reason: String,
    pub created_by: String,
    /// Set by the store when added.
    pub created_at_ms: i64,
}

/// The registry's images by scan outcome, for metrics: every stored inventory counted
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanStats {
    pub scanned: u64,
    pub failed: u64,
    /// Scanned images by their worst finding's severity, in [`SEVERITIES`] order.
    pub worst: [u64; 5],
    /// Scanned images without any finding.
    pub clean: u64,
}

/// What [`ScanStore::delete_inventories_without_manifests`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanGc {
    pub inventories: u64,
    pub packages: u64,
}

#[async_trait]
pub trait ScanStore {
    // --- the advisory database ---

    /// Starts an import from `source`: a new version, `importing`. An import still
    /// `importing` from before is abandoned (`failed`, its staged rows dropped): one
    /// import runs at a time.
    async fn begin_vulndb_import(&self, source: &str) -> Result<i64>;

    /// Stages a batch of advisories for the import `version_id`. An advisory staged
    /// again (the same record in two archives) replaces the earlier one. `Conflict` if
    /// the import is no longer `importing`.
    async fn stage_advisories(&self, version_id: i64, batch: &[AdvisoryRow]) -> Result<()>;

    /// In one transaction: replaces the advisories with the staged ones, makes this
    /// version `current` and the previous one `superseded`, records the counts and the
    /// validators. Returns the number of advisories. `Conflict` if the import is no
    /// longer `importing`.
    async fn commit_vulndb_import(
        &self,
        version_id: i64,
        ecosystems_json: &str,
        validators_json: &str,
    ) -> Result<u64>;

    /// Marks the import `failed` with `error` and drops what it staged; the current
    /// advisories stay as they were.
    async fn fail_vulndb_import(&self, version_id: i64, error: &str) -> Result<()>;

    /// The newest `limit` versions, newest first.
    async fn vulndb_versions(&self, limit: usize) -> Result<Vec<VulndbVersion>>;

    /// The version whose advisories are in use.
    async fn current_vulndb(&self) -> Result<Option<VulndbVersion>>;

    /// The `affected` entries of current, not withdrawn advisories for these
    /// `(ecosystem, match name)` pairs: the matcher's index for a scan's new packages.
    async fn affected_for(&self, packages: &[(String, String)]) -> Result<Vec<AffectedEntry>>;

    /// Every `affected` entry of the current, not withdrawn advisories: the matcher's
    /// index for a full re-match.
    async fn all_affected(&self) -> Result<Vec<AffectedEntry>>;

    /// The current advisories with these ids, in the order asked (unknown ids are left
    /// out), with their `affected` entries by ecosystem and name.
    async fn advisories(&self, ids: &[String]) -> Result<Vec<AdvisoryRow>>;

    // --- inventories and packages ---

    /// In one transaction: stores `manifest_digest`'s inventory, replacing any earlier
    /// one, adds the packages the registry did not hold, and computes the image's
    /// summary from the matches its known packages already have.
    async fn store_inventory(
        &self,
        manifest_digest: &str,
        inventory: &InventoryRow,
    ) -> Result<StoredInventory>;

    /// Records the SBOM referrer pushed for an image; `false` if it has no inventory.
    async fn set_sbom_digest(&self, manifest_digest: &str, sbom_digest: &str) -> Result<bool>;

    /// The registry's distinct packages with ids above `after_id`, by id, at most
    /// `limit` (`location` empty).
    async fn packages_page(&self, after_id: i64, limit: usize) -> Result<Vec<(i64, PackageRow)>>;

    /// The stored matches of these packages, by package and advisory.
    async fn package_vulns_for(&self, package_ids: &[i64]) -> Result<Vec<NewMatch>>;

    /// In one transaction: writes the match changes, records for stored images what
    /// they gained and lost (if `record_changes`), and recomputes the summaries of the
    /// images whose packages changed (if `refresh_summaries`): per package first, then
    /// per image.
    async fn apply_matches(&self, diff: &MatchDiff) -> Result<MatchChanges>;

    /// Recomputes every image's summary (after an import changed severities, or a
    /// re-match that did not refresh them): per package first, then per image. Returns
    /// the number of summaries written.
    async fn refresh_all_summaries(&self, db_version: i64) -> Result<u64>;

    // --- reads ---

    async fn inventory(&self, manifest_digest: &str) -> Result<Option<InventoryDetail>>;

    /// An image's findings, most severe first, then by advisory and package; those of
    /// withdrawn or no longer current advisories are left out.
    async fn findings(&self, manifest_digest: &str) -> Result<Vec<FindingRow>>;

    /// The summaries of the images among `manifest_digests` that have an inventory
    /// (for tag lists and pull policies), in the order asked.
    async fn summaries(&self, manifest_digests: &[String]) -> Result<Vec<(String, SummaryRow)>>;

    /// What the re-match against `db_version` changed, at most `limit`, by image digest
    /// and advisory.
    async fn vuln_changes(&self, db_version: i64, limit: usize) -> Result<Vec<VulnChange>>;

    /// The images that `db_version`'s re-match newly affected and unaffected, each
    /// counted once (distinct images in `vuln_changes`).
    async fn vuln_change_counts(&self, db_version: i64) -> Result<(u64, u64)>;

    /// Every image's scan outcome and worst severity, counted (one aggregate query).
    async fn scan_stats(&self) -> Result<ScanStats>;

    // --- policies ---

    /// The policy set for `repository` (`''`: the registry's default), if any.
    async fn scan_policy(&self, repository: &str) -> Result<Option<StoredPolicy>>;

    /// Every policy set, by repository (the registry's default first).
    async fn scan_policies(&self) -> Result<Vec<StoredPolicy>>;

    /// Sets (creates or replaces) the policy of `repository`.
    async fn set_scan_policy(&self, repository: &str, policy: &ScanPolicy) -> Result<()>;

    /// `false` if none was set.
    async fn delete_scan_policy(&self, repository: &str) -> Result<bool>;

    /// The allowlist entries that apply to `repository`: its own and the registry-wide
    /// ones (repository `''`), registry-wide first, then by vulnerability id. For `''`,
    /// the registry-wide ones only. Expired entries are included (the policy decides).
    async fn allowlist(&self, repository: &str) -> Result<Vec<AllowRow>>;

    /// Adds or replaces the entry of `(repository, vuln_id)`; `created_at_ms` is set to
    /// now.
    async fn add_allow(&self, entry: &AllowRow) -> Result<()>;

    /// `false` if there was no such entry.
    async fn remove_allow(&self, repository: &str, vuln_id: &str) -> Result<bool>;

    // --- garbage collection ---

    /// Deletes the inventories of images no repository holds any more (their digest is
    /// in no `manifests` row), then the packages no inventory references (with their
    /// matches).
    async fn delete_inventories_without_manifests(&self) -> Result<ScanGc>;
}

/// The JSON array of `aliases`, as stored.
/// [`ScanStats`] from the counts of `scan_stats`'s query: scanned, failed, then the
/// images whose worst finding is critical, high, medium, low, unknown.
pub(crate) fn stats_from(n: [i64; 7]) -> ScanStats {
    let worst: [u64; 5] = std::array::from_fn(|i| n[2 + i] as u64);
    let scanned = n[0] as u64;
    ScanStats {
        scanned,
        failed: n[1] as u64,
        worst,
        clean: scanned.saturating_sub(worst.iter().sum()),
    }
}

pub(crate) fn aliases_json(aliases: &[String]) -> String {
    serde_json::to_string(aliases).unwrap_or_else(|_| "[]".into())
}

/// Stored aliases back into a list (an unreadable value reads as none).
pub(crate) fn parse_aliases(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// `SUM(CASE …)` columns counting `severity` values, in the order of [`SEVERITIES`].
pub(crate) fn severity_sums(column: &str) -> String {
    SEVERITIES
        .iter()
        .map(|s| format!("SUM(CASE WHEN {column} = '{s}' THEN 1 ELSE 0 END)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a severity before it reaches the table's CHECK constraint, with a clearer
/// error.
pub(crate) fn check_severity(s: &str) -> Result<()> {
    if SEVERITIES.contains(&s) {
        Ok(())
    } else {
        Err(crate::MetaError::Conflict(format!(
            "{s:?} is not a severity (critical, high, medium, low, unknown)"
        )))
    }
}

/// Sorts packages by identity and location and drops exact repeats: one insertion
/// order for every writer (no lock cycles on PostgreSQL) and no duplicate rows.
pub(crate) fn sorted_packages(packages: &[PackageRow]) -> Vec<PackageRow> {
    let mut v = packages.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The identity of a package (everything but its location).
pub(crate) fn package_key(p: &PackageRow) -> (&str, &str, &str, &str, &str) {
    (
        &p.ecosystem,
        &p.name,
        &p.version,
        &p.match_name,
        &p.match_version,
    )
}
