//! The metadata schema's versions. Each migration raises the schema level by one; a
//! binary knows the highest level it understands and refuses data at any other level
//! (the upgrade command moves data between levels).
//!
//! An upgrade moves a level in two steps, so that replicas of the old release keep
//! working (and can restart) while the new one rolls out:
//! - *expand* applies a level's changes, which the old release ignores, and records the
//!   level in `wharf_schema_expanded`; `wharf_schema`, which the old release reads,
//!   still says the old level. Until finalisation, expand can be undone (rollback).
//! - *finalise* moves the level into `wharf_schema` and records the cluster's version in
//!   `wharf_cluster_version`; from then on old releases refuse the data.

/// One schema step, in each backend's dialect, with the statements that undo it before
/// it is finalised (empty for level 1, which is never expanded into).
pub struct Migration {
    pub level: u32,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub sqlite_undo: &'static str,
    pub postgres_undo: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        level: 1,
        name: "initial: repositories, blobs, manifests, tags, uploads",
        sqlite: include_str!("sql/sqlite/0001_initial.sql"),
        postgres: include_str!("sql/postgres/0001_initial.sql"),
        sqlite_undo: "",
        postgres_undo: "",
    },
    Migration {
        level: 2,
        name:
            "jobs (queue, logs, workers, schedules) and manifest references for garbage collection",
        sqlite: include_str!("sql/sqlite/0002_jobs.sql"),
        postgres: include_str!("sql/postgres/0002_jobs.sql"),
        sqlite_undo: include_str!("sql/sqlite/0002_jobs.undo.sql"),
        postgres_undo: include_str!("sql/postgres/0002_jobs.undo.sql"),
    },
    Migration {
        level: 3,
        name: "vulnerability scanning, content caches, pull-through proxies and manifest summaries",
        sqlite: include_str!("sql/sqlite/0003_scanning.sql"),
        postgres: include_str!("sql/postgres/0003_scanning.sql"),
        sqlite_undo: include_str!("sql/sqlite/0003_scanning.undo.sql"),
        postgres_undo: include_str!("sql/postgres/0003_scanning.undo.sql"),
    },
];

/// What a store's data is, read without opening it for use (no migration, no
/// refusal): for the upgrade commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaInfo {
    /// The finalised level: what every release reads.
    pub level: u32,
    /// The highest level expanded into (equal to `level` when no upgrade is under way).
    pub expanded_level: u32,
    /// The cluster's version: the release that last finalised an upgrade of the data
    /// (for data no upgrade has touched, the one that created it).
    pub wharf_version: String,
}

/// Tables the upgrade command keeps beside `wharf_schema`, created on first use.
pub(crate) const SQLITE_UPGRADE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS wharf_schema_expanded (
    level INTEGER PRIMARY KEY, name TEXT NOT NULL,
    applied_at INTEGER NOT NULL, wharf_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wharf_cluster_version (
    id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, finalised_at INTEGER NOT NULL);";

pub(crate) const POSTGRES_UPGRADE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS wharf_schema_expanded (
    level BIGINT PRIMARY KEY, name TEXT NOT NULL,
    applied_at BIGINT NOT NULL, wharf_version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wharf_cluster_version (
    id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL, finalised_at BIGINT NOT NULL);";

/// The cluster's version: `wharf_cluster_version` once an upgrade was finalised,
/// otherwise the version that recorded the newest level.
pub(crate) const SQLITE_DATA_VERSION: &str = "
SELECT COALESCE(
    (SELECT version FROM wharf_cluster_version WHERE id = 1),
    (SELECT wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1))";

/// Reads the schema information of the SQLite store at `path`; `None` if it holds no
/// wharf data.
pub fn peek_sqlite(path: &std::path::Path) -> crate::Result<Option<SchemaInfo>> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
            [name],
            |r| r.get(0),
        )
    };
    if !table("wharf_schema")? {
        return Ok(None);
    }
    let level: u32 = conn.query_row(
        "SELECT COALESCE(MAX(level), 0) FROM wharf_schema",
        [],
        |r| r.get(0),
    )?;
    if level == 0 {
        return Ok(None);
    }
    let expanded: u32 = if table("wharf_schema_expanded")? {
        conn.query_row(
            "SELECT COALESCE(MAX(level), 0) FROM wharf_schema_expanded",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    let wharf_version: String = if table("wharf_cluster_version")? {
        conn.query_row(SQLITE_DATA_VERSION, [], |r| r.get(0))?
    } else {
        conn.query_row(
            "SELECT wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1",
            [],
            |r| r.get(0),
        )?
    };
    Ok(Some(SchemaInfo {
        level,
        expanded_level: expanded.max(level),
        wharf_version,
    }))
}

/// Reads the schema information of the PostgreSQL database at `url`.
pub async fn peek_postgres(url: &str) -> crate::Result<Option<SchemaInfo>> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    let info = postgres_state(&mut conn).await?;
    Ok(info)
}

