//! The embedded metadata store: SQLite in WAL mode, where every durable write survives
//! a power cut before it returns (an acknowledged push is durable).
//!
//! rusqlite is synchronous; every call runs on tokio's blocking pool. One connection
//! writes (SQLite admits one writer at a time anyway, and `BEGIN IMMEDIATE` makes a
//! second process wait instead of failing half-way); a small pool of connections reads
//! concurrently, which WAL allows. Durable writes share their flushes: see
//! [`group_commit`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use wharf_oci::{Digest, Reference, RepoName, Tag, UploadId};

use self::group_commit::WalFlusher;
use crate::schema::{MIGRATIONS, SCHEMA_LEVEL};
use crate::{
    now_ms, MetaError, MetaStore, NewManifest, Referrer, Result, StoredManifest, UploadSession,
};

mod accounts;
mod browse;
mod content_caches;
mod dump;
mod gc;
mod group_commit;
mod jobs;
mod journal;
mod proxy;
mod replicas;
mod scan;

const READERS: usize = 4;

#[derive(Clone)]
pub struct SqliteMetaStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The one writing connection, with `synchronous=NORMAL`: a commit only appends to
    /// the WAL; [`Self::wal`] makes it durable.
    writer: Mutex<Connection>,
    /// Flushes the WAL for every durable write committed before it, in one fsync.
    wal: WalFlusher,
    readers: Mutex<Vec<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

pub(crate) fn parse<T: std::str::FromStr>(s: String) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    })
}

fn level_of(conn: &Connection) -> Result<u32> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'wharf_schema')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(level), 0) FROM wharf_schema",
        [],
        |r| r.get(0),
    )?)
}

/// The highest level expanded into (see [`crate::schema`]); `finalised` if none is.
fn expanded_level_of(conn: &Connection, finalised: u32) -> Result<u32> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'wharf_schema_expanded')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(finalised);
    }
    let expanded: u32 = conn.query_row(
        "SELECT COALESCE(MAX(level), 0) FROM wharf_schema_expanded",
        [],
        |r| r.get(0),
    )?;
    Ok(expanded.max(finalised))
}

/// Applies the migrations after level `from` up to `to`, recording each in `table`
/// (`wharf_schema` for a new store, `wharf_schema_expanded` for an upgrade's expand).
fn apply_migrations(tx: &Transaction, from: u32, to: u32, table: &str) -> Result<Vec<u32>> {
    let mut applied = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.level > from && m.level <= to)
    {
        tx.execute_batch(m.sqlite)?;
        tx.execute(
            &format!(
                "INSERT INTO {table} (level, name, applied_at, wharf_version) VALUES (?, ?, ?, ?)"
            ),
            params![m.level, m.name, now_ms(), env!("CARGO_PKG_VERSION")],
        )?;
        applied.push(m.level);
    }
    Ok(applied)
}

