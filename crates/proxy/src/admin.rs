//! Adding, changing and removing proxies, and their retention: shared by the
//! management API, the CLI and the `proxy_retention` job.

use serde::{Deserialize, Serialize};
use wharf_metastore::jobs::Cron;
use wharf_metastore::{now_ms, MetaError, MetaStore, ProxyConfig};
use wharf_oci::RepoName;

/// The revalidation interval of a proxy that does not name one.
pub const DEFAULT_REVALIDATE_SECS: u64 = 60;
/// The name (and action) of the schedule that enforces retention.
pub const RETENTION_SCHEDULE: &str = "proxy_retention";
/// Retention runs every 15 minutes.
pub const RETENTION_CRON: &str = "*/15 * * * *";

/// A proxy as an administrator describes it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Upstream registry base URLs (`https://registry-1.docker.io`), tried in order.
    pub upstreams: Vec<String>,
    pub username: Option<String>,
    /// Stored, used upstream, never shown.
    pub password: Option<String>,
    /// How often a tag is revalidated upstream, in seconds [default: 60].
    pub revalidate_secs: Option<u64>,
    /// Retention: least-recently-used images go above this many bytes.
    pub max_bytes: Option<u64>,
    /// Retention: images unused for this many days go.
    pub max_idle_days: Option<u32>,
}

/// A proxy as shown: everything but the password.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyView {
    pub prefix: String,
    pub upstreams: Vec<String>,
    pub username: Option<String>,
    pub has_password: bool,
    pub revalidate_secs: u64,
    pub max_bytes: Option<u64>,
    pub max_idle_days: Option<u32>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&ProxyConfig> for ProxyView {
    fn from(p: &ProxyConfig) -> Self {
        ProxyView {
            prefix: p.prefix.clone(),
            upstreams: p.upstreams.clone(),
            username: p.username.clone(),
            has_password: p.password.is_some(),
            revalidate_secs: p.revalidate_secs,
            max_bytes: p.max_bytes,
            max_idle_days: p.max_idle_days,
            created_at_ms: p.created_at_ms,
            updated_at_ms: p.updated_at_ms,
        }
    }
}

/// `hub`, `hub/` or `mirrors/hub` → `hub/`, `mirrors/hub/`; an error says what is wrong.
pub fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim().trim_end_matches('/');
    if trimmed.is_empty() || trimmed.parse::<RepoName>().is_err() {
        return Err(format!(
            "proxy prefix {prefix:?} is not a repository-name prefix (lower-case path components, e.g. \"hub/\")"
        ));
    }
    Ok(format!("{trimmed}/"))
}

/// Checks a spec and makes the proxy it describes.
pub fn config_from(prefix: &str, spec: ProxySpec, now: i64) -> Result<ProxyConfig, String> {
    let prefix = normalise_prefix(prefix)?;
    if spec.upstreams.is_empty() {
        return Err("a proxy needs at least one upstream URL".into());
    }
    let mut upstreams = Vec::new();
    for u in &spec.upstreams {
        let u = u.trim().trim_end_matches('/');
        let parsed =
            reqwest::Url::parse(u).map_err(|e| format!("upstream {u:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("upstream {u:?} must be an http:// or https:// URL"));
        }
        upstreams.push(u.to_string());
    }
    if spec.password.is_some() && spec.username.is_none() {
        return Err("a password needs a username".into());
    }
    let revalidate_secs = spec.revalidate_secs.unwrap_or(DEFAULT_REVALIDATE_SECS);
    if revalidate_secs == 0 {
        return Err("revalidate_secs must be at least 1".into());
    }
    Ok(ProxyConfig {
        prefix,
        upstreams,
        username: spec.username,
        password: spec.password,
        revalidate_secs,
        max_bytes: spec.max_bytes,
        max_idle_days: spec.max_idle_days,
        created_at_ms: now,
        updated_at_ms: now,
    })
}

/// Why `p` cannot be added: a prefix inside or around another proxy's.
pub fn overlap(p: &ProxyConfig, existing: &[ProxyConfig]) -> Option<String> {
    existing
        .iter()
        .find(|e| {
            e.prefix != p.prefix
                && (e.prefix.starts_with(&p.prefix) || p.prefix.starts_with(&e.prefix))
        })
        .map(|e| format!("prefix {} overlaps the proxy {}", p.prefix, e.prefix))
}

/// Makes sure the retention schedule exists (it is created with the first proxy, so
/// registries without proxies run no such job). An operator's changes to it are kept.
pub async fn ensure_retention_schedule(meta: &dyn MetaStore) -> Result<(), MetaError> {
    if meta
        .crons()
        .await?
        .iter()
        .any(|c| c.name == RETENTION_SCHEDULE)
    {
        return Ok(());
    }
    let now = meta.store_now().await?;
    meta.put_cron(&Cron {
        name: RETENTION_SCHEDULE.into(),
        action: RETENTION_SCHEDULE.into(),
        params: "{}".into(),
        schedule: RETENTION_CRON.into(),
        run_for_minutes: None,
        enabled: true,
        // Due at the next quarter hour.
        next_run_at_ms: now + 15 * 60_000 - now % (15 * 60_000),
        last_job_id: None,
    })
    .await
}

/// What a retention pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub images: u64,
    pub bytes: u64,
}

