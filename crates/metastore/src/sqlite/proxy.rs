//! [`ProxyStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use wharf_oci::{Digest, RepoName, Tag};

use super::{parse, SqliteMetaStore};
use crate::proxy::{ProxiedManifest, ProxyConfig, ProxyStore};
use crate::{MetaError, Result};

const COLUMNS: &str = "prefix, upstreams, username, password, revalidate_secs, max_bytes, max_idle_days, created_at, updated_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ProxyConfig> {
    let upstreams: String = r.get(1)?;
    Ok(ProxyConfig {
        prefix: r.get(0)?,
        upstreams: serde_json::from_str(&upstreams).unwrap_or_default(),
        username: r.get(2)?,
        password: r.get(3)?,
        revalidate_secs: r.get::<_, i64>(4)? as u64,
        max_bytes: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        max_idle_days: r.get::<_, Option<i64>>(6)?.map(|v| v as u32),
        created_at_ms: r.get(7)?,
        updated_at_ms: r.get(8)?,
    })
}

#[async_trait]
impl ProxyStore for SqliteMetaStore {
    async fn proxies(&self) -> Result<Vec<ProxyConfig>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {COLUMNS} FROM proxies ORDER BY prefix"))?;
            let rows = st.query_map([], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_proxy(&self, p: &ProxyConfig) -> Result<()> {
        let p = p.clone();
        self.write(move |tx| {
            let n = tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO proxies ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                params![
                    p.prefix,
                    serde_json::to_string(&p.upstreams).expect("strings serialise"),
                    p.username,
                    p.password,
                    p.revalidate_secs as i64,
                    p.max_bytes.map(|v| v as i64),
                    p.max_idle_days.map(i64::from),
                    p.created_at_ms,
                    p.updated_at_ms
                ],
            )?;
            if n == 0 {
                return Err(MetaError::Conflict(format!(
                    "a proxy of prefix {:?} exists already",
                    p.prefix
                )));
            }
            Ok(())
        })
        .await
    }

    async fn update_proxy(&self, p: &ProxyConfig) -> Result<bool> {
        let p = p.clone();
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE proxies SET upstreams = ?, username = ?, password = ?, revalidate_secs = ?, max_bytes = ?,
                        max_idle_days = ?, updated_at = ? WHERE prefix = ?",
                params![
                    serde_json::to_string(&p.upstreams).expect("strings serialise"),
                    p.username,
                    p.password,
                    p.revalidate_secs as i64,
                    p.max_bytes.map(|v| v as i64),
                    p.max_idle_days.map(i64::from),
                    p.updated_at_ms,
                    p.prefix
                ],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_proxy(&self, prefix: &str) -> Result<bool> {
        let prefix = prefix.to_string();
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM proxies WHERE prefix = ?", [&prefix])?;
            tx.execute("DELETE FROM proxy_manifests WHERE prefix = ?", [&prefix])?;
            tx.execute(
                "DELETE FROM proxy_tags WHERE substr(repository, 1, length(?1)) = ?1",
                [&prefix],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn proxy_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(Digest, i64)>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT digest, checked_at FROM proxy_tags WHERE repository = ? AND tag = ?",
            )?
            .query_row(params![repo, tag], |r| Ok((parse(r.get(0)?)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    async fn set_proxy_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        checked_at_ms: i64,
    ) -> Result<()> {
        let (repo, tag, digest) = (repo.to_string(), tag.to_string(), digest.to_string());
        // Relaxed: a lost revalidation time only costs one more HEAD upstream.
        self.write_relaxed(move |tx| {
            tx.prepare_cached(
                "INSERT INTO proxy_tags (repository, tag, digest, checked_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, checked_at = excluded.checked_at",
            )?
            .execute(params![repo, tag, digest, checked_at_ms])?;
            Ok(())
        })
        .await
    }

    async fn touch_proxied_manifest(
        &self,
        prefix: &str,
        repo: &RepoName,
        digest: &Digest,
        bytes: u64,
        at_ms: i64,
    ) -> Result<()> {
        let (prefix, repo, digest) = (prefix.to_string(), repo.to_string(), digest.to_string());
        self.write_relaxed(move |tx| {
            tx.prepare_cached(
                "INSERT INTO proxy_manifests (repository, digest, prefix, bytes, last_used_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (repository, digest) DO UPDATE
                 SET last_used_at = max(last_used_at, excluded.last_used_at), bytes = max(bytes, excluded.bytes)",
            )?
            .execute(params![repo, digest, prefix, bytes as i64, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn proxied_manifests(&self, prefix: &str) -> Result<Vec<ProxiedManifest>> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT repository, digest, bytes, last_used_at FROM proxy_manifests WHERE prefix = ?
                 ORDER BY last_used_at, repository, digest",
            )?;
            let rows = st.query_map([prefix], |r| {
                Ok(ProxiedManifest {
                    repository: parse(r.get(0)?)?,
                    digest: parse(r.get(1)?)?,
                    bytes: r.get::<_, i64>(2)? as u64,
                    last_used_at_ms: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn forget_proxied_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM proxy_manifests WHERE repository = ? AND digest = ?",
                params![repo, digest],
            )?;
            tx.execute(
                "DELETE FROM proxy_tags WHERE repository = ? AND digest = ?",
                params![repo, digest],
            )?;
            Ok(())
        })
        .await
    }
}
