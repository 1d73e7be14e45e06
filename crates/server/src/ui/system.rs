//! The system page (replicas, the cluster's issues, the upgrade), garbage collection
//! and the audit log: administrators only.

use askama::Template;
use axum::extract::{Query, Request, State};
use serde::Deserialize;
use wharf_metastore::jobs::JobStatus;

use super::jobs::{job_row, JobRow};
use super::page::{opt_time, render, size, time, Layout, UiError, UiResult};
use super::session::{signed_form, Visitor};
use crate::AppState;

struct ReplicaRow {
    id: String,
    address: String,
    version: String,
    schema_level: u32,
    healthy: bool,
    heartbeat_age: String,
    disk_free: String,
    started: String,
}

/// Progress as a job reports it: `{done, total, rate, eta_secs, phase}`.
pub struct ProgressView {
    pub done: u64,
    pub total: u64,
    pub text: String,
}

pub fn progress_view(p: Option<&serde_json::Value>) -> Option<ProgressView> {
    let p = p?;
    let done = p["done"].as_u64()?;
    let total = p["total"].as_u64().unwrap_or(done).max(done);
    let eta = match p["eta_secs"].as_u64() {
        Some(s) if s >= 3600 => format!(", about {} h {} min left", s / 3600, s % 3600 / 60),
        Some(s) if s >= 60 => format!(", about {} min left", s.div_ceil(60)),
        Some(s) => format!(", about {s} s left"),
        None => String::new(),
    };
    Some(ProgressView {
        done,
        total,
        text: format!(
            "{} {done} of {total} ({}/s{eta})",
            p["phase"].as_str().unwrap_or(""),
            p["rate"].as_f64().unwrap_or(0.0)
        ),
    })
}

struct MigrationRow {
    action: String,
    job: i64,
    status: String,
    attempts: u32,
    progress: Option<ProgressView>,
}

struct CacheRow {
    name: String,
    url: String,
    region: String,
    state: String,
    routed: bool,
    version: String,
    heartbeat_age: String,
    stored: String,
    hit_ratio: String,
}

/// A plan asked for on the page (`?to=VERSION`), and its pre-flight checks.
struct PlannedUpgrade {
    to: String,
    verdict: String,
    hops: Vec<String>,
    caches: Option<String>,
    checks: Vec<crate::upgrade_checks::Check>,
    failed: usize,
}

#[derive(Deserialize, Default)]
pub struct SystemQuery {
    #[serde(default)]
    to: String,
}

struct JournalRow {
    step: String,
    status: String,
    at: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "system.html")]
struct SystemPage {
    l: Layout,
    replicas: Vec<ReplicaRow>,
    caches: Vec<CacheRow>,
    issues: Vec<crate::cluster::Issue>,
    data_version: String,
    schema_level: u32,
    binary_version: String,
    plan: String,
    progress: String,
    journal: Vec<JournalRow>,
    pending_manifests: Option<u64>,
    migrations: Vec<MigrationRow>,
    /// What `to` was asked for, and the plan and checks for it.
    asked: String,
    planned: Option<PlannedUpgrade>,
    plan_error: Option<String>,
}

