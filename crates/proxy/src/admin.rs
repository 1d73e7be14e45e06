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
