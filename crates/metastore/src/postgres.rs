//! The metadata store on PostgreSQL, for several replicas sharing one database.
//! Same behaviour as the SQLite store (the shared suite checks both); concurrency that
//! SQLite gets from its single writer comes here from row locks and, where a rule spans
//! rows that may not exist yet (unique names across users and organisations, the first
//! signing key, migrations), transaction-scoped advisory locks.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, Row};
use wharf_oci::{Digest, Reference, RepoName, Tag, UploadId};

use crate::accounts::*;

mod browse;
mod content_caches;
mod dump;
mod gc;
mod holds;
mod jobs;
mod journal;
mod proxy;
mod scan;
use crate::schema::{MIGRATIONS, SCHEMA_LEVEL};
use crate::{
    now_ms, MetaError, MetaStore, NewManifest, Referrer, Result, StoredManifest, UploadHold,
    UploadSession,
};

#[derive(Clone)]
pub struct PgMetaStore {
    pool: PgPool,
    /// Connections that hold upload sessions (`hold_upload`), apart from `pool` so
    /// that uploads in flight never starve the queries of everything else.
    holds: PgPool,
}

impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> Self {
        MetaError::Backend(e.to_string())
    }
}

/// Advisory-lock keys, one per rule that needs serialising across replicas.
const LOCK_MIGRATIONS: i64 = 0x7768_6172_6601;
const LOCK_NAMES: i64 = 0x7768_6172_6602;
const LOCK_KEYS: i64 = 0x7768_6172_6603;

fn parse<T: std::str::FromStr>(s: String) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e: T::Err| MetaError::Backend(format!("stored value {s:?} is invalid: {e}")))
}

async fn lock(conn: &mut PgConnection, key: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

async fn level_of(conn: &mut PgConnection) -> Result<u32> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('wharf_schema') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let level: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(level), 0)::BIGINT FROM wharf_schema")
        .fetch_one(conn)
        .await?;
    Ok(level as u32)
}

/// Applies the migrations after level `from` up to `to`, recording each in `table`
/// (`wharf_schema` for a new store, `wharf_schema_expanded` for an upgrade's expand).
async fn apply_migrations(
    conn: &mut PgConnection,
    from: u32,
    to: u32,
    table: &'static str,
) -> Result<Vec<u32>> {
    let mut applied = Vec::new();
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.level > from && m.level <= to)
    {
        sqlx::raw_sql(m.postgres).execute(&mut *conn).await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (level, name, applied_at, wharf_version) VALUES ($1, $2, $3, $4)"
        )))
        .bind(m.level as i64)
        .bind(m.name)
        .bind(now_ms())
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&mut *conn)
        .await?;
        applied.push(m.level);
    }
    Ok(applied)
}

/// The highest level expanded into (see [`crate::schema`]); `finalised` if none is.
async fn expanded_level_of(conn: &mut PgConnection, finalised: u32) -> Result<u32> {
    Ok(crate::schema::postgres_state(conn)
        .await?
        .map_or(finalised, |s| s.expanded_level.max(finalised)))
}

