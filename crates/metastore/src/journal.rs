//! The upgrade journal and lock, kept in the metadata store beside (not inside) the
//! versioned schema: the upgrade command creates them on first use, at whatever schema
//! level the data is, and older releases ignore them.

use async_trait::async_trait;

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JournalEntry {
    pub from_version: String,
    pub to_version: String,
    pub step: String,
    /// `done` or `skipped`.
    pub status: String,
    pub at_ms: i64,
    pub detail: String,
}

#[async_trait]
pub trait UpgradeJournal: Send + Sync {
    /// Takes the upgrade lock for `holder`, unless someone else holds it and has
    /// renewed it within `stale_after_ms` (then `Err(holder)` says who). A stale lock
    /// is taken over.
    async fn take_upgrade_lock(
        &self,
        holder: &str,
        stale_after_ms: i64,
    ) -> Result<std::result::Result<(), String>>;
    async fn release_upgrade_lock(&self, holder: &str) -> Result<()>;
    /// The steps recorded for upgrades to `to` (from any version), in order.
    async fn journal(&self, to: &str) -> Result<Vec<JournalEntry>>;
    async fn record_step(&self, entry: &JournalEntry) -> Result<()>;
    /// Forgets the steps of the upgrade `from` → `to` (it was rolled back), so that a
    /// later upgrade starts from the beginning; how many.
    async fn forget_upgrade(&self, from: &str, to: &str) -> Result<u64>;
    /// The release that wrote the data: the version recorded with the newest schema
    /// level.
    async fn data_version(&self) -> Result<String>;
    /// The database server's kind and version (`sqlite 3.46.0`, `postgresql 15.18`).
    async fn database_version(&self) -> Result<(String, String)>;
}

pub(crate) const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS wharf_upgrade_journal (
    from_version TEXT NOT NULL, to_version TEXT NOT NULL, step TEXT NOT NULL,
    status TEXT NOT NULL, at INTEGER NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (from_version, to_version, step));
CREATE TABLE IF NOT EXISTS wharf_upgrade_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, renewed_at INTEGER NOT NULL);";

pub(crate) const POSTGRES_TABLES: &str = "
CREATE TABLE IF NOT EXISTS wharf_upgrade_journal (
    from_version TEXT NOT NULL, to_version TEXT NOT NULL, step TEXT NOT NULL,
    status TEXT NOT NULL, at BIGINT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (from_version, to_version, step));
CREATE TABLE IF NOT EXISTS wharf_upgrade_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, renewed_at BIGINT NOT NULL);";