/// The schema state of a PostgreSQL database; `None` if it holds no wharf data.
pub(crate) async fn postgres_state(
    conn: &mut sqlx::PgConnection,
) -> crate::Result<Option<SchemaInfo>> {
    let (schema, expanded_table, cluster_table): (bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass('wharf_schema') IS NOT NULL, to_regclass('wharf_schema_expanded') IS NOT NULL,
                to_regclass('wharf_cluster_version') IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !schema {
        return Ok(None);
    }
    let level: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(level), 0)::BIGINT FROM wharf_schema")
        .fetch_one(&mut *conn)
        .await?;
    if level == 0 {
        return Ok(None);
    }
    let expanded: i64 = if expanded_table {
        sqlx::query_scalar("SELECT COALESCE(MAX(level), 0)::BIGINT FROM wharf_schema_expanded")
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    let newest: String =
        sqlx::query_scalar("SELECT wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1")
            .fetch_one(&mut *conn)
            .await?;
    let cluster: Option<String> = if cluster_table {
        sqlx::query_scalar("SELECT version FROM wharf_cluster_version WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?
    } else {
        None
    };
    Ok(Some(SchemaInfo {
        level: level as u32,
        expanded_level: expanded.max(level) as u32,
        wharf_version: cluster.unwrap_or(newest),
    }))
}

/// Background migrations (jobs) that data crossing a schema level needs, by level.
pub const BACKGROUND: &[(u32, &str)] = &[(2, "metadatastoremigration"), (3, "manifestsummaries")];

/// How many rows the background migration `action` has left, and what they are;
/// `None` for an action that is not one.
pub async fn background_pending(
    meta: &dyn crate::MetaStore,
    action: &str,
) -> crate::Result<Option<(u64, &'static str)>> {
    Ok(match action {
        "metadatastoremigration" => Some((
            meta.count_manifests_without_refs().await?,
            "manifests lack references",
        )),
        "manifestsummaries" => Some((
            meta.count_manifests_without_summary().await?,
            "manifests lack a summary",
        )),
        _ => None,
    })
}

/// How much data a store holds, for estimates (`wharf upgrade plan`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSize {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

const SIZE_SQL: &str =
    "SELECT (SELECT COUNT(*) FROM repositories), (SELECT COUNT(*) FROM manifests),
    (SELECT COUNT(*) FROM tags), (SELECT COUNT(*) FROM blobs),
    (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs)";

/// Counts what the SQLite store at `path` holds, read-only.
pub fn size_sqlite(path: &std::path::Path) -> crate::Result<DataSize> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row(SIZE_SQL, [], |r| {
        Ok(DataSize {
            repositories: r.get::<_, i64>(0)? as u64,
            manifests: r.get::<_, i64>(1)? as u64,
            tags: r.get::<_, i64>(2)? as u64,
            blobs: r.get::<_, i64>(3)? as u64,
            blob_bytes: r.get::<_, i64>(4)? as u64,
        })
    })?)
}

/// Counts what the PostgreSQL database at `url` holds.
pub async fn size_postgres(url: &str) -> crate::Result<DataSize> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    let (repositories, manifests, tags, blobs, bytes): (i64, i64, i64, i64, i64) =
        sqlx::query_as(SIZE_SQL).fetch_one(&mut conn).await?;
    Ok(DataSize {
        repositories: repositories as u64,
        manifests: manifests as u64,
        tags: tags as u64,
        blobs: blobs as u64,
        blob_bytes: bytes as u64,
    })
}

/// The schema level this binary reads and writes.
pub const SCHEMA_LEVEL: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_consecutive_and_end_at_schema_level() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.level, i as u32 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().level, SCHEMA_LEVEL);
    }
}
