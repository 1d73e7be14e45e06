//! [`ProxyStore`] on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use wharf_oci::{Digest, RepoName, Tag};

use super::{parse, PgMetaStore};
use crate::proxy::{ProxiedManifest, ProxyConfig, ProxyStore};
use crate::{MetaError, Result};

const COLUMNS: &str = "prefix, upstreams, username, password, revalidate_secs, max_bytes, max_idle_days, created_at, updated_at";

fn row(r: &PgRow) -> Result<ProxyConfig> {
    let upstreams: String = r.try_get(1)?;
    Ok(ProxyConfig {
        prefix: r.try_get(0)?,
        upstreams: serde_json::from_str(&upstreams)
            .map_err(|e| MetaError::Backend(format!("stored upstreams {upstreams:?}: {e}")))?,
        username: r.try_get(2)?,
        password: r.try_get(3)?,
        revalidate_secs: r.try_get::<i64, _>(4)? as u64,
        max_bytes: r.try_get::<Option<i64>, _>(5)?.map(|v| v as u64),
        max_idle_days: r.try_get::<Option<i64>, _>(6)?.map(|v| v as u32),
        created_at_ms: r.try_get(7)?,
        updated_at_ms: r.try_get(8)?,
    })
}

#[async_trait]
impl ProxyStore for PgMetaStore {
    async fn proxies(&self) -> Result<Vec<ProxyConfig>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM proxies ORDER BY prefix"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    async fn create_proxy(&self, p: &ProxyConfig) -> Result<()> {
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO proxies ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (prefix) DO NOTHING"
        )))
        .bind(&p.prefix)
        .bind(serde_json::to_string(&p.upstreams).expect("strings serialise"))
        .bind(&p.username)
        .bind(&p.password)
        .bind(p.revalidate_secs as i64)
        .bind(p.max_bytes.map(|v| v as i64))
        .bind(p.max_idle_days.map(i64::from))
        .bind(p.created_at_ms)
        .bind(p.updated_at_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(MetaError::Conflict(format!(
                "a proxy of prefix {:?} exists already",
                p.prefix
            )));
        }
        Ok(())
    }

    async fn update_proxy(&self, p: &ProxyConfig) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE proxies SET upstreams = $1, username = $2, password = $3, revalidate_secs = $4, max_bytes = $5,
                    max_idle_days = $6, updated_at = $7 WHERE prefix = $8",
        )
        .bind(serde_json::to_string(&p.upstreams).expect("strings serialise"))
        .bind(&p.username)
        .bind(&p.password)
        .bind(p.revalidate_secs as i64)
        .bind(p.max_bytes.map(|v| v as i64))
        .bind(p.max_idle_days.map(i64::from))
        .bind(p.updated_at_ms)
        .bind(&p.prefix)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_proxy(&self, prefix: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM proxies WHERE prefix = $1")
            .bind(prefix)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM proxy_manifests WHERE prefix = $1")
            .bind(prefix)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM proxy_tags WHERE left(repository, length($1)) = $1")
            .bind(prefix)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn proxy_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(Digest, i64)>> {
        let r: Option<(String, i64)> = sqlx::query_as(
            "SELECT digest, checked_at FROM proxy_tags WHERE repository = $1 AND tag = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        r.map(|(d, at)| Ok((parse(d)?, at))).transpose()
    }

    async fn set_proxy_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        checked_at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO proxy_tags (repository, tag, digest, checked_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(digest.to_string())
        .bind(checked_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_proxied_manifest(
        &self,
        prefix: &str,
        repo: &RepoName,
        digest: &Digest,
        bytes: u64,
        at_ms: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO proxy_manifests (repository, digest, prefix, bytes, last_used_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (repository, digest) DO UPDATE
             SET last_used_at = GREATEST(proxy_manifests.last_used_at, excluded.last_used_at),
                 bytes = GREATEST(proxy_manifests.bytes, excluded.bytes)",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .bind(prefix)
        .bind(bytes as i64)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn proxied_manifests(&self, prefix: &str) -> Result<Vec<ProxiedManifest>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT repository, digest, bytes, last_used_at FROM proxy_manifests WHERE prefix = $1
             ORDER BY last_used_at, repository, digest",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(r, d, bytes, at)| {
                Ok(ProxiedManifest {
                    repository: parse(r)?,
                    digest: parse(d)?,
                    bytes: bytes as u64,
                    last_used_at_ms: at,
                })
            })
            .collect()
    }

    async fn forget_proxied_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM proxy_manifests WHERE repository = $1 AND digest = $2",
            "DELETE FROM proxy_tags WHERE repository = $1 AND digest = $2",
        ] {
            sqlx::query(sql)
                .bind(repo.as_str())
                .bind(digest.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
