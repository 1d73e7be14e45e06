//! Replicas in the cluster: each `serve` process registers itself and heartbeats;
//! `GET /api/v0/meta/cluster_status` and `wharf cluster status` show every replica's
//! health and the cluster's current issues.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use wharf_metastore::scan::VulndbVersion;
use wharf_metastore::{now_ms, MetaStore, ReplicaReport, ReplicaRow};

/// When a replica counts as gone, and what counts as a problem.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A replica silent for this many of its own heartbeat intervals is dead.
    pub dead_after_intervals: i64,
    /// A dead replica is forgotten after this long.
    pub expire_after: Duration,
    /// Largest tolerated difference between a replica's clock and the store's.
    pub max_clock_drift: Duration,
    /// Less free disk than this fraction is a problem.
    pub min_free_disk_fraction: f64,
    /// A vulnerability database older than this is a problem (`vulndb_stale_after_secs`).
    pub vulndb_stale_after: Duration,
}

impl Thresholds {
    pub fn for_interval(heartbeat: Duration) -> Thresholds {
        Thresholds {
            dead_after_intervals: 3,
            expire_after: Duration::from_secs(600).max(heartbeat * 10),
            max_clock_drift: Duration::from_secs(1),
            min_free_disk_fraction: 0.05,
            vulndb_stale_after: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// With the configured age after which the vulnerability database is stale.
    pub fn with_vulndb_stale_after(mut self, stale_after: Duration) -> Thresholds {
        self.vulndb_stale_after = stale_after;
        self
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicaView {
    #[serde(flatten)]
    pub row: ReplicaRow,
    pub healthy: bool,
    /// Milliseconds since the last heartbeat, by the store's clock.
    pub silent_for_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Issue {
    pub critical: bool,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    pub replicas: Vec<ReplicaView>,
    /// The registered content caches.
    pub caches: Vec<crate::content_cache::CacheView>,
    /// Empty when all is well.
    pub issues: Vec<Issue>,
    /// The pull-through proxy repositories and what each holds.
    pub proxies: Vec<ProxyStatus>,
}

/// A pull-through proxy, as `cluster_status` shows it (never its password).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProxyStatus {
    /// Repository-name prefix, ending in `/`.
    pub prefix: String,
    /// Upstream registries, tried in order.
    pub upstreams: Vec<String>,
    pub username: Option<String>,
    pub revalidate_secs: u64,
    pub max_bytes: Option<u64>,
    pub max_idle_days: Option<u32>,
    /// Manifests the proxy stored and has not evicted.
    pub images: u64,
    /// Their bytes (manifests with the blobs they name).
    pub bytes: u64,
}

/// Judges the registered replicas at the store's time `now`.
pub fn assess(rows: Vec<ReplicaRow>, now: i64, t: &Thresholds) -> ClusterStatus {
    let mut issues = Vec::new();
    let mut replicas = Vec::new();
    let is_alive = |row: &ReplicaRow| {
        now - row.heartbeat_at_ms
            <= t.dead_after_intervals * row.report.heartbeat_interval_ms.max(1000)
    };
    // A dead replica whose address a replica started after it now serves was replaced
    // (restarted after a crash, or by an upgrade): nothing is missing there.
    let replaced = |row: &ReplicaRow| {
        rows.iter().any(|other| {
            other.report.id != row.report.id
                && other.report.address == row.report.address
                && other.report.started_at_ms > row.report.started_at_ms
                && is_alive(other)
        })
    };
    for row in rows.iter().cloned() {
        let r = &row.report;
        let silent = now - row.heartbeat_at_ms;
        let alive = is_alive(&row);
        let mut healthy = alive;
        if !alive && replaced(&row) {
            issues.push(Issue {
                critical: false,
                description: format!(
                    "replica {} ({}) stopped reporting {} s ago; a newer replica serves its address",
                    r.id,
                    r.address,
                    silent / 1000
                ),
            });
        } else if !alive {
            issues.push(Issue {
                critical: true,
                description: format!(
                    "replica {} ({}) has not reported for {} s",
                    r.id,
                    r.address,
                    silent / 1000
                ),
            });
        } else {
            // The clock difference as seen when the heartbeat arrived.
            let drift = (r.clock_ms - row.heartbeat_at_ms).abs();
            if drift > t.max_clock_drift.as_millis() as i64 {
                healthy = false;
                issues.push(Issue {
                    critical: true,
                    description: format!(
                        "replica {} clock is off by {drift} ms from the metadata store's",
                        r.id
                    ),
                });
            }
            if r.disk_total_bytes > 0
                && (r.disk_free_bytes as f64) < t.min_free_disk_fraction * r.disk_total_bytes as f64
            {
                healthy = false;
                issues.push(Issue {
                    critical: false,
                    description: format!(
                        "replica {} has {} MiB of {} MiB disk free",
                        r.id,
                        r.disk_free_bytes >> 20,
                        r.disk_total_bytes >> 20
                    ),
                });
            }
        }
        replicas.push(ReplicaView {
            row,
            healthy,
            silent_for_ms: silent,
        });
    }
    let mut versions: Vec<&str> = replicas
        .iter()
        .filter(|v| {
            v.silent_for_ms <= t.dead_after_intervals * v.row.report.heartbeat_interval_ms.max(1000)
        })
        .map(|v| v.row.report.version.as_str())
        .collect();
    versions.sort();
    versions.dedup();
    if versions.len() > 1 {
        issues.push(Issue {
            critical: false,
            description: format!("replicas run different versions: {}", versions.join(", ")),
        });
    }
    ClusterStatus {
        replicas,
        caches: Vec::new(),
        issues,
        proxies: Vec::new(),
    }
}

/// What the cluster status needs to know of the vulnerability database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VulndbFacts {
    /// Images have been scanned (the registry holds packages from inventories).
    pub scanning_in_use: bool,
    /// The version in use.
    pub current: Option<VulndbVersion>,
    /// The newest update or import, whatever its outcome.
    pub latest: Option<VulndbVersion>,
}

impl VulndbFacts {
    /// Reads them from the store.
    pub async fn read(meta: &dyn MetaStore) -> wharf_metastore::Result<VulndbFacts> {
        Ok(VulndbFacts {
            scanning_in_use: !meta.packages_page(0, 1).await?.is_empty(),
            current: meta.current_vulndb().await?,
            latest: meta.vulndb_versions(1).await?.into_iter().next(),
        })
    }
}

/// The vulnerability database's issues at the store's time `now`: none imported while
/// images are scanned, the current one older than the threshold, the latest update or
/// import failed. Warnings, not critical: the registry serves, its findings are old.
pub fn assess_vulndb(facts: &VulndbFacts, now: i64, t: &Thresholds) -> Vec<Issue> {
    let mut issues = Vec::new();
    let warn = |description: String| Issue {
        critical: false,
        description,
    };
    match &facts.current {
        None if facts.scanning_in_use || facts.latest.is_some() => issues.push(warn(
            "no vulnerability database has been imported: scanned images show no vulnerabilities; set vulndb_url for the online update, or import one with `wharf vulndb import PATH`".into(),
        )),
        None => {}
        Some(v) => {
            let at = v.finished_at_ms.unwrap_or(v.started_at_ms);
            let age = now - at;
            if age > t.vulndb_stale_after.as_millis() as i64 {
                issues.push(warn(format!(
                    "the vulnerability database is stale: version {} from {} was imported {} ago (more than {}); newer advisories are not matched",
                    v.id,
                    v.source,
                    age_text(age),
                    age_text(t.vulndb_stale_after.as_millis() as i64)
                )));
            }
        }
    }
    if let Some(v) = facts.latest.as_ref().filter(|v| v.status == "failed") {
        issues.push(warn(format!(
            "the latest vulnerability database update failed (version {} from {}): {}; the database in use is {}",
            v.id,
            v.source,
            v.error.as_deref().unwrap_or("no error recorded"),
            facts
                .current
                .as_ref()
                .map_or("none".to_string(), |c| format!("version {}", c.id))
        )));
    }
    issues
}

/// `12 days`, `5 hours`, `3 minutes`.
fn age_text(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        s if s >= 2 * 86400 => format!("{} days", s / 86400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s if s >= 120 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The whole status as the API, `wharf cluster status` and the web UI show it: the
/// replicas ([`assess`]) and the vulnerability database ([`assess_vulndb`]).
pub async fn cluster_status(
    meta: &dyn MetaStore,
    t: &Thresholds,
) -> wharf_metastore::Result<ClusterStatus> {
    let (rows, now) = meta.replicas().await?;
    let facts = VulndbFacts::read(meta).await?;
    let mut status = assess(rows, now, t);
    status.issues.extend(assess_vulndb(&facts, now, t));
    // A store without the caches' table (a rollback window) has none to show.
    status.caches = crate::content_cache::cache_views(meta)
        .await
        .unwrap_or_default();
    status
        .issues
        .extend(assess_caches(&status.replicas, &status.caches));
    status.proxies = proxy_status(meta).await?;
    Ok(status)
}

/// A cache that stopped reporting, or runs another version than the replicas: its
/// users are served by the registry meanwhile, so neither is critical.
pub fn assess_caches(
    replicas: &[ReplicaView],
    caches: &[crate::content_cache::CacheView],
) -> Vec<Issue> {
    let versions: Vec<&str> = replicas
        .iter()
        .filter(|r| r.healthy)
        .map(|r| r.row.report.version.as_str())
        .collect();
    let mut issues = Vec::new();
    for c in caches {
        match c.state.as_str() {
            "silent" => issues.push(Issue {
                critical: false,
                description: format!(
                    "content cache {} ({}) has not reported for {} s; its users download from the registry",
                    c.name,
                    c.url,
                    c.silent_for_ms.unwrap_or(0) / 1000
                ),
            }),
            "unseen" => issues.push(Issue {
                critical: false,
                description: format!(
                    "content cache {} ({}) is registered but has never reported; start it with its token",
                    c.name, c.url
                ),
            }),
            _ => {}
        }
        if let Some(v) = &c.version {
            if c.state != "silent" && !versions.is_empty() && !versions.contains(&v.as_str()) {
                issues.push(Issue {
                    critical: false,
                    description: format!(
                        "content cache {} runs {v}, the replicas {}: upgrade it with the cluster",
                        c.name,
                        versions.join(", ")
                    ),
                });
            }
        }
    }
    issues
}

/// Every proxy with its settings and what it holds now.
pub async fn proxy_status(meta: &dyn MetaStore) -> wharf_metastore::Result<Vec<ProxyStatus>> {
    let mut out = Vec::new();
    for p in meta.proxies().await? {
        let held = meta.proxied_manifests(&p.prefix).await?;
        out.push(ProxyStatus {
            images: held.len() as u64,
            bytes: held.iter().map(|m| m.bytes).sum(),
            prefix: p.prefix,
            upstreams: p.upstreams,
            username: p.username,
            revalidate_secs: p.revalidate_secs,
            max_bytes: p.max_bytes,
            max_idle_days: p.max_idle_days,
        });
    }
    Ok(out)
}

/// Free and total bytes of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return (0, 0);
    }
    let frsize = s.f_frsize as u64;
    (s.f_bavail as u64 * frsize, s.f_blocks as u64 * frsize)
}

pub fn memory_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// This replica's identity and the heartbeat loop that keeps it registered.
pub struct Membership {
    pub id: String,
    address: String,
    version: String,
    schema_level: u32,
    started_at_ms: i64,
    data_dir: std::path::PathBuf,
    interval: Duration,
}

impl Membership {
    pub fn new(
        address: String,
        version: &str,
        schema_level: u32,
        data_dir: &Path,
        interval: Duration,
    ) -> Membership {
        let id = format!("{}-{}", hostname(), &uuid_hex()[..8]);
        Membership {
            id,
            address,
            version: version.into(),
            schema_level,
            started_at_ms: now_ms(),
            data_dir: data_dir.to_path_buf(),
            interval,
        }
    }

    fn report(&self) -> ReplicaReport {
        let (free, total) = disk_space(&self.data_dir);
        ReplicaReport {
            id: self.id.clone(),
            address: self.address.clone(),
            version: self.version.clone(),
            schema_level: self.schema_level,
            started_at_ms: self.started_at_ms,
            clock_ms: now_ms(),
            disk_free_bytes: free,
            disk_total_bytes: total,
            memory_available_bytes: memory_available(),
            heartbeat_interval_ms: self.interval.as_millis() as i64,
        }
    }

    /// Heartbeats every `interval` until the task is dropped, and forgets replicas
    /// dead for longer than the expiry. Errors are logged; the next beat retries.
    pub async fn run(self: Arc<Self>, store: Arc<dyn MetaStore>) {
        let thresholds = Thresholds::for_interval(self.interval);
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tick.tick().await;
            if let Err(e) = store.heartbeat(&self.report()).await {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
            // By the store's clock, which stamps every heartbeat: a replica whose own
            // clock runs ahead must not take the others for dead.
            let now = match store.store_now().await {
                Ok(now) => now,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the store's clock");
                    continue;
                }
            };
            let cutoff = now - thresholds.expire_after.as_millis() as i64;
            match store.expire_replicas(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "forgot replicas that stopped reporting"),
                Err(e) => tracing::warn!(error = %e, "could not expire dead replicas"),
            }
        }
    }

    /// First registration, before serving, so a failure stops the start.
    pub async fn register(&self, store: &dyn MetaStore) -> wharf_metastore::Result<()> {
        store.heartbeat(&self.report()).await
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into())
}

fn uuid_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, version: &str, heartbeat: i64, clock: i64, free: u64) -> ReplicaRow {
        ReplicaRow {
            report: ReplicaReport {
                id: id.into(),
                address: "127.0.0.1:5000".into(),
                version: version.into(),
                schema_level: 1,
                started_at_ms: 0,
                clock_ms: clock,
                disk_free_bytes: free,
                disk_total_bytes: 1000,
                memory_available_bytes: 1,
                heartbeat_interval_ms: 5000,
            },
            heartbeat_at_ms: heartbeat,
        }
    }

    #[test]
    fn a_dead_replica_replaced_at_its_address_is_not_critical() {
        let t = Thresholds::for_interval(Duration::from_secs(5));
        let mut again = row("again", "1.1.0", 100_000, 100_000, 500);
        again.report.started_at_ms = 50_000;
        let mut elsewhere = row("elsewhere", "1.0.0", 0, 0, 500);
        elsewhere.report.address = "127.0.0.1:5001".into();
        let s = assess(
            vec![row("killed", "1.0.0", 0, 0, 500), again, elsewhere],
            101_000,
            &t,
        );
        let d: Vec<(bool, &str)> = s
            .issues
            .iter()
            .map(|i| (i.critical, i.description.as_str()))
            .collect();
        assert!(
            d.iter().any(|(c, t)| !*c
                && t.contains("killed")
                && t.contains("a newer replica serves its address")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|(c, t)| *c && t.contains("elsewhere")),
            "a dead replica nobody replaced stays critical: {d:?}"
        );
    }

    fn version(id: i64, status: &str, at: i64, error: Option<&str>) -> VulndbVersion {
        VulndbVersion {
            id,
            source: "https://osv.example".into(),
            started_at_ms: at,
            finished_at_ms: Some(at),
            status: status.into(),
            records: Some(10),
            ecosystems_json: None,
            validators_json: None,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn vulndb_missing_stale_and_failed_are_warnings() {
        const DAY: i64 = 86_400_000;
        let t = Thresholds::for_interval(Duration::from_secs(5))
            .with_vulndb_stale_after(Duration::from_secs(7 * 86_400));
        let now = 30 * DAY;
        // No scanning, no database: nothing to say.
        assert!(assess_vulndb(&VulndbFacts::default(), now, &t).is_empty());
        // Images scanned, no database.
        let issues = assess_vulndb(
            &VulndbFacts {
                scanning_in_use: true,
                ..VulndbFacts::default()
            },
            now,
            &t,
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(!issues[0].critical);
        assert!(
            issues[0]
                .description
                .starts_with("no vulnerability database has been imported"),
            "{issues:?}"
        );
        // Fresh: nothing.
        let fresh = version(3, "current", now - DAY, None);
        let facts = VulndbFacts {
            scanning_in_use: true,
            current: Some(fresh.clone()),
            latest: Some(fresh),
        };
        assert!(assess_vulndb(&facts, now, &t).is_empty());
        // Ten days old, and the update after it failed.
        let old = version(3, "current", now - 10 * DAY, None);
        let failed = version(
            4,
            "failed",
            now - DAY,
            Some("PyPI: https://osv.example/PyPI/all.zip: the server answered 503"),
        );
        let issues = assess_vulndb(
            &VulndbFacts {
                scanning_in_use: true,
                current: Some(old),
                latest: Some(failed),
            },
            now,
            &t,
        );
        let d: Vec<&str> = issues.iter().map(|i| i.description.as_str()).collect();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(issues.iter().all(|i| !i.critical));
        assert_eq!(
            d[0],
            "the vulnerability database is stale: version 3 from https://osv.example was imported 10 days ago (more than 7 days); newer advisories are not matched"
        );
        assert_eq!(
            d[1],
            "the latest vulnerability database update failed (version 4 from https://osv.example): PyPI: https://osv.example/PyPI/all.zip: the server answered 503; the database in use is version 3"
        );
    }

    #[test]
    fn healthy_cluster_has_no_issues() {
        let t = Thresholds::for_interval(Duration::from_secs(5));
        let s = assess(
            vec![
                row("a", "1.0.0", 10_000, 10_000, 500),
                row("b", "1.0.0", 9_000, 9_100, 500),
            ],
            12_000,
            &t,
        );
        assert!(s.issues.is_empty(), "{:?}", s.issues);
        assert!(s.replicas.iter().all(|r| r.healthy));
    }

    #[test]
    fn reports_dead_replicas_drift_low_disk_and_mixed_versions() {
        let t = Thresholds::for_interval(Duration::from_secs(5));
        let s = assess(
            vec![
                row("dead", "1.0.0", 0, 0, 500),
                row("drift", "1.0.0", 100_000, 102_500, 500),
                row("full", "1.1.0", 100_000, 100_000, 10),
            ],
            101_000,
            &t,
        );
        let d: Vec<(bool, &str)> = s
            .issues
            .iter()
            .map(|i| (i.critical, i.description.as_str()))
            .collect();
        assert!(
            d.iter()
                .any(|(c, t)| *c && t.contains("dead") && t.contains("101 s")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|(c, t)| *c && t.contains("drift clock is off by 2500 ms")),
            "{d:?}"
        );
        assert!(
            d.iter().any(|(c, t)| !*c && t.contains("full has 0 MiB")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|(_, t)| t.contains("different versions: 1.0.0, 1.1.0")),
            "{d:?}"
        );
        assert!(s.replicas.iter().all(|r| !r.healthy));
    }
}