/// `GET /system`: the same facts as `GET /api/v0/meta/cluster_status` and
/// `GET /api/v0/upgrade` (and `wharf upgrade status`).
pub async fn system(
    State(st): State<AppState>,
    visitor: Visitor,
    Query(q): Query<SystemQuery>,
) -> UiResult {
    visitor.require_admin()?;
    let asked = q.to.trim().to_string();
    let (planned, plan_error) = if asked.is_empty() {
        (None, None)
    } else {
        match plan_and_check(&st, &asked).await {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    };
    let meta = st.registry.meta();
    let thresholds = crate::cluster::Thresholds::for_interval(st.settings.heartbeat_interval)
        .with_vulndb_stale_after(st.settings.vulndb_stale_after);
    let cluster = crate::cluster::cluster_status(meta.as_ref(), &thresholds).await?;
    let own = wharf_upgrade::Version::parse(&st.info.version).map_err(super::page::internal)?;
    let status = wharf_upgrade::status::status(meta.as_ref(), &own).await?;
    // Worded as `wharf upgrade status` words it.
    let plan = match status.plan.as_ref().filter(|p| !p.path.is_empty()) {
        None => "nothing to do: the data is at this release".to_string(),
        Some(p) => format!(
            "upgrade {} → {}: {} (path: {})",
            p.from,
            p.to,
            if p.allowed { "allowed" } else { "refused" },
            p.path.join(" → ")
        ),
    };
    let progress = if status.journal.is_empty() {
        format!("no upgrade to {} has started", status.binary_version)
    } else {
        format!(
            "upgrade to {}: step {} of {}",
            status.upgrading_to, status.steps_done, status.steps_total
        )
    };
    Ok(render(&SystemPage {
        l: visitor.layout(&st, "System", "system"),
        replicas: cluster
            .replicas
            .iter()
            .map(|r| ReplicaRow {
                id: r.row.report.id.clone(),
                address: r.row.report.address.clone(),
                version: r.row.report.version.clone(),
                schema_level: r.row.report.schema_level,
                healthy: r.healthy,
                heartbeat_age: format!("{:.1} s", r.silent_for_ms as f64 / 1000.0),
                disk_free: format!(
                    "{} of {}",
                    size(r.row.report.disk_free_bytes),
                    size(r.row.report.disk_total_bytes)
                ),
                started: time(r.row.report.started_at_ms),
            })
            .collect(),
        caches: cluster
            .caches
            .iter()
            .map(|c| CacheRow {
                name: c.name.clone(),
                url: c.url.clone(),
                region: c.region.clone(),
                state: c.state.clone(),
                routed: c.routed,
                version: c.version.clone().unwrap_or_else(|| "—".into()),
                heartbeat_age: c
                    .silent_for_ms
                    .map(|ms| format!("{:.1} s ago", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "never".into()),
                stored: c
                    .report
                    .as_ref()
                    .map(|r| format!("{} of {}", size(r.stored_bytes), size(r.max_bytes)))
                    .unwrap_or_else(|| "—".into()),
                hit_ratio: c
                    .hit_ratio
                    .map(|h| format!("{:.0}%", h * 100.0))
                    .unwrap_or_else(|| "—".into()),
            })
            .collect(),
        issues: cluster.issues,
        data_version: status.data_version.clone(),
        schema_level: status.schema_level,
        binary_version: status.binary_version.clone(),
        plan,
        progress,
        journal: status
            .journal
            .iter()
            .map(|j| JournalRow {
                step: j.step.clone(),
                status: j.status.clone(),
                at: time(j.at_ms),
                detail: j.detail.clone(),
            })
            .collect(),
        pending_manifests: status.pending_manifests,
        migrations: status
            .background_migrations
            .iter()
            .map(|m| MigrationRow {
                action: m.action.clone(),
                job: m.job,
                status: m.status.clone(),
                attempts: m.attempts,
                progress: progress_view(m.progress.as_ref()),
            })
            .collect(),
        asked,
        planned,
        plan_error,
    }))
}

/// The plan to `to` and the pre-flight checks, as `GET /api/v0/upgrade/plan` and
/// `/check` answer them; an error is the message to show.
async fn plan_and_check(st: &AppState, to: &str) -> Result<PlannedUpgrade, String> {
    let q = crate::api::upgrade::UpgradeQuery::to(to);
    let report = crate::api::upgrade::check_report(st, &q)
        .await
        .map_err(|e| e.detail)?;
    let from = report
        .from
        .clone()
        .ok_or("the data's version cannot be read")?;
    let (from, target) = (
        wharf_upgrade::Version::parse(&from).map_err(|e| e.to_string())?,
        wharf_upgrade::Version::parse(&report.to).map_err(|e| e.to_string())?,
    );
    let view = crate::api::upgrade::plan_view(st, &from, &target)
        .await
        .map_err(|e| e.detail)?;
    let (plan, work) = (view.plan(), view.work());
    let verdict = if plan.path.is_empty() && plan.allowed {
        format!("{} → {}: nothing to do", plan.from, plan.to)
    } else if plan.allowed {
        format!("{} → {}: allowed", plan.from, plan.to)
    } else if view.reachable() {
        format!(
            "{} → {}: in {} hops, through every stop ({})",
            plan.from,
            plan.to,
            plan.path.len(),
            plan.path.join(" → ")
        )
    } else {
        format!(
            "{} → {}: refused. {}",
            plan.from,
            plan.to,
            plan.reason.clone().unwrap_or_default()
        )
    };
    let hops = work
        .iter()
        .map(|h| {
            let mut parts: Vec<String> = h
                .schema
                .iter()
                .map(|m| format!("{} migration level {}: {}", m.kind, m.level, m.name))
                .collect();
            parts.extend(
                h.background
                    .iter()
                    .map(|b| format!("background migration {b}")),
            );
            if parts.is_empty() {
                parts.push("no data migration".into());
            }
            format!("{} → {}: {}", h.from, h.to, parts.join("; "))
        })
        .collect();
    let caches = view.caches_text();
    Ok(PlannedUpgrade {
        to: report.to.clone(),
        verdict,
        hops,
        caches,
        failed: report.failed,
        checks: report.checks,
    })
}

struct GcRun {
    job: JobRow,
    dry_run: bool,
    manifests: String,
    blobs: String,
    freed: String,
}

#[derive(Template)]
#[template(path = "gc.html")]
struct GcPage {
    l: Layout,
    runs: Vec<GcRun>,
    running: Option<JobRow>,
}

/// `GET /gc`: the last runs and what they freed; start a run (or a dry-run preview)
/// at a chosen pace.
pub async fn gc(State(st): State<AppState>, visitor: Visitor) -> UiResult {
    visitor.require_admin()?;
    let meta = st.registry.meta();
    let jobs = meta.jobs(Some("gc"), None, None, 20).await?;
    let running = jobs
        .iter()
        .find(|j| matches!(j.status, JobStatus::Running | JobStatus::Waiting))
        .map(job_row);
    let runs = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Done)
        .map(|j| {
            let params: serde_json::Value = serde_json::from_str(&j.params).unwrap_or_default();
            let report = j.progress_json().unwrap_or_default();
            // The run's final report: `{"phase": "finished", "freed": {…}}`.
            let freed = &report["freed"];
            let n = |k: &str| freed[k].as_u64().map_or("—".into(), |v| v.to_string());
            GcRun {
                dry_run: params["dry_run"].as_bool().unwrap_or(false),
                manifests: n("manifests"),
                blobs: n("blobs"),
                freed: freed["bytes"].as_u64().map_or("—".into(), size),
                job: job_row(j),
            }
        })
        .collect();
    Ok(render(&GcPage {
        l: visitor.layout(&st, "Garbage collection", "gc"),
        runs,
        running,
    }))
}

/// `POST /gc`: queues a `gc` job with the form's pace and options.
pub async fn start_gc(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let mut params = serde_json::json!({
        "dry_run": form.checked("dry_run"),
        "delete_untagged": form.checked("delete_untagged"),
    });
    match form.get("busy_percent").trim() {
        "" => {}
        p => match p.parse::<u8>() {
            Ok(p) if (1..=100).contains(&p) => params["busy_percent"] = p.into(),
            _ => {
                return Err(UiError::BadRequest(
                    "the pace must be 1 to 100 percent".into(),
                ))
            }
        },
    }
    super::jobs::start_job(&st, &visitor, "gc", &params.to_string()).await
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    before: Option<i64>,
}

struct AuditRow {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    details: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    l: Layout,
    actor: String,
    action: String,
    target: String,
    entries: Vec<AuditRow>,
    next_before: Option<i64>,
    first_page: bool,
}

const AUDIT_PAGE: usize = 100;
/// At most this many entries are read to fill one filtered page.
const AUDIT_SCAN: usize = 10_000;

/// `GET /audit?actor=&action=&target=&before=`: newest first; filters match
/// substrings.
pub async fn audit(
    State(st): State<AppState>,
    visitor: Visitor,
    Query(q): Query<AuditQuery>,
) -> UiResult {
    visitor.require_admin()?;
    let store = st.auth.store();
    let mut entries = Vec::new();
    let mut before = q.before;
    let mut scanned = 0;
    let mut more = false;
    'pages: while scanned < AUDIT_SCAN {
        let batch = store.list_audit(before, 500).await?;
        if batch.is_empty() {
            break;
        }
        scanned += batch.len();
        for e in batch {
            before = Some(e.id);
            let keep = e.actor.contains(q.actor.trim())
                && e.action.contains(q.action.trim())
                && e.target.contains(q.target.trim());
            if keep {
                if entries.len() == AUDIT_PAGE {
                    more = true;
                    break 'pages;
                }
                entries.push(AuditRow {
                    id: e.id,
                    at: time(e.at_ms),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    details: e.details.unwrap_or_default(),
                });
            }
        }
    }
    let _ = opt_time;
    Ok(render(&AuditPage {
        l: visitor.layout(&st, "Audit log", "audit"),
        next_before: if more || scanned >= AUDIT_SCAN {
            entries.last().map(|e| e.id)
        } else {
            None
        },
        first_page: q.before.is_none(),
        actor: q.actor,
        action: q.action,
        target: q.target,
        entries,
    }))
}