/// Evicts, from every proxy, images unused for longer than its idle bound, then the
/// least recently used ones until it holds no more than its size bound. An evicted
/// manifest is deleted with its tags; garbage collection then reclaims the blobs nothing
/// else refers to (after its grace period, as for any deletion). `log` hears each one.
pub async fn enforce_retention(
    meta: &dyn MetaStore,
    mut log: impl FnMut(String),
) -> Result<Evicted, MetaError> {
    let now = now_ms();
    let mut total = Evicted::default();
    for p in meta.proxies().await? {
        let held = meta.proxied_manifests(&p.prefix).await?;
        let mut size: u64 = held.iter().map(|m| m.bytes).sum();
        let idle_before = p.max_idle_days.map(|d| now - i64::from(d) * 86_400_000);
        for m in held {
            let idle = idle_before.is_some_and(|cut| m.last_used_at_ms < cut);
            let over = p.max_bytes.is_some_and(|max| size > max);
            if !idle && !over {
                // Least recently used first: the rest were used later, and the size
                // only goes down.
                break;
            }
            meta.delete_manifest(&m.repository, &m.digest).await?;
            meta.forget_proxied_manifest(&m.repository, &m.digest)
                .await?;
            size = size.saturating_sub(m.bytes);
            total.images += 1;
            total.bytes += m.bytes;
            log(format!(
                "{}: evicted {}@{} ({} bytes, {})",
                p.prefix,
                m.repository,
                m.digest,
                m.bytes,
                if idle {
                    "idle too long"
                } else {
                    "over the size bound"
                }
            ));
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_metastore::{ProxyStore, SqliteMetaStore};
    use wharf_oci::Digest;

    fn proxy(prefix: &str, max_bytes: Option<u64>, max_idle_days: Option<u32>) -> ProxyConfig {
        let spec = ProxySpec {
            upstreams: vec!["http://127.0.0.1:1".into()],
            username: None,
            password: None,
            revalidate_secs: None,
            max_bytes,
            max_idle_days,
        };
        config_from(prefix, spec, 0).unwrap()
    }

    #[test]
    fn specs_are_checked() {
        assert_eq!(proxy("hub", None, None).prefix, "hub/");
        assert_eq!(
            proxy("hub", None, None).revalidate_secs,
            DEFAULT_REVALIDATE_SECS
        );
        let bad = |prefix: &str, upstream: &str| {
            let spec = ProxySpec {
                upstreams: vec![upstream.into()],
                username: None,
                password: None,
                revalidate_secs: None,
                max_bytes: None,
                max_idle_days: None,
            };
            config_from(prefix, spec, 0).unwrap_err()
        };
        assert!(bad("Hub", "http://x").contains("not a repository-name prefix"));
        assert!(bad("hub", "ftp://x").contains("http:// or https://"));
        assert!(bad("hub", "nonsense").contains("not a URL"));
        let a = proxy("hub", None, None);
        assert!(overlap(&proxy("hub/library", None, None), std::slice::from_ref(&a)).is_some());
        assert!(overlap(&proxy("hubble", None, None), &[a]).is_none());
    }

    #[tokio::test]
    async fn retention_evicts_idle_then_least_recently_used_images() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SqliteMetaStore::open(dir.path().join("m.db"))
            .await
            .unwrap();
        meta.create_proxy(&proxy("idle", None, Some(1)))
            .await
            .unwrap();
        meta.create_proxy(&proxy("full", Some(250), None))
            .await
            .unwrap();
        let day = 86_400_000;
        let now = now_ms();
        let r: RepoName = "idle/a".parse().unwrap();
        let (old, recent) = (Digest::sha256_of(b"old"), Digest::sha256_of(b"recent"));
        meta.touch_proxied_manifest("idle/", &r, &old, 10, now - 2 * day)
            .await
            .unwrap();
        meta.touch_proxied_manifest("idle/", &r, &recent, 10, now - day / 2)
            .await
            .unwrap();
        let f: RepoName = "full/a".parse().unwrap();
        let sized: Vec<Digest> = (0..3u8).map(|i| Digest::sha256_of(&[i])).collect();
        for (i, d) in sized.iter().enumerate() {
            meta.touch_proxied_manifest("full/", &f, d, 100, now - 1000 + i as i64)
                .await
                .unwrap();
        }
        let mut lines = Vec::new();
        let evicted = enforce_retention(&meta, |l| lines.push(l)).await.unwrap();
        assert_eq!(
            evicted,
            Evicted {
                images: 2,
                bytes: 110
            },
            "{lines:?}"
        );
        let left = |p: &'static str| {
            let meta = &meta;
            async move {
                meta.proxied_manifests(p)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.digest)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(left("idle/").await, vec![recent]);
        assert_eq!(
            left("full/").await,
            sized[1..].to_vec(),
            "the least recently used went"
        );
    }
}
