//! [`ContentCacheStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteMetaStore;
use crate::accounts::Subject;
use crate::content_caches::{ContentCacheRow, ContentCacheStore, ROUTES};
use crate::{now_ms, MetaError, Result};

const COLS: &str = "name, url, region, created_at, heartbeat_at, report";

fn row(r: &Row) -> rusqlite::Result<ContentCacheRow> {
    Ok(ContentCacheRow {
        name: r.get(0)?,
        url: r.get(1)?,
        region: r.get(2)?,
        created_at_ms: r.get(3)?,
        heartbeat_at_ms: r.get(4)?,
        report: r.get(5)?,
    })
}

#[async_trait]
impl ContentCacheStore for SqliteMetaStore {
    async fn create_content_cache(
        &self,
        name: &str,
        url: &str,
        region: &str,
        token_hash: &str,
    ) -> Result<ContentCacheRow> {
        let (name, url, region, hash) = (
            name.to_string(),
            url.to_string(),
            region.to_string(),
            token_hash.to_string(),
        );
        self.write(move |tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM content_caches WHERE name = ?)",
                [&name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(MetaError::Conflict(format!(
                    "a content cache is already called {name:?}"
                )));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO content_caches (name, url, region, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                params![name, url, region, hash, now],
            )?;
            Ok(ContentCacheRow {
                name,
                url,
                region,
                created_at_ms: now,
                heartbeat_at_ms: None,
                report: None,
            })
        })
        .await
    }

    async fn update_content_cache(&self, name: &str, url: &str, region: &str) -> Result<bool> {
        let (name, url, region) = (name.to_string(), url.to_string(), region.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE content_caches SET url = ?, region = ? WHERE name = ?",
                params![url, region, name],
            )? == 1)
        })
        .await
    }

    async fn set_content_cache_token(&self, name: &str, token_hash: &str) -> Result<bool> {
        let (name, hash) = (name.to_string(), token_hash.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE content_caches SET token_hash = ? WHERE name = ?",
                params![hash, name],
            )? == 1)
        })
        .await
    }

    async fn delete_content_cache(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM content_cache_choices WHERE cache = ?", [&name])?;
            Ok(tx.execute("DELETE FROM content_caches WHERE name = ?", [&name])? == 1)
        })
        .await
    }

    async fn content_caches(&self) -> Result<(Vec<ContentCacheRow>, i64)> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {COLS} FROM content_caches ORDER BY name"))?;
            let rows = st
                .query_map([], row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, now_ms()))
        })
        .await
    }

    async fn content_cache_by_token(&self, token_hash: &str) -> Result<Option<ContentCacheRow>> {
        let hash = token_hash.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLS} FROM content_caches WHERE token_hash = ?"
            ))?
            .query_row([hash], row)
            .optional()?)
        })
        .await
    }

    async fn content_cache_heartbeat(&self, name: &str, report: &str) -> Result<bool> {
        let (name, report) = (name.to_string(), report.to_string());
        // Relaxed: a lost heartbeat is replaced by the next one.
        self.write_relaxed(move |tx| {
            Ok(tx.execute(
                "UPDATE content_caches SET heartbeat_at = ?, report = ? WHERE name = ?",
                params![now_ms(), report, name],
            )? == 1)
        })
        .await
    }

    async fn choose_content_cache(&self, who: Subject, cache: Option<&str>) -> Result<()> {
        let (kind, id) = who.parts();
        let cache = cache.map(str::to_string);
        self.write(move |tx| {
            match cache {
                None => {
                    tx.execute(
                        "DELETE FROM content_cache_choices WHERE subject_kind = ? AND subject_id = ?",
                        params![kind, id],
                    )?;
                }
                Some(cache) => {
                    let exists: bool = tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM content_caches WHERE name = ?)",
                        [&cache],
                        |r| r.get(0),
                    )?;
                    if !exists {
                        return Err(MetaError::Conflict(format!("no content cache is called {cache:?}")));
                    }
                    tx.execute(
                        "INSERT INTO content_cache_choices (subject_kind, subject_id, cache) VALUES (?, ?, ?)
                         ON CONFLICT (subject_kind, subject_id) DO UPDATE SET cache = excluded.cache",
                        params![kind, id, cache],
                    )?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn content_cache_choice(&self, who: Subject) -> Result<Option<String>> {
        let (kind, id) = who.parts();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT cache FROM content_cache_choices WHERE subject_kind = ? AND subject_id = ?",
            )?
            .query_row(params![kind, id], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn content_cache_routes(&self) -> Result<Vec<(i64, String)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(ROUTES)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
