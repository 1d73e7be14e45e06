//! `GET /metrics`: the Prometheus text format, for administrators (basic auth with an
//! access token works for scrapers). Cluster-wide figures from the metadata store: jobs
//! by action and status, workers, and what the last garbage collection freed.

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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
