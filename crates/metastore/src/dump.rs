//! A store-independent copy of the metadata, for backups: every table that holds the
//! registry's state, row by row, from one consistent snapshot; and the record of
//! backups taken, which the upgrade checks read.
//!
//! Values are typed by what they mean (integer, text, boolean, bytes), not by how a
//! backend spells them (SQLite keeps booleans as integers), so a backup taken from one
//! backend loads into the other: the way from the embedded store to PostgreSQL.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::Result;

/// The tables a backup holds, parents before children (the order to load them in).
/// Not in it: jobs and their logs and workers (the history of what ran, not the
/// registry's state; schedules are kept), what the scanner derives from images and
/// from the advisory database (rebuilt by scanning and re-downloading; its policies
/// and allowlist are kept), upload sessions (their bytes live in the blob store's
/// upload area and expire with it), replicas (who is running now), the schema table
/// (a backup names its schema level) and the backup records themselves.
pub const TABLES: &[&str] = &[
    "repositories",
    "blobs",
    "repository_blobs",
    "manifests",
    "tags",
    "manifest_refs",
    "manifest_summaries",
    "users",
    "access_tokens",
    "orgs",
    "org_members",
    "teams",
    "team_members",
    "repository_settings",
    "repository_grants",
    "signing_keys",
    "audit_log",
    "crons",
    "scan_policies",
    "scan_allowlist",
    "content_caches",
    "content_cache_choices",
    "proxies",
    "proxy_tags",
    "proxy_manifests",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int,
    Text,
    Bool,
    Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// What an export streams: a table's columns, then its rows, table after table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpItem {
    Table { name: String, columns: Vec<Column> },
    Row(Vec<Value>),
}

/// A backup that `wharf backup` finished.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupRecord {
    /// When it finished, by the store's clock.
    pub finished_at_ms: i64,
    /// `metadata` or `metadata+blobs`.
    pub scope: String,
    pub wharf_version: String,
    pub schema_level: u32,
    /// Where it was written, as given.
    pub location: String,
    pub bytes: u64,
    /// The archive's checksum (of its list of entry checksums).
    pub checksum: String,
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Sends every table of [`TABLES`], in that order, from one snapshot: writes that
    /// commit meanwhile are either wholly in it or not at all. Stops early (with an
    /// error) if the receiver goes away.
    async fn export(&self, to: mpsc::Sender<DumpItem>) -> Result<()>;
    /// Loads a dump in one transaction: all of it or, on any error, nothing. With
    /// `replace`, the tables are emptied first (in the same transaction); without it,
    /// a store that holds data refuses. Returns the number of rows loaded.
    async fn import(&self, from: mpsc::Receiver<DumpItem>, replace: bool) -> Result<u64>;
    /// Whether no table of [`TABLES`] holds a row.
    async fn is_empty(&self) -> Result<bool>;
    async fn record_backup(&self, record: &BackupRecord) -> Result<()>;
    /// The most recent backups, newest first.
    async fn backups(&self, limit: usize) -> Result<Vec<BackupRecord>>;
}

/// Checks a dump's table against the store's: same name in [`TABLES`], and every
/// column the store has is in the dump (by name; the order may differ). Returns, for
/// each dump column, its index in the store's columns.
pub fn match_columns(table: &str, dump: &[Column], store: &[Column]) -> Result<Vec<usize>> {
    use crate::MetaError::Conflict;
    if !TABLES.contains(&table) {
        return Err(Conflict(format!(
            "the backup has an unknown table {table:?}"
        )));
    }
    let mut order = Vec::with_capacity(dump.len());
    for c in dump {
        let Some(i) = store.iter().position(|s| s.name == c.name) else {
            return Err(Conflict(format!(
                "the backup's table {table} has a column {:?} this store does not",
                c.name
            )));
        };
        order.push(i);
    }
    if let Some(missing) = store
        .iter()
        .find(|s| !dump.iter().any(|c| c.name == s.name))
    {
        return Err(Conflict(format!(
            "the backup's table {table} lacks the column {:?}",
            missing.name
        )));
    }
    Ok(order)
}

/// Converts a dumped value to what a column of type `ty` holds; booleans and integers
/// convert into each other (SQLite stores booleans as integers).
pub fn coerce(table: &str, column: &str, value: Value, ty: ColumnType) -> Result<Value> {
    Ok(match (value, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), ColumnType::Bool) => Value::Bool(i != 0),
        (Value::Bool(b), ColumnType::Int) => Value::Int(b as i64),
        (v @ Value::Int(_), ColumnType::Int)
        | (v @ Value::Text(_), ColumnType::Text)
        | (v @ Value::Bool(_), ColumnType::Bool)
        | (v @ Value::Bytes(_), ColumnType::Bytes) => v,
        (v, ty) => {
            let found = match v {
                Value::Null => "null",
                Value::Int(_) => "an integer",
                Value::Text(_) => "text",
                Value::Bool(_) => "a boolean",
                Value::Bytes(_) => "bytes",
            };
            return Err(crate::MetaError::Conflict(format!(
                "the backup's {table}.{column} holds {found}, not a value of type {ty:?}"
            )));
        }
    })
}
