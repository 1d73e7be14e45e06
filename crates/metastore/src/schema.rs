//! The metadata schema's versions. Each migration raises the schema level by one; a
//! binary knows the highest level it understands and refuses data at any other level
//! (the upgrade command moves data between levels).

/// One schema step, in each backend's dialect.
pub struct Migration {
    pub level: u32,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        level: 1,
        name: "initial: repositories, blobs, manifests, tags, uploads",
        sqlite: include_str!("sql/sqlite/0001_initial.sql"),
        postgres: include_str!("sql/postgres/0001_initial.sql"),
    },
    Migration {
        level: 2,
        name:
            "jobs (queue, logs, workers, schedules) and manifest references for garbage collection",
        sqlite: include_str!("sql/sqlite/0002_jobs.sql"),
        postgres: include_str!("sql/postgres/0002_jobs.sql"),
    },
];

/// What a store's data is, read without opening it for use (no migration, no
/// refusal): for the upgrade commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaInfo {
    pub level: u32,
    /// The wharf version that brought the data to this level.
    pub wharf_version: String,
}

/// Reads the schema information of the SQLite store at `path`; `None` if it holds no
/// wharf data.
pub fn peek_sqlite(path: &std::path::Path) -> crate::Result<Option<SchemaInfo>> {
    use rusqlite::OptionalExtension;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'wharf_schema')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT level, wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1",
            [],
            |r| {
                Ok(SchemaInfo {
                    level: r.get(0)?,
                    wharf_version: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Reads the schema information of the PostgreSQL database at `url`.
pub async fn peek_postgres(url: &str) -> crate::Result<Option<SchemaInfo>> {
    use sqlx::Row;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('wharf_schema') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let row =
        sqlx::query("SELECT level, wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
    Ok(row.map(|r| SchemaInfo {
        level: r.get::<i64, _>(0) as u32,
        wharf_version: r.get(1),
    }))
}

/// The schema level this binary reads and writes.
pub const SCHEMA_LEVEL: u32 = 2;

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
