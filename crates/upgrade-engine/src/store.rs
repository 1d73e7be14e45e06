//! The metadata store's schema moves, on either backend.

use std::sync::Arc;

use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

/// The metadata store at whatever schema level its data is (older levels included),
/// for reading and upgrading it.
pub async fn open_for_upgrade(config: &wharf_server::Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    open_at(&config.metadata_location().map_err(anyhow::Error::msg)?).await
}

/// The metadata store at `location`, at whatever schema level its data is.
pub(crate) async fn open_at(location: &MetadataLocation) -> anyhow::Result<Arc<dyn MetaStore>> {
    Ok(match location {
        MetadataLocation::Sqlite(p) => Arc::new(SqliteMetaStore::open_for_upgrade(p).await?),
        MetadataLocation::Postgres(u) => Arc::new(PgMetaStore::open_for_upgrade(&u.0).await?),
    })
}

/// Applies the schema levels up to `level` that are not applied yet; returns them.
pub(crate) async fn expand(location: &MetadataLocation, level: u32) -> anyhow::Result<Vec<u32>> {
    Ok(match location {
        MetadataLocation::Sqlite(p) => SqliteMetaStore::expand(p, level).await?,
        MetadataLocation::Postgres(u) => PgMetaStore::expand(&u.0, level).await?,
    })
}

/// Makes the expanded levels up to `level` the data's, and `version` the cluster's.
pub(crate) async fn finalise(
    location: &MetadataLocation,
    level: u32,
    version: &str,
) -> anyhow::Result<Vec<u32>> {
    Ok(match location {
        MetadataLocation::Sqlite(p) => SqliteMetaStore::finalise(p, level, version).await?,
        MetadataLocation::Postgres(u) => PgMetaStore::finalise(&u.0, level, version).await?,
    })
}

/// Undoes the expanded levels above `level`; returns them.
pub(crate) async fn undo_expand(
    location: &MetadataLocation,
    level: u32,
) -> anyhow::Result<Vec<u32>> {
    // The undo drops tables that serving replicas write to; on PostgreSQL its one
    // transaction can be chosen as a deadlock's victim. It changed nothing then, so it
    // is tried again (a few times, then the error stands: a rerun of rollback resumes).
    let mut attempt = 1;
    loop {
        let undone = match location {
            MetadataLocation::Sqlite(p) => SqliteMetaStore::undo_expand(p, level).await,
            MetadataLocation::Postgres(u) => PgMetaStore::undo_expand(&u.0, level).await,
        };
        match undone {
            Err(e) if attempt < 3 && e.to_string().contains("deadlock detected") => {
                tracing::warn!(attempt, error = %e, "undoing the expansion met a deadlock; trying again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// The version that wrote the data `config` points at (the cluster's version), read
/// without opening the store for use.
pub async fn data_version(config: &wharf_server::Config) -> anyhow::Result<semver::Version> {
    let info = match config.metadata_location().map_err(anyhow::Error::msg)? {
        MetadataLocation::Sqlite(path) => {
            if !path.exists() {
                anyhow::bail!(
                    "no registry data at {} (pass the registry's --data-dir or --metadata)",
                    path.display()
                );
            }
            wharf_metastore::schema::peek_sqlite(&path)?
        }
        MetadataLocation::Postgres(url) => wharf_metastore::schema::peek_postgres(&url.0).await?,
    };
    let info = info.ok_or_else(|| anyhow::anyhow!("the metadata store holds no wharf data"))?;
    semver::Version::parse(info.wharf_version.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the data's version {:?} is not a version: {e}",
            info.wharf_version
        )
    })
}