impl SqliteMetaStore {
    /// Runs `f` in an exclusive transaction on the existing store at `path`, with the
    /// finalised and expanded levels; commits if it succeeds. For the upgrade command.
    async fn upgrade_transaction<T: Send + 'static>(
        path: PathBuf,
        f: impl FnOnce(&Transaction, u32, u32) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&path)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            let found = level_of(&tx)?;
            if found == 0 {
                return Err(MetaError::Backend(format!(
                    "{} holds no wharf data",
                    path.display()
                )));
            }
            tx.execute_batch(crate::schema::SQLITE_UPGRADE_TABLES)?;
            let expanded = expanded_level_of(&tx, found)?;
            let out = f(&tx, found, expanded)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

    /// Expands an existing store's schema to `to` (at most this binary's level), in one
    /// transaction: every step or none. Older releases still read the data as before.
    /// Returns the levels applied (none if they were there already). For the upgrade
    /// command; `serve` never migrates.
    pub async fn expand(path: impl Into<PathBuf>, to: u32) -> Result<Vec<u32>> {
        Self::upgrade_transaction(path.into(), move |tx, _, expanded| {
            if to > SCHEMA_LEVEL || expanded > SCHEMA_LEVEL {
                return Err(MetaError::SchemaTooNew {
                    found: expanded.max(to),
                    supported: SCHEMA_LEVEL,
                });
            }
            apply_migrations(tx, expanded, to, "wharf_schema_expanded")
        })
        .await
    }

    /// Finalises the expanded levels up to `to` and records `version` as the cluster's:
    /// from now on releases older than those levels refuse the data. Returns the levels
    /// finalised.
    pub async fn finalise(path: impl Into<PathBuf>, to: u32, version: &str) -> Result<Vec<u32>> {
        let version = version.to_string();
        Self::upgrade_transaction(path.into(), move |tx, found, expanded| {
            if expanded < to {
                return Err(MetaError::Backend(format!(
                    "schema level {to} cannot be finalised: it is not expanded (levels: finalised {found}, expanded {expanded})"
                )));
            }
            let levels: Vec<u32> = MIGRATIONS
                .iter()
                .map(|m| m.level)
                .filter(|l| *l > found && *l <= to)
                .collect();
            for l in &levels {
                tx.execute(
                    "INSERT INTO wharf_schema (level, name, applied_at, wharf_version)
                     SELECT level, name, applied_at, wharf_version FROM wharf_schema_expanded WHERE level = ?",
                    [l],
                )?;
                tx.execute("DELETE FROM wharf_schema_expanded WHERE level = ?", [l])?;
            }
            tx.execute(
                "INSERT INTO wharf_cluster_version (id, version, finalised_at) VALUES (1, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version, finalised_at = excluded.finalised_at",
                params![version, now_ms()],
            )?;
            Ok(levels)
        })
        .await
    }

    /// Creates an empty store at schema level `level` as release `version` left it: the
    /// migrations up to that level, finalised, recorded as that release's. For a
    /// rehearsal, which restores an older release's backup into a scratch store and
    /// upgrades it. Refused on a store that holds a schema already.
    pub async fn create_at_level(
        path: impl Into<PathBuf>,
        level: u32,
        version: &str,
    ) -> Result<()> {
        let (path, version) = (path.into(), version.to_string());
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&path)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
            if level_of(&tx)? != 0 {
                return Err(MetaError::Backend(format!(
                    "{} holds a wharf schema already",
                    path.display()
                )));
            }
            if level == 0 || level > SCHEMA_LEVEL {
                return Err(MetaError::SchemaTooNew {
                    found: level,
                    supported: SCHEMA_LEVEL,
                });
            }
            tx.execute_batch(
                "CREATE TABLE wharf_schema (
                    level INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    applied_at INTEGER NOT NULL, wharf_version TEXT NOT NULL)",
            )?;
            apply_migrations(&tx, 0, level, "wharf_schema")?;
            tx.execute("UPDATE wharf_schema SET wharf_version = ?", [&version])?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    /// Undoes the expanded, not finalised, levels above `to`, newest first (rollback).
    /// Refused when a level above `to` is finalised. Returns the levels undone.
    pub async fn undo_expand(path: impl Into<PathBuf>, to: u32) -> Result<Vec<u32>> {
        Self::upgrade_transaction(path.into(), move |tx, found, expanded| {
            if found > to {
                return Err(MetaError::Backend(format!(
                    "schema level {found} is finalised: only restoring a backup goes back to level {to}"
                )));
            }
            let mut undone = Vec::new();
            for m in MIGRATIONS
                .iter()
                .rev()
                .filter(|m| m.level > to && m.level <= expanded)
            {
                tx.execute_batch(m.sqlite_undo)?;
                tx.execute("DELETE FROM wharf_schema_expanded WHERE level = ?", [m.level])?;
                undone.push(m.level);
            }
            Ok(undone)
        })
        .await
    }

    /// Opens the store at `path`. An empty database gets the current schema; a
    /// database at another schema level is refused with the reason.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, false))
            .await
            .map_err(backend)?
    }

    /// Opens an existing store at this binary's level or an older one, for the
    /// upgrade command (backup, journal, then migration); nothing else may use a store
    /// opened so.
    pub async fn open_for_upgrade(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, true))
            .await
            .map_err(backend)?
    }

    fn open_blocking(path: PathBuf, older_ok: bool) -> Result<Self> {
        let mut writer = connect(&path)?;
        let tx = writer.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let found = level_of(&tx)?;
        let expanded = expanded_level_of(&tx, found)?;
        // A later release's expansion (an upgrade under way, not finalised) leaves this
        // release's tables as they were: it serves on, and can restart, until finalisation.
        // Only the upgrade commands, which would act on that upgrade, refuse it.
        if found > SCHEMA_LEVEL || older_ok && expanded > SCHEMA_LEVEL {
            return Err(MetaError::SchemaTooNew {
                found: expanded,
                supported: SCHEMA_LEVEL,
            });
        }
        if found == 0 && older_ok {
            return Err(MetaError::Backend(format!(
                "{} holds no wharf data",
                path.display()
            )));
        }
        if found == 0 {
            tx.execute_batch(
                "CREATE TABLE wharf_schema (
                    level INTEGER PRIMARY KEY, name TEXT NOT NULL,
                    applied_at INTEGER NOT NULL, wharf_version TEXT NOT NULL)",
            )?;
            apply_migrations(&tx, 0, SCHEMA_LEVEL, "wharf_schema")?;
            tracing::info!(path = %path.display(), level = SCHEMA_LEVEL, "created metadata store");
        } else if found < SCHEMA_LEVEL && expanded == SCHEMA_LEVEL {
            // An upgrade is under way: this release's changes are in (expanded), older
            // replicas may still be serving; it is finalised once none is.
            tracing::info!(
                finalised = found,
                expanded,
                "schema expanded for this release, not finalised yet: an upgrade is under way"
            );
        } else if found < SCHEMA_LEVEL && !older_ok {
            return Err(MetaError::SchemaTooOld {
                found,
                supported: SCHEMA_LEVEL,
            });
        }
        tx.commit()?;
        // That commit (synchronous=FULL) created the WAL and made the schema durable;
        // from here on commits only append, and WalFlusher flushes them in groups.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        let wal = WalFlusher::open(&path)?;
        let readers = (0..READERS)
            .map(|_| connect(&path))
            .collect::<Result<Vec<_>>>()?;
        Ok(SqliteMetaStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                wal,
                readers: Mutex::new(readers),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in one immediate (write-locking) transaction on the blocking pool; the
    /// commit is durable when this returns.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_with(true, f).await
    }

    /// Like [`Self::write`], without waiting for the disk: the next durable write's
    /// flush carries it. For upload-session bookkeeping and job heartbeats only: a
    /// power cut may forget a session or its last recorded chunk, the client then
    /// resumes or restarts the upload, and nothing acknowledged as stored is lost.
    pub(crate) async fn write_relaxed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_with(false, f).await
    }

    async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let (out, commit) = {
                let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
                let changes_before = conn.total_changes();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(&tx)?;
                tx.commit()?;
                // Numbered under the writer lock, so commit numbers follow WAL order. A
                // transaction that changed nothing appended nothing: it needs no flush of
                // its own, only of the commits it may have read (often none: then no
                // fdatasync at all, as for an idle job worker's polls).
                let commit = if conn.total_changes() != changes_before {
                    inner.wal.record_commit()
                } else {
                    inner.wal.committed()
                };
                (out, commit)
            };
            if durable {
                // Outside the writer lock: while one flush runs, the next writers
                // commit, and the flush after it covers all of them.
                inner.wal.flush_through(commit)?;
            }
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

    /// Runs `f` on a reader connection on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        // Reads run inline on the calling task: in WAL mode a reader never waits for a
        // writer, the queries are indexed point lookups served from SQLite's page
        // cache, and a hop to the blocking pool would cost more than the query.
        let inner = &self.inner;
        let pooled = inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => c,
            None => connect(&inner.path)?, // all busy: a short-lived extra reader
        };
        let out = f(&conn);
        let mut readers = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() < READERS {
            readers.push(conn);
        }
        out
    }
}

