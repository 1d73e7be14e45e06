//! [`ContentCacheStore`] on PostgreSQL: heartbeats are stamped with the database's
//! clock, so every replica judges a cache's silence by the same clock.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::{PgMetaStore, DB_NOW_MS};
use crate::accounts::Subject;
use crate::content_caches::{ContentCacheRow, ContentCacheStore, ROUTES};
use crate::{now_ms, MetaError, Result};

const COLS: &str = "name, url, region, created_at, heartbeat_at, report";

fn row(r: &PgRow) -> Result<ContentCacheRow> {
    Ok(ContentCacheRow {
        name: r.try_get(0)?,
        url: r.try_get(1)?,
        region: r.try_get(2)?,
        created_at_ms: r.try_get(3)?,
        heartbeat_at_ms: r.try_get(4)?,
        report: r.try_get(5)?,
    })
}

#[async_trait]
impl ContentCacheStore for PgMetaStore {
    async fn create_content_cache(
        &self,
        name: &str,
        url: &str,
        region: &str,
        token_hash: &str,
    ) -> Result<ContentCacheRow> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO content_caches (name, url, region, token_hash, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(url)
        .bind(region)
        .bind(token_hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(MetaError::Conflict(format!(
                "a content cache is already called {name:?}"
            )));
        }
        Ok(ContentCacheRow {
            name: name.to_string(),
            url: url.to_string(),
            region: region.to_string(),
            created_at_ms: now,
            heartbeat_at_ms: None,
            report: None,
        })
    }

    async fn update_content_cache(&self, name: &str, url: &str, region: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE content_caches SET url = $1, region = $2 WHERE name = $3")
                .bind(url)
                .bind(region)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn set_content_cache_token(&self, name: &str, token_hash: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE content_caches SET token_hash = $1 WHERE name = $2")
                .bind(token_hash)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn delete_content_cache(&self, name: &str) -> Result<bool> {
        // The choices of it go by the foreign key's cascade.
        Ok(sqlx::query("DELETE FROM content_caches WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    async fn content_caches(&self) -> Result<(Vec<ContentCacheRow>, i64)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLS} FROM content_caches ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        let now: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {DB_NOW_MS}")))
            .fetch_one(&self.pool)
            .await?;
        Ok((rows.iter().map(row).collect::<Result<Vec<_>>>()?, now))
    }

    async fn content_cache_by_token(&self, token_hash: &str) -> Result<Option<ContentCacheRow>> {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLS} FROM content_caches WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(row)
        .transpose()
    }

    async fn content_cache_heartbeat(&self, name: &str, report: &str) -> Result<bool> {
        Ok(sqlx::query(AssertSqlSafe(format!(
            "UPDATE content_caches SET heartbeat_at = {DB_NOW_MS}, report = $1 WHERE name = $2"
        )))
        .bind(report)
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn choose_content_cache(&self, who: Subject, cache: Option<&str>) -> Result<()> {
        let (kind, id) = who.parts();
        match cache {
            None => {
                sqlx::query(
                    "DELETE FROM content_cache_choices WHERE subject_kind = $1 AND subject_id = $2",
                )
                .bind(kind)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            Some(cache) => {
                // Inserting through a SELECT of the cache: a cache deleted meanwhile
                // inserts nothing, instead of failing on the foreign key.
                let n = sqlx::query(
                    "INSERT INTO content_cache_choices (subject_kind, subject_id, cache)
                     SELECT $1, $2, name FROM content_caches WHERE name = $3
                     ON CONFLICT (subject_kind, subject_id) DO UPDATE SET cache = excluded.cache",
                )
                .bind(kind)
                .bind(id)
                .bind(cache)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(MetaError::Conflict(format!(
                        "no content cache is called {cache:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn content_cache_choice(&self, who: Subject) -> Result<Option<String>> {
        let (kind, id) = who.parts();
        Ok(sqlx::query_scalar(
            "SELECT cache FROM content_cache_choices WHERE subject_kind = $1 AND subject_id = $2",
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn content_cache_routes(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(ROUTES).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