impl PgMetaStore {
    /// Expands an existing database's schema to `to` (at most this binary's level), in
    /// one transaction under the migration lock: every step or none. Older releases
    /// still read the data as before. Returns the levels applied. For the upgrade
    /// command; `serve` never migrates.
    pub async fn expand(url: &str, to: u32) -> Result<Vec<u32>> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let mut tx = pool.begin().await?;
        let (_, expanded) = Self::begin_upgrade(&mut tx).await?;
        if to > SCHEMA_LEVEL || expanded > SCHEMA_LEVEL {
            tx.rollback().await?;
            return Err(MetaError::SchemaTooNew {
                found: expanded.max(to),
                supported: SCHEMA_LEVEL,
            });
        }
        let applied = apply_migrations(&mut tx, expanded, to, "wharf_schema_expanded").await?;
        tx.commit().await?;
        pool.close().await;
        Ok(applied)
    }

    /// Creates the empty database `name` on the server that `url` reaches (a
    /// rehearsal's scratch copy). `name` is lower-case letters, digits and `_`.
    pub async fn create_database(url: &str, name: &str) -> Result<()> {
        check_database_name(name)?;
        let mut conn = <PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        Ok(())
    }

    /// Drops the database `name` on the server that `url` reaches, closing what is
    /// connected to it; not an error if it is gone.
    pub async fn drop_database(url: &str, name: &str) -> Result<()> {
        check_database_name(name)?;
        let mut conn = <PgConnection as sqlx::Connection>::connect(url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// Creates an empty database's schema at level `level` as release `version` left
    /// it: the migrations up to that level, finalised, recorded as that release's. For
    /// a rehearsal, which restores an older release's backup into a scratch database
    /// and upgrades it. Refused on a database that holds a schema already.
    pub async fn create_at_level(url: &str, level: u32, version: &str) -> Result<()> {
        if level == 0 || level > SCHEMA_LEVEL {
            return Err(MetaError::SchemaTooNew {
                found: level,
                supported: SCHEMA_LEVEL,
            });
        }
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let mut tx = pool.begin().await?;
        if level_of(&mut tx).await? != 0 {
            return Err(MetaError::Backend(
                "the database holds a wharf schema already".into(),
            ));
        }
        sqlx::raw_sql(
            "CREATE TABLE wharf_schema (level BIGINT PRIMARY KEY, name TEXT NOT NULL,
             applied_at BIGINT NOT NULL, wharf_version TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        apply_migrations(&mut tx, 0, level, "wharf_schema").await?;
        sqlx::query("UPDATE wharf_schema SET wharf_version = $1")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        pool.close().await;
        Ok(())
    }

    /// Finalises the expanded levels up to `to` and records `version` as the cluster's:
    /// from now on releases older than those levels refuse the data. Returns the levels
    /// finalised.
    pub async fn finalise(url: &str, to: u32, version: &str) -> Result<Vec<u32>> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let mut tx = pool.begin().await?;
        let (found, expanded) = Self::begin_upgrade(&mut tx).await?;
        if expanded < to {
            tx.rollback().await?;
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
            sqlx::query(
                "INSERT INTO wharf_schema (level, name, applied_at, wharf_version)
                 SELECT level, name, applied_at, wharf_version FROM wharf_schema_expanded WHERE level = $1",
            )
            .bind(*l as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM wharf_schema_expanded WHERE level = $1")
                .bind(*l as i64)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO wharf_cluster_version (id, version, finalised_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, finalised_at = EXCLUDED.finalised_at",
        )
        .bind(version)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        pool.close().await;
        Ok(levels)
    }

    /// Undoes the expanded, not finalised, levels above `to`, newest first (rollback).
    /// Refused when a level above `to` is finalised. Returns the levels undone.
    pub async fn undo_expand(url: &str, to: u32) -> Result<Vec<u32>> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        let mut tx = pool.begin().await?;
        let (found, expanded) = Self::begin_upgrade(&mut tx).await?;
        if found > to {
            tx.rollback().await?;
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
            sqlx::raw_sql(m.postgres_undo).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM wharf_schema_expanded WHERE level = $1")
                .bind(m.level as i64)
                .execute(&mut *tx)
                .await?;
            undone.push(m.level);
        }
        tx.commit().await?;
        pool.close().await;
        Ok(undone)
    }

    /// Takes the migration lock, creates the upgrade tables, and reads the finalised
    /// and expanded levels of an existing database.
    async fn begin_upgrade(tx: &mut PgConnection) -> Result<(u32, u32)> {
        lock(tx, LOCK_MIGRATIONS).await?;
        let found = level_of(tx).await?;
        if found == 0 {
            return Err(MetaError::Backend(
                "the database holds no wharf data".into(),
            ));
        }
        sqlx::raw_sql(crate::schema::POSTGRES_UPGRADE_TABLES)
            .execute(&mut *tx)
            .await?;
        let expanded = expanded_level_of(tx, found).await?;
        Ok((found, expanded))
    }

    /// Connects to `url` (`postgres://…`). An empty database gets the current schema,
    /// created under a lock so replicas starting together do it once; a database at
    /// another schema level is refused with the reason.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, false).await
    }

    /// Opens an existing database at this binary's level or an older one, for the
    /// upgrade command (backup, journal, then migration); nothing else may use a store
    /// opened so.
    pub async fn open_for_upgrade(url: &str) -> Result<Self> {
        Self::open_with(url, true).await
    }

    async fn open_with(url: &str, older_ok: bool) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await?;
        let mut tx = pool.begin().await?;
        lock(&mut tx, LOCK_MIGRATIONS).await?;
        let found = level_of(&mut tx).await?;
        let expanded = expanded_level_of(&mut tx, found).await?;
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
            return Err(MetaError::Backend(
                "the database holds no wharf data".into(),
            ));
        }
        if found == 0 {
            sqlx::raw_sql(
                "CREATE TABLE wharf_schema (level BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at BIGINT NOT NULL, wharf_version TEXT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            apply_migrations(&mut tx, 0, SCHEMA_LEVEL, "wharf_schema").await?;
            tracing::info!(level = SCHEMA_LEVEL, "created metadata store in PostgreSQL");
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
        tx.commit().await?;
        let holds = PgPoolOptions::new()
            .max_connections(holds::MAX_HELD_UPLOADS)
            .min_connections(0)
            .connect_lazy(url)?;
        Ok(PgMetaStore { pool, holds })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn repo_id(conn: &mut PgConnection, repo: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(conn)
            .await?,
    )
}

async fn ensure_repo(conn: &mut PgConnection, repo: &str) -> Result<i64> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(repo)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_one(conn)
            .await?,
    )
}