fn repo_id(conn: &Connection, repo: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM repositories WHERE name = ?")?
        .query_row([repo], |r| r.get(0))
        .optional()
}

fn ensure_repo(tx: &Transaction, repo: &str) -> rusqlite::Result<i64> {
    if let Some(id) = repo_id(tx, repo)? {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?, ?)")?
        .execute(params![repo, now_ms()])?;
    Ok(tx.last_insert_rowid())
}

fn link(tx: &Transaction, repo_id: i64, digest: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        // A link used again is young again: garbage collection's grace period counts
        // from the last upload or mount, not the first.
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?)
         ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
    )?
    .execute(params![repo_id, digest, now_ms()])?;
    Ok(())
}

fn session_from_row(r: &rusqlite::Row) -> rusqlite::Result<UploadSession> {
    Ok(UploadSession {
        id: parse(r.get(0)?)?,
        repo: parse(r.get(1)?)?,
        size: r.get::<_, i64>(2)? as u64,
        created_at_ms: r.get(3)?,
        updated_at_ms: r.get(4)?,
    })
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn schema_level(&self) -> Result<u32> {
        self.read(level_of).await
    }

    async fn list_repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>> {
        let after = after.unwrap_or("").to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
            )?;
            let rows = st.query_map(params![after, limit as i64], |r| parse(r.get(0)?))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT b.size FROM repositories r
                 JOIN repository_blobs rb ON rb.repository_id = r.id
                 JOIN blobs b ON b.digest = rb.digest
                 WHERE r.name = ? AND rb.digest = ?",
            )?
            .query_row([repo, digest], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
        })
        .await
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let digest = digest.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT size FROM blobs WHERE digest = ?")?
                .query_row([digest], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|s| s as u64))
        })
        .await
    }

    async fn repositories_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let digest = digest.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                 WHERE rb.digest = ? ORDER BY r.name LIMIT ?",
            )?;
            let rows = st.query_map(params![digest, limit as i64], |r| parse(r.get(0)?))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let exists: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?)")?
                .query_row([&digest], |r| r.get(0))?;
            if exists {
                let id = ensure_repo(tx, &repo)?;
                link(tx, id, &digest)?;
            }
            Ok(exists)
        })
        .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM repository_blobs WHERE digest = ?
                 AND repository_id = (SELECT id FROM repositories WHERE name = ?)",
                [digest, repo],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<()> {
        let s = s.clone();
        self.write_relaxed(move |tx| {
            tx.prepare_cached(
                "INSERT INTO uploads (id, repository, size, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            )?
            .execute(params![s.id.as_str(), s.repo.as_str(), s.size as i64, s.created_at_ms, s.updated_at_ms])?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT id, repository, size, created_at, updated_at FROM uploads WHERE id = ?",
            )?
            .query_row([id], session_from_row)
            .optional()?)
        })
        .await
    }

    async fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<UploadSession>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, repository, size, created_at, updated_at FROM uploads
                 WHERE updated_at < ? ORDER BY updated_at LIMIT ?",
            )?;
            let rows = st.query_map(params![before_ms, limit as i64], session_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn advance_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<bool> {
        let id = id.to_string();
        self.write_relaxed(move |tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE uploads SET size = ?, updated_at = ? WHERE id = ? AND size = ?",
                )?
                .execute(params![to as i64, now_ms(), id, from as i64])?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let id = id.to_string();
        self.write_relaxed(move |tx| Ok(tx.execute("DELETE FROM uploads WHERE id = ?", [id])? > 0))
            .await
    }

    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let (id, repo, digest) = (id.to_string(), repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let now = now_ms();
            tx.prepare_cached(
                "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)",
            )?
            .execute(params![digest, size as i64, now])?;
            let rid = ensure_repo(tx, &repo)?;
            link(tx, rid, &digest)?;
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?")?
                .execute([id])?;
            Ok(())
        })
        .await
    }

    async fn queue_scan(&self, scan: &crate::ScanOnPush) -> Result<bool> {
        let scan = scan.clone();
        self.write(move |tx| queue_scan_on_push(tx, &scan)).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let (repo, m, tag) = (repo.to_string(), m.clone(), tag.map(|t| t.to_string()));
        self.write(move |tx| {
            let rid = ensure_repo(tx, &repo)?;
            if !m.references_on_demand {
                let mut blob_q = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?)",
                )?;
                for d in &m.required_blobs {
                    if !blob_q.query_row(params![rid, d.to_string()], |r| r.get::<_, bool>(0))? {
                        return Err(MetaError::MissingReference(d.clone()));
                    }
                }
                let mut man_q = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?)",
                )?;
                for d in &m.required_manifests {
                    if !man_q.query_row(params![rid, d.to_string()], |r| r.get::<_, bool>(0))? {
                        return Err(MetaError::MissingReference(d.clone()));
                    }
                }
            }
            let digest = m.digest.to_string();
            tx.prepare_cached(
                "INSERT OR IGNORE INTO manifests
                 (repository_id, digest, media_type, size, payload, artifact_type, subject, annotations, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                rid,
                digest,
                m.media_type,
                m.payload.len() as i64,
                &m.payload[..],
                m.artifact_type,
                m.subject.as_ref().map(|s| s.to_string()),
                m.annotations_json,
                now_ms()
            ])?;
            // What it refers to, for garbage collection (also for a manifest stored
            // by an older release and pushed again).
            {
                let mut refs = tx.prepare_cached(
                    "INSERT OR IGNORE INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
                     VALUES (?, ?, ?, ?)",
                )?;
                for d in &m.required_blobs {
                    refs.execute(params![rid, digest, d.to_string(), "blob"])?;
                }
                for d in &m.required_manifests {
                    refs.execute(params![rid, digest, d.to_string(), "manifest"])?;
                }
                tx.prepare_cached(
                    "UPDATE manifests SET refs_recorded = 1 WHERE repository_id = ? AND digest = ? AND refs_recorded = 0",
                )?
                .execute(params![rid, digest])?;
            }
            if let Some(summary) = &m.summary {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO manifest_summaries (repository_id, digest, size, platforms)
                     VALUES (?, ?, ?, ?)",
                )?
                .execute(params![rid, digest, summary.size as i64, summary.platforms])?;
            }
            if let Some(tag) = tag {
                tx.prepare_cached(
                    "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (repository_id, name) DO UPDATE
                     SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
                )?
                .execute(params![rid, tag, digest, now_ms()])?;
            }
            if let Some(scan) = &m.scan {
                queue_scan_on_push(tx, scan)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_payload: bool,
    ) -> Result<Option<StoredManifest>> {
        let (repo, reference) = (repo.to_string(), reference.clone());
        self.read(move |c| {
            let payload_col = if with_payload { "m.payload" } else { "NULL" };
            let (sql, key) = match &reference {
                Reference::Digest(d) => (
                    format!("SELECT m.digest, m.media_type, m.size, {payload_col} FROM manifests m
                             JOIN repositories r ON r.id = m.repository_id
                             WHERE r.name = ? AND m.digest = ?"),
                    d.to_string(),
                ),
                Reference::Tag(t) => (
                    format!("SELECT m.digest, m.media_type, m.size, {payload_col} FROM tags t
                             JOIN repositories r ON r.id = t.repository_id
                             JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
                             WHERE r.name = ? AND t.name = ?"),
                    t.to_string(),
                ),
            };
            Ok(c.prepare_cached(&sql)?
                .query_row([repo, key], |r| {
                    Ok(StoredManifest {
                        digest: parse(r.get(0)?)?,
                        media_type: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        payload: r.get::<_, Option<Vec<u8>>>(3)?.map(Bytes::from),
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            let Some(rid) = repo_id(tx, &repo)? else {
                return Ok(false);
            };
            tx.execute(
                "DELETE FROM tags WHERE repository_id = ? AND manifest_digest = ?",
                params![rid, digest],
            )?;
            tx.execute(
                "DELETE FROM manifest_summaries WHERE repository_id = ? AND digest = ?",
                params![rid, digest],
            )?;
            let n = tx.execute(
                "DELETE FROM manifests WHERE repository_id = ? AND digest = ?",
                params![rid, digest],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM tags WHERE name = ? AND repository_id = (SELECT id FROM repositories WHERE name = ?)",
                [tag, repo],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Tag>>> {
        let (repo, after) = (repo.to_string(), after.unwrap_or("").to_string());
        self.read(move |c| {
            let Some(rid) = repo_id(c, &repo)? else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(
                "SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?",
            )?;
            let rows = st.query_map(params![rid, after, limit as i64], |r| parse(r.get(0)?))?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let (repo, subject, at) = (
            repo.to_string(),
            subject.to_string(),
            artifact_type.map(str::to_string),
        );
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
                 JOIN repositories r ON r.id = m.repository_id
                 WHERE r.name = ? AND m.subject = ? AND (?3 IS NULL OR m.artifact_type = ?3)
                 ORDER BY m.created_at, m.digest",
            )?;
            let rows = st.query_map(params![repo, subject, at], |r| {
                Ok(Referrer {
                    digest: parse(r.get(0)?)?,
                    media_type: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    artifact_type: r.get(3)?,
                    annotations_json: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

/// Queues `scan`'s job unless every image it covers has an inventory or a waiting or
/// running scan job already (writes are serialised, so two pushes cannot both miss).
fn queue_scan_on_push(tx: &Connection, scan: &crate::ScanOnPush) -> Result<bool> {
    // A job for the pushed manifest itself (an index's, say) covers it too.
    if let Some(own) = scan.own_digest() {
        let queued: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE status IN ('waiting', 'running') AND action = 'scan'
                              AND instr(params, '\"' || ?1 || '\"') > 0)",
            )?
            .query_row(params![own], |r| r.get(0))?;
        if queued {
            return Ok(false);
        }
    }
    let mut covered = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM inventories WHERE manifest_digest = ?1)
             OR EXISTS (SELECT 1 FROM jobs WHERE status IN ('waiting', 'running') AND action = 'scan'
                          AND instr(params, '\"' || ?1 || '\"') > 0)",
    )?;
    for d in &scan.covers {
        if !covered.query_row(params![d.to_string()], |r| r.get::<_, bool>(0))? {
            let job = crate::jobs::NewJob {
                action: "scan".into(),
                params: scan.params.clone(),
                max_attempts: crate::SCAN_ON_PUSH_ATTEMPTS,
                deadline_ms: None,
                cron: None,
            };
            jobs::insert_job(tx, &job, now_ms())?;
            return Ok(true);
        }
    }
    Ok(false)
}
