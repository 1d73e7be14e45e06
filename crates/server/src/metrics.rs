//! `GET /metrics`: the Prometheus text format, for administrators (basic auth with an
//! access token works for scrapers). Cluster-wide figures from the metadata store: jobs
//! by action and status, workers, what the last garbage collection freed, and the
//! vulnerability scanner's database and results.

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;

use crate::api::{admin, store_error, ApiResult};
use crate::{auth, AppState};

pub async fn metrics(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let meta = st.registry.meta();
    let mut out = String::new();
    let jobs = meta
        .jobs(None, None, None, 1000)
        .await
        .map_err(store_error)?;
    let mut counts = std::collections::BTreeMap::new();
    for j in &jobs {
        *counts
            .entry((j.action.clone(), j.status.as_str()))
            .or_insert(0u64) += 1;
    }
    out.push_str("# HELP wharf_jobs Jobs among the latest 1000, by action and status.\n# TYPE wharf_jobs gauge\n");
    for ((action, status), n) in &counts {
        let _ = writeln!(
            out,
            "wharf_jobs{{action=\"{action}\",status=\"{status}\"}} {n}"
        );
    }
    let (workers, now) = meta.workers().await.map_err(store_error)?;
    let dead_after = 3 * st.settings.job_heartbeat.as_millis() as i64;
    let alive = workers
        .iter()
        .filter(|w| now - w.heartbeat_at_ms <= dead_after)
        .count();
    let _ = writeln!(out, "# HELP wharf_workers_alive Job workers heartbeating.\n# TYPE wharf_workers_alive gauge\nwharf_workers_alive {alive}");
    // The latest finished, real (not dry) GC run.
    let last_gc = jobs.iter().find(|j| {
        j.action == "gc"
            && j.status == wharf_metastore::jobs::JobStatus::Done
            && j.progress
                .as_deref()
                .is_some_and(|p| p.contains("\"dry_run\":false"))
    });
    if let Some(j) = last_gc {
        let report: serde_json::Value =
            serde_json::from_str(j.progress.as_deref().unwrap_or("{}")).unwrap_or_default();
        out.push_str("# HELP wharf_gc_last_run_freed What the latest garbage collection removed.\n# TYPE wharf_gc_last_run_freed gauge\n");
        for kind in ["manifests", "links", "blobs", "bytes"] {
            let n = report["freed"][kind].as_u64().unwrap_or(0);
            let _ = writeln!(out, "wharf_gc_last_run_freed{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP wharf_gc_last_run_finished_seconds When it finished (Unix time).\n# TYPE wharf_gc_last_run_finished_seconds gauge\nwharf_gc_last_run_finished_seconds {}",
            j.finished_at_ms.unwrap_or(0) / 1000
        );
    }
    let pending = meta
        .count_manifests_without_refs()
        .await
        .map_err(store_error)?;
    let _ = writeln!(
        out,
        "# HELP wharf_manifests_without_refs Manifests waiting for metadatastoremigration (GC is off until 0).\n# TYPE wharf_manifests_without_refs gauge\nwharf_manifests_without_refs {pending}"
    );
    proxy_metrics(&st, &mut out);
    // Best effort: a store at an older schema level (a rollback in progress) has no
    // scanning tables, and that must not take the other metrics away.
    match scanning(meta.as_ref()).await {
        Ok(text) => out.push_str(&text),
        Err(e) => tracing::warn!("scanning metrics left out: {e}"),
    }
    match crate::content_cache::cache_views(meta.as_ref()).await {
        Ok(views) => out.push_str(&content_caches(&views, &st.caches.redirect_counts())),
        Err(e) => tracing::warn!("content cache metrics left out: {e}"),
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The advisory database and the images' scan results, cluster-wide.
async fn scanning(meta: &dyn wharf_metastore::MetaStore) -> wharf_metastore::Result<String> {
    let mut out = String::new();
    let current = meta.current_vulndb().await?;
    let newest = meta.vulndb_versions(1).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let _ = writeln!(
        out,
        "# HELP wharf_vulndb_version The advisory database in use (0: none yet).\n# TYPE wharf_vulndb_version gauge\nwharf_vulndb_version {}",
        current.as_ref().map_or(0, |v| v.id)
    );
    if let Some(v) = &current {
        let _ = writeln!(
            out,
            "# HELP wharf_vulndb_advisories Advisories in the database in use.\n# TYPE wharf_vulndb_advisories gauge\nwharf_vulndb_advisories {}",
            v.records.unwrap_or(0)
        );
        let age = (now_ms - v.finished_at_ms.unwrap_or(v.started_at_ms)).max(0) / 1000;
        let _ = writeln!(
            out,
            "# HELP wharf_vulndb_age_seconds Since the database in use was imported.\n# TYPE wharf_vulndb_age_seconds gauge\nwharf_vulndb_age_seconds {age}"
        );
    }
    let failed = newest.first().is_some_and(|v| v.status == "failed");
    let _ = writeln!(
        out,
        "# HELP wharf_vulndb_last_import_failed 1 when the latest import or update failed (the previous database stays in use).\n# TYPE wharf_vulndb_last_import_failed gauge\nwharf_vulndb_last_import_failed {}",
        u8::from(failed)
    );
    let stats = meta.scan_stats().await?;
    out.push_str("# HELP wharf_scanned_images Images with a stored scan, by outcome.\n# TYPE wharf_scanned_images gauge\n");
    let _ = writeln!(
        out,
        "wharf_scanned_images{{status=\"scanned\"}} {}",
        stats.scanned
    );
    let _ = writeln!(
        out,
        "wharf_scanned_images{{status=\"failed\"}} {}",
        stats.failed
    );
    out.push_str("# HELP wharf_images_by_worst_severity Scanned images by their most severe vulnerability (none: no finding).\n# TYPE wharf_images_by_worst_severity gauge\n");
    for (severity, n) in wharf_metastore::scan::SEVERITIES.iter().zip(stats.worst) {
        let _ = writeln!(
            out,
            "wharf_images_by_worst_severity{{severity=\"{severity}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "wharf_images_by_worst_severity{{severity=\"none\"}} {}",
        stats.clean
    );
    Ok(out)
}

/// Each content cache's state and counters as its last heartbeat gave them, and this
/// replica's redirects to it.
fn content_caches(
    views: &[crate::content_cache::CacheView],
    redirects: &[(String, u64)],
) -> String {
    let mut out = String::new();
    if views.is_empty() && redirects.is_empty() {
        return out;
    }
    out.push_str("# HELP wharf_content_cache_up Whether the registry redirects to the cache now (serving and heartbeating).\n# TYPE wharf_content_cache_up gauge\n");
    for v in views {
        let _ = writeln!(
            out,
            "wharf_content_cache_up{{cache=\"{}\"}} {}",
            v.name,
            u8::from(v.routed)
        );
    }
    type Field = fn(&wharf_cache::report::CacheReport) -> u64;
    let series: [(&str, &str, &str, Field); 10] = [
        (
            "hits_total",
            "counter",
            "Downloads the cache served from what it held.",
            |r| r.counters.hits,
        ),
        (
            "misses_total",
            "counter",
            "Downloads of blobs the cache did not hold.",
            |r| r.counters.misses,
        ),
        (
            "upstream_bytes_total",
            "counter",
            "Bytes the cache fetched from its upstreams.",
            |r| r.counters.bytes_from_upstream,
        ),
        (
            "client_bytes_total",
            "counter",
            "Bytes the cache sent to clients.",
            |r| r.counters.bytes_to_clients,
        ),
        (
            "evictions_total",
            "counter",
            "Blobs the cache removed to stay under its size bound.",
            |r| r.counters.evictions,
        ),
        (
            "upstream_errors_total",
            "counter",
            "The cache's failed upstream requests.",
            |r| r.counters.upstream_errors,
        ),
        (
            "rejected_fills_total",
            "counter",
            "Fills whose bytes did not match digest or size.",
            |r| r.counters.rejected_fills,
        ),
        (
            "refused_total",
            "counter",
            "Requests the cache refused for a bad or expired signature.",
            |r| r.counters.refused,
        ),
        (
            "stored_bytes",
            "gauge",
            "Bytes of blobs the cache holds.",
            |r| r.stored_bytes,
        ),
        ("max_bytes", "gauge", "The cache's size bound.", |r| {
            r.max_bytes
        }),
    ];
    for (name, kind, help, field) in series {
        let _ = writeln!(out, "# HELP wharf_content_cache_{name} {help} (from its last heartbeat)\n# TYPE wharf_content_cache_{name} {kind}");
        for v in views {
            if let Some(r) = &v.report {
                let _ = writeln!(
                    out,
                    "wharf_content_cache_{name}{{cache=\"{}\"}} {}",
                    v.name,
                    field(r)
                );
            }
        }
    }
    out.push_str("# HELP wharf_content_cache_redirects_total Blob downloads this replica redirected to each cache.\n# TYPE wharf_content_cache_redirects_total counter\n");
    for (name, n) in redirects {
        let _ = writeln!(
            out,
            "wharf_content_cache_redirects_total{{cache=\"{name}\"}} {n}"
        );
    }
    out
}

/// Each pull-through proxy's counters on this replica, since it started.
fn proxy_metrics(st: &AppState, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = st.proxies.counters();
    type Read = fn(&wharf_proxy::Counters) -> u64;
    let series: [(&str, &str, Read); 6] = [
        (
            "wharf_proxy_hits_total",
            "Proxied requests answered from the store.",
            |c| c.hits.load(Relaxed),
        ),
        (
            "wharf_proxy_misses_total",
            "Proxied requests that fetched from upstream.",
            |c| c.misses.load(Relaxed),
        ),
        (
            "wharf_proxy_revalidations_total",
            "Tag revalidations (HEAD) sent upstream.",
            |c| c.revalidations.load(Relaxed),
        ),
        (
            "wharf_proxy_upstream_bytes_total",
            "Blob bytes received from upstream.",
            |c| c.upstream_bytes.load(Relaxed),
        ),
        (
            "wharf_proxy_upstream_errors_total",
            "Upstream requests that failed.",
            |c| c.upstream_errors.load(Relaxed),
        ),
        (
            "wharf_proxy_stale_serves_total",
            "Manifests served possibly stale (no upstream answered).",
            |c| c.stale_serves.load(Relaxed),
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help} Per proxy, on this replica.\n# TYPE {name} counter"
        );
        for (prefix, c) in &counters {
            let _ = writeln!(out, "{name}{{proxy=\"{prefix}\"}} {}", get(c));
        }
    }
}