async fn link(conn: &mut PgConnection, repo_id: i64, digest: &str) -> Result<()> {
    sqlx::query(
        // A link used again is young again: garbage collection's grace period counts
        // from the last upload or mount, not the first.
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
    )
    .bind(repo_id)
    .bind(digest)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

fn session_from_row(r: &PgRow) -> Result<UploadSession> {
    Ok(UploadSession {
        id: parse(r.try_get(0)?)?,
        repo: parse(r.try_get(1)?)?,
        size: r.try_get::<i64, _>(2)? as u64,
        created_at_ms: r.try_get(3)?,
        updated_at_ms: r.try_get(4)?,
    })
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn schema_level(&self) -> Result<u32> {
        let mut conn = self.pool.acquire().await?;
        level_of(&mut conn).await
    }

    async fn list_repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(parse).collect()
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repositories r
             JOIN repository_blobs rb ON rb.repository_id = r.id
             JOIN blobs b ON b.digest = rb.digest
             WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn repositories_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
             WHERE rb.digest = $1 ORDER BY r.name LIMIT $2",
        )
        .bind(digest.to_string())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(parse).collect()
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = $1 FOR SHARE)")
                .bind(digest.to_string())
                .fetch_one(&mut *tx)
                .await?;
        if exists {
            let id = ensure_repo(&mut tx, repo.as_str()).await?;
            link(&mut tx, id, &digest.to_string()).await?;
        }
        tx.commit().await?;
        Ok(exists)
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let n = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = $1
             AND repository_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<()> {
        sqlx::query("INSERT INTO uploads (id, repository, size, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(s.id.as_str())
            .bind(s.repo.as_str())
            .bind(s.size as i64)
            .bind(s.created_at_ms)
            .bind(s.updated_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let row = sqlx::query(
            "SELECT id, repository, size, created_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<UploadSession>> {
        let rows = sqlx::query(
            "SELECT id, repository, size, created_at, updated_at FROM uploads
             WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn advance_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE uploads SET size = $1, updated_at = $2 WHERE id = $3 AND size = $4",
        )
        .bind(to as i64)
        .bind(now_ms())
        .bind(id.as_str())
        .bind(from as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn hold_upload(&self, id: &UploadId) -> Result<UploadHold> {
        holds::hold(&self.holds, id).await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let n = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        // One round trip for the common case: every push of a blob ends here.
        let linked: i64 = sqlx::query_scalar(
            "WITH blob AS (
                 INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING
             ), new_repo AS (
                 INSERT INTO repositories (name, created_at) VALUES ($4, $3)
                 ON CONFLICT (name) DO NOTHING RETURNING id
             ), repo AS (
                 SELECT id FROM new_repo UNION ALL SELECT id FROM repositories WHERE name = $4
             ), linked AS (
                 INSERT INTO repository_blobs (repository_id, digest, created_at)
                 SELECT id, $1, $3 FROM (SELECT id FROM repo LIMIT 1) r
                 ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at
                 RETURNING 1
             ), done AS (
                 DELETE FROM uploads WHERE id = $5
             )
             SELECT count(*) FROM linked",
        )
        .bind(digest.to_string())
        .bind(size as i64)
        .bind(now_ms())
        .bind(repo.as_str())
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        if linked == 1 {
            return Ok(());
        }
        // The repository was created by a transaction that committed while this
        // statement ran, too late for its snapshot. The blob is recorded and the session
        // gone already; only the link is missing, and a fresh statement sees the row.
        let mut conn = self.pool.acquire().await?;
        let rid = ensure_repo(&mut conn, repo.as_str()).await?;
        link(&mut conn, rid, &digest.to_string()).await?;
        Ok(())
    }

    async fn queue_scan(&self, scan: &crate::ScanOnPush) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let queued = queue_scan_on_push(&mut tx, scan).await?;
        tx.commit().await?;
        Ok(queued)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let rid = ensure_repo(&mut tx, repo.as_str()).await?;
        // FOR SHARE: a concurrent unlink or delete of what the manifest needs waits
        // for this transaction, so a stored manifest never points at nothing. One
        // statement per kind, in key order, whatever the number of layers.
        let checks = [
            (
                &m.required_blobs,
                "SELECT digest FROM repository_blobs WHERE repository_id = $1 AND digest = ANY($2)
                 ORDER BY digest FOR SHARE",
            ),
            (
                &m.required_manifests,
                "SELECT digest FROM manifests WHERE repository_id = $1 AND digest = ANY($2)
                 ORDER BY digest FOR SHARE",
            ),
        ];
        for (required, lock) in checks {
            if required.is_empty() || m.references_on_demand {
                continue;
            }
            let wanted: Vec<String> = required.iter().map(|d| d.to_string()).collect();
            let found: Vec<String> = sqlx::query_scalar(lock)
                .bind(rid)
                .bind(&wanted)
                .fetch_all(&mut *tx)
                .await?;
            if let Some(missing) = required.iter().find(|d| !found.contains(&d.to_string())) {
                // Release the locks now rather than when the connection is next used.
                tx.rollback().await?;
                return Err(MetaError::MissingReference(missing.clone()));
            }
        }
        let digest = m.digest.to_string();
        sqlx::query(
            "INSERT INTO manifests
             (repository_id, digest, media_type, size, payload, artifact_type, subject, annotations, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(rid)
        .bind(&digest)
        .bind(&m.media_type)
        .bind(m.payload.len() as i64)
        .bind(&m.payload[..])
        .bind(&m.artifact_type)
        .bind(m.subject.as_ref().map(|s| s.to_string()))
        .bind(&m.annotations_json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        // What it refers to, for garbage collection (also for a manifest stored by an
        // older release and pushed again).
        let refs: Vec<(String, &str)> = m
            .required_blobs
            .iter()
            .map(|d| (d.to_string(), "blob"))
            .chain(
                m.required_manifests
                    .iter()
                    .map(|d| (d.to_string(), "manifest")),
            )
            .collect();
        if !refs.is_empty() {
            let (digests, kinds): (Vec<String>, Vec<&str>) = refs.into_iter().unzip();
            sqlx::query(
                "INSERT INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
                 SELECT $1, $2, d, k FROM UNNEST($3::TEXT[], $4::TEXT[]) AS u(d, k)
                 ON CONFLICT DO NOTHING",
            )
            .bind(rid)
            .bind(&digest)
            .bind(&digests)
            .bind(&kinds)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE manifests SET refs_recorded = TRUE WHERE repository_id = $1 AND digest = $2 AND NOT refs_recorded",
        )
        .bind(rid)
        .bind(&digest)
        .execute(&mut *tx)
        .await?;
        if let Some(summary) = &m.summary {
            sqlx::query(
                "INSERT INTO manifest_summaries (repository_id, digest, size, platforms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(rid)
            .bind(&digest)
            .bind(summary.size as i64)
            .bind(&summary.platforms)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repository_id, name) DO UPDATE
                 SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
            )
            .bind(rid)
            .bind(tag.as_str())
            .bind(&digest)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(scan) = &m.scan {
            queue_scan_on_push(&mut tx, scan).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_payload: bool,
    ) -> Result<Option<StoredManifest>> {
        let payload_col = if with_payload {
            "m.payload"
        } else {
            "NULL::BYTEA"
        };
        let (sql, key) = match reference {
            Reference::Digest(d) => (
                format!(
                    "SELECT m.digest, m.media_type, m.size, {payload_col} FROM manifests m
                     JOIN repositories r ON r.id = m.repository_id WHERE r.name = $1 AND m.digest = $2"
                ),
                d.to_string(),
            ),
            Reference::Tag(t) => (
                format!(
                    "SELECT m.digest, m.media_type, m.size, {payload_col} FROM tags t
                     JOIN repositories r ON r.id = t.repository_id
                     JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
                     WHERE r.name = $1 AND t.name = $2"
                ),
                t.to_string(),
            ),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(repo.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredManifest {
                digest: parse(r.try_get(0)?)?,
                media_type: r.try_get(1)?,
                size: r.try_get::<i64, _>(2)? as u64,
                payload: r.try_get::<Option<Vec<u8>>, _>(3)?.map(Bytes::from),
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let Some(rid) = repo_id(&mut tx, repo.as_str()).await? else {
            return Ok(false);
        };
        let digest = digest.to_string();
        sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND manifest_digest = $2")
            .bind(rid)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM manifest_summaries WHERE repository_id = $1 AND digest = $2")
            .bind(rid)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(rid)
            .bind(&digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let n = sqlx::query(
            "DELETE FROM tags WHERE name = $1 AND repository_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(tag.as_str())
        .bind(repo.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Tag>>> {
        let mut conn = self.pool.acquire().await?;
        let Some(rid) = repo_id(&mut conn, repo.as_str()).await? else {
            return Ok(None);
        };
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(rid)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.into_iter().map(parse).collect::<Result<Vec<_>>>()?,
        ))
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
             JOIN repositories r ON r.id = m.repository_id
             WHERE r.name = $1 AND m.subject = $2 AND ($3::TEXT IS NULL OR m.artifact_type = $3)
             ORDER BY m.created_at, m.digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .bind(artifact_type)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse(r.try_get(0)?)?,
                    media_type: r.try_get(1)?,
                    size: r.try_get::<i64, _>(2)? as u64,
                    artifact_type: r.try_get(3)?,
                    annotations_json: r.try_get(4)?,
                })
            })
            .collect()
    }
}

const USER_COLS: &str = "u.id, u.name, u.is_admin, u.disabled, u.created_at";
const TOKEN_COLS: &str =
    "t.id, t.user_id, t.label, t.created_at, t.last_used_at, t.expires_at, t.revoked_at";

fn user_at(r: &PgRow, i: usize) -> Result<User> {
    Ok(User {
        id: r.try_get(i)?,
        name: r.try_get(i + 1)?,
        is_admin: r.try_get(i + 2)?,
        disabled: r.try_get(i + 3)?,
        created_at_ms: r.try_get(i + 4)?,
    })
}

fn token_at(r: &PgRow) -> Result<AccessToken> {
    Ok(AccessToken {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        label: r.try_get(2)?,
        created_at_ms: r.try_get(3)?,
        last_used_at_ms: r.try_get(4)?,
        expires_at_ms: r.try_get(5)?,
        revoked_at_ms: r.try_get(6)?,
    })
}

async fn name_taken(conn: &mut PgConnection, name: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = $1) OR EXISTS (SELECT 1 FROM orgs WHERE name = $1)",
    )
    .bind(name)
    .fetch_one(conn)
    .await?)
}

impl PgMetaStore {
    async fn token_with_user(
        &self,
        condition: &str,
        bind: TokenKey<'_>,
    ) -> Result<Option<(AccessToken, User)>> {
        let sql = format!(
            "SELECT {TOKEN_COLS}, {USER_COLS} FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE {condition}"
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let q = match bind {
            TokenKey::Hash(h) => q.bind(h.to_string()),
            TokenKey::Id(id) => q.bind(id),
        };
        let row = q.fetch_optional(&self.pool).await?;
        row.map(|r| Ok((token_at(&r)?, user_at(&r, 7)?)))
            .transpose()
    }

    async fn set_user_flag(
        &self,
        sql: &'static str,
        name: &str,
        value: impl sqlx::Encode<'_, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    ) -> Result<bool> {
        Ok(sqlx::query(sql)
            .bind(value)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }
}

enum TokenKey<'a> {
    Hash(&'a str),
    Id(i64),
}

#[async_trait]
impl AccountStore for PgMetaStore {
    async fn create_user(&self, name: &str, password_hash: &str, is_admin: bool) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, LOCK_NAMES).await?;
        if name_taken(&mut tx, name).await? {
            return Err(MetaError::Conflict(format!(
                "the name {name:?} is already taken"
            )));
        }
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (name, password_hash, is_admin, disabled, created_at) VALUES ($1, $2, $3, FALSE, $4) RETURNING id",
        )
        .bind(name)
        .bind(password_hash)
        .bind(is_admin)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User {
            id,
            name: name.to_string(),
            is_admin,
            disabled: false,
            created_at_ms: now,
        })
    }

    async fn user_credentials(&self, name: &str) -> Result<Option<UserCredentials>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS}, u.password_hash FROM users u WHERE u.name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UserCredentials {
                user: user_at(&r, 0)?,
                password_hash: r.try_get(5)?,
            })
        })
        .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users u ORDER BY u.name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| user_at(r, 0)).collect()
    }

    async fn count_users(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        self.set_user_flag(
            "UPDATE users SET password_hash = $1 WHERE name = $2",
            name,
            password_hash.to_string(),
        )
        .await
    }

    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        self.set_user_flag(
            "UPDATE users SET disabled = $1 WHERE name = $2",
            name,
            disabled,
        )
        .await
    }

    async fn set_admin(&self, name: &str, is_admin: bool) -> Result<bool> {
        self.set_user_flag(
            "UPDATE users SET is_admin = $1 WHERE name = $2",
            name,
            is_admin,
        )
        .await
    }

    async fn create_token(
        &self,
        user_id: i64,
        label: &str,
        token_hash: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<AccessToken> {
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_tokens (user_id, label, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user_id)
        .bind(label)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(AccessToken {
            id,
            user_id,
            label: label.to_string(),
            created_at_ms: now,
            last_used_at_ms: None,
            expires_at_ms,
            revoked_at_ms: None,
        })
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<(AccessToken, User)>> {
        self.token_with_user("t.token_hash = $1", TokenKey::Hash(token_hash))
            .await
    }

    async fn token_by_id(&self, token_id: i64) -> Result<Option<(AccessToken, User)>> {
        self.token_with_user("t.id = $1", TokenKey::Id(token_id))
            .await
    }

    async fn list_tokens(&self, user_id: i64) -> Result<Vec<AccessToken>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM access_tokens t WHERE t.user_id = $1 ORDER BY t.id"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_at).collect()
    }

    async fn revoke_token(&self, user_id: i64, token_id: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE access_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(token_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn touch_token(&self, token_id: i64, at_ms: i64) -> Result<()> {
        sqlx::query("UPDATE access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(token_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_org(&self, name: &str) -> Result<Org> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, LOCK_NAMES).await?;
        if name_taken(&mut tx, name).await? {
            return Err(MetaError::Conflict(format!(
                "the name {name:?} is already taken"
            )));
        }
        let id: i64 =
            sqlx::query_scalar("INSERT INTO orgs (name, created_at) VALUES ($1, $2) RETURNING id")
                .bind(name)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Org {
            id,
            name: name.to_string(),
        })
    }

    async fn org_by_name(&self, name: &str) -> Result<Option<Org>> {
        let row = sqlx::query("SELECT id, name FROM orgs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Org {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
            })
        })
        .transpose()
    }

    async fn set_org_member(&self, org_id: i64, user_id: i64, is_admin: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO org_members (org_id, user_id, is_admin) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, user_id) DO UPDATE SET is_admin = excluded.is_admin",
        )
        .bind(org_id)
        .bind(user_id)
        .bind(is_admin)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_org_member(&self, org_id: i64, user_id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE user_id = $2 AND team_id IN (SELECT id FROM teams WHERE org_id = $1)")
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn create_team(&self, org_id: i64, name: &str) -> Result<Team> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO teams (org_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => Ok(Team {
                id,
                org_id,
                name: name.to_string(),
            }),
            None => Err(MetaError::Conflict(format!("team {name:?} already exists"))),
        }
    }

    async fn team_by_name(&self, org_id: i64, name: &str) -> Result<Option<Team>> {
        let row = sqlx::query("SELECT id, org_id, name FROM teams WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Team {
                id: r.try_get(0)?,
                org_id: r.try_get(1)?,
                name: r.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn add_team_member(&self, team_id: i64, user_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(team_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_team_member(&self, team_id: i64, user_id: i64) -> Result<bool> {
        let n = sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
            .bind(team_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn namespace(&self, name: &str) -> Result<Option<Namespace>> {
        if let Some(id) = sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(Some(Namespace::User(id)));
        }
        let org: Option<i64> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(org.map(Namespace::Org))
    }

    async fn set_visibility(&self, repo: &str, visibility: Visibility) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_settings (name, visibility, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET visibility = excluded.visibility, updated_at = excluded.updated_at",
        )
        .bind(repo)
        .bind(visibility.as_str())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn grant(&self, repo: &str, subject: Subject, level: Level) -> Result<()> {
        let (kind, id) = subject.parts();
        sqlx::query(
            "INSERT INTO repository_grants (repository, subject_kind, subject_id, level) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repository, subject_kind, subject_id) DO UPDATE SET level = excluded.level",
        )
        .bind(repo)
        .bind(kind)
        .bind(id)
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoke_grant(&self, repo: &str, subject: Subject) -> Result<bool> {
        let (kind, id) = subject.parts();
        let n = sqlx::query("DELETE FROM repository_grants WHERE repository = $1 AND subject_kind = $2 AND subject_id = $3")
            .bind(repo)
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn repo_facts(&self, user_id: Option<i64>, repo: &str) -> Result<RepoFacts> {
        let visibility: Option<String> =
            sqlx::query_scalar("SELECT visibility FROM repository_settings WHERE name = $1")
                .bind(repo)
                .fetch_optional(&self.pool)
                .await?;
        let mut facts = RepoFacts {
            visibility: visibility.and_then(|v| Visibility::parse(&v)),
            ..RepoFacts::default()
        };
        let Some(uid) = user_id else { return Ok(facts) };
        let namespace = repo.split('/').next().unwrap_or("");
        let row = sqlx::query(
            "SELECT
               (SELECT MAX(CASE level WHEN 'admin' THEN 3 WHEN 'write' THEN 2 ELSE 1 END)
                  FROM repository_grants WHERE repository = $1 AND (
                    (subject_kind = 'user' AND subject_id = $2) OR
                    (subject_kind = 'team' AND subject_id IN (SELECT team_id FROM team_members WHERE user_id = $2)))),
               EXISTS (SELECT 1 FROM users WHERE id = $2 AND name = $3),
               (SELECT m.is_admin FROM orgs o JOIN org_members m ON m.org_id = o.id WHERE o.name = $3 AND m.user_id = $2)",
        )
        .bind(repo)
        .bind(uid)
        .bind(namespace)
        .fetch_one(&self.pool)
        .await?;
        facts.granted = row.try_get::<Option<i32>, _>(0)?.map(|rank| match rank {
            3 => Level::Admin,
            2 => Level::Write,
            _ => Level::Read,
        });
        facts.own_namespace = row.try_get(1)?;
        if let Some(admin) = row.try_get::<Option<bool>, _>(2)? {
            facts.org_member = true;
            facts.org_admin = admin;
        }
        Ok(facts)
    }

    async fn signing_keys(&self, candidate: SigningKey) -> Result<Vec<SigningKey>> {
        let mut tx = self.pool.begin().await?;
        lock(&mut tx, LOCK_KEYS).await?;
        sqlx::query(
            "INSERT INTO signing_keys (id, secret, created_at) SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .bind(&candidate.id)
        .bind(&candidate.secret)
        .bind(candidate.created_at_ms)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT id, secret, created_at FROM signing_keys ORDER BY created_at DESC, id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKey {
                    id: r.try_get(0)?,
                    secret: r.try_get(1)?,
                    created_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        details: Option<&str>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)")
            .bind(now_ms())
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(details)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_audit(&self, before_id: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, details FROM audit_log
             WHERE $1::BIGINT IS NULL OR id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    action: r.try_get(3)?,
                    target: r.try_get(4)?,
                    details: r.try_get(5)?,
                })
            })
            .collect()
    }
}

/// The database's clock in milliseconds: the cluster's reference time.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::BIGINT";

#[async_trait]
impl crate::replicas::ReplicaStore for PgMetaStore {
    async fn heartbeat(&self, r: &crate::ReplicaReport) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO replicas (id, address, version, schema_level, started_at, heartbeat_at, clock,
                                   disk_free, disk_total, memory_available, heartbeat_interval)
             VALUES ($1, $2, $3, $4, $5, {DB_NOW_MS}, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
               schema_level = excluded.schema_level, started_at = excluded.started_at,
               heartbeat_at = excluded.heartbeat_at, clock = excluded.clock, disk_free = excluded.disk_free,
               disk_total = excluded.disk_total, memory_available = excluded.memory_available,
               heartbeat_interval = excluded.heartbeat_interval"
        )))
        .bind(&r.id)
        .bind(&r.address)
        .bind(&r.version)
        .bind(r.schema_level as i64)
        .bind(r.started_at_ms)
        .bind(r.clock_ms)
        .bind(r.disk_free_bytes as i64)
        .bind(r.disk_total_bytes as i64)
        .bind(r.memory_available_bytes as i64)
        .bind(r.heartbeat_interval_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replicas(&self) -> Result<(Vec<crate::ReplicaRow>, i64)> {
        let rows = sqlx::query(
            "SELECT id, address, version, schema_level, started_at, heartbeat_at, clock, disk_free, disk_total,
                    memory_available, heartbeat_interval FROM replicas ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let now: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {DB_NOW_MS}")))
            .fetch_one(&self.pool)
            .await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok(crate::ReplicaRow {
                    report: crate::ReplicaReport {
                        id: r.try_get(0)?,
                        address: r.try_get(1)?,
                        version: r.try_get(2)?,
                        schema_level: r.try_get::<i64, _>(3)? as u32,
                        started_at_ms: r.try_get(4)?,
                        clock_ms: r.try_get(6)?,
                        disk_free_bytes: r.try_get::<i64, _>(7)? as u64,
                        disk_total_bytes: r.try_get::<i64, _>(8)? as u64,
                        memory_available_bytes: r.try_get::<i64, _>(9)? as u64,
                        heartbeat_interval_ms: r.try_get(10)?,
                    },
                    heartbeat_at_ms: r.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, now))
    }

    async fn remove_replica(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn expire_replicas(&self, before_ms: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM replicas WHERE heartbeat_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Queues `scan`'s job unless every image it covers has an inventory or a waiting or
/// running scan job already. Pushes of the same image (to two repositories, through two
/// replicas) are serialised on its digest by a transaction-scoped advisory lock, so the
/// second sees the first's job: one statement under one small lock.
async fn queue_scan_on_push(c: &mut PgConnection, scan: &crate::ScanOnPush) -> Result<bool> {
    let covers: Vec<String> = scan.covers.iter().map(|d| d.to_string()).collect();
    let Some(first) = covers.first() else {
        return Ok(false);
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('wharf-scan:' || $1, 0))")
        .bind(first)
        .execute(&mut *c)
        .await?;
    let queued = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO jobs (action, params, status, max_attempts, not_before, created_at)
         SELECT 'scan', $1, 'waiting', $2, {DB_NOW_MS}, {DB_NOW_MS}
         WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status IN ('waiting', 'running')
                             AND j.action = 'scan' AND strpos(j.params, '\"' || $4 || '\"') > 0)
           AND EXISTS (
           SELECT 1 FROM UNNEST($3::TEXT[]) AS c(d)
           WHERE NOT EXISTS (SELECT 1 FROM inventories i WHERE i.manifest_digest = c.d)
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.status IN ('waiting', 'running')
                               AND j.action = 'scan' AND strpos(j.params, '\"' || c.d || '\"') > 0))"
    )))
    .bind(&scan.params)
    .bind(crate::SCAN_ON_PUSH_ATTEMPTS as i64)
    .bind(&covers)
    .bind(scan.own_digest())
    .execute(&mut *c)
    .await?;
    Ok(queued.rows_affected() > 0)
}

/// A database name that needs no quoting beyond the double quotes it gets.
fn check_database_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(MetaError::Backend(format!(
            "{name:?} is not a database name this command makes (a-z, 0-9, _)"
        )));
    }
    Ok(())
}
