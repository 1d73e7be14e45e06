//! Jobs for administrators: the list (by action and status, newest first, paged by
//! id), a job with its attempts and its log tailing live while it runs (the upgrade
//! guide's Job Logs view), starting a job, and the schedules.

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use wharf_metastore::jobs::{Cron, Job, JobStatus, NewJob};

use super::page::{opt_time, render, time, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

const PAGE: usize = 50;
const STATUSES: [&str; 7] = [
    "waiting",
    "running",
    "done",
    "error",
    "cancel_request",
    "cancelled",
    "worker_dead",
];

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    status: String,
    before: Option<i64>,
}

pub struct JobRow {
    pub id: i64,
    pub action: String,
    pub status: &'static str,
    pub attempts: String,
    pub created: String,
    pub finished: String,
    pub progress: String,
    pub last_error: String,
}

pub fn job_row(j: &Job) -> JobRow {
    JobRow {
        id: j.id,
        action: j.action.clone(),
        status: j.status.as_str(),
        attempts: format!("{}/{}", j.attempts, j.max_attempts),
        created: time(j.created_at_ms),
        finished: opt_time(j.finished_at_ms),
        progress: j.progress.clone().unwrap_or_default(),
        last_error: j.last_error.clone().unwrap_or_default(),
    }
}

struct CronRow {
    name: String,
    action: String,
    schedule: String,
    enabled: bool,
    next_run: String,
    last_job: Option<i64>,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    l: Layout,
    actions: &'static [&'static str],
    /// What the start and schedule forms offer.
    startable: &'static [&'static str],
    statuses: &'static [&'static str],
    action: String,
    status: String,
    jobs: Vec<JobRow>,
    next_before: Option<i64>,
    first_page: bool,
    crons: Vec<CronRow>,
    error: Option<String>,
}

/// `GET /jobs`.
pub async fn list(
    State(st): State<AppState>,
    visitor: Visitor,
    Query(q): Query<ListQuery>,
) -> UiResult {
    visitor.require_admin()?;
    list_page(&st, &visitor, q, None).await
}

async fn list_page(
    st: &AppState,
    visitor: &Visitor,
    q: ListQuery,
    error: Option<String>,
) -> UiResult {
    let status = match q.status.as_str() {
        "" => None,
        s => Some(
            JobStatus::parse(s)
                .ok_or_else(|| UiError::BadRequest(format!("unknown status {s:?}")))?,
        ),
    };
    let action = (!q.action.is_empty()).then_some(q.action.as_str());
    let meta = st.registry.meta();
    let mut jobs = meta.jobs(action, status, q.before, PAGE + 1).await?;
    let more = jobs.len() > PAGE;
    jobs.truncate(PAGE);
    let crons = meta
        .crons()
        .await?
        .into_iter()
        .map(|c| CronRow {
            name: c.name,
            action: c.action,
            schedule: c.schedule,
            enabled: c.enabled,
            next_run: time(c.next_run_at_ms),
            last_job: c.last_job_id,
        })
        .collect();
    let http_status = super::page::form_status(&error);
    Ok(super::page::render_status(
        http_status,
        &JobsPage {
            l: visitor.layout(st, "Jobs", "jobs"),
            error,
            actions: wharf_jobs::actions::NAMES,
            startable: wharf_jobs::actions::WITHOUT_PARAMS,
            statuses: &STATUSES,
            action: q.action,
            status: q.status,
            next_before: if more {
                jobs.last().map(|j| j.id)
            } else {
                None
            },
            first_page: q.before.is_none(),
            jobs: jobs.iter().map(job_row).collect(),
            crons,
        },
    ))
}

/// `POST /jobs`: queues a job, as `POST /api/v0/jobs` does.
pub async fn create(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let action = form.get("action");
    if !wharf_jobs::actions::NAMES.contains(&action) {
        return Err(UiError::BadRequest(format!(
            "this wharf runs no action {action:?}"
        )));
    }
    let params = if action == "gc" && form.checked("dry_run") {
        r#"{"dry_run":true}"#
    } else {
        "{}"
    };
    start_job(&st, &visitor, action, params).await
}

/// Queues a job as an administrator's form asked (the same as `POST /api/v0/jobs`),
/// records it in the audit log, and answers with a redirect to the job's page.
pub async fn start_job(st: &AppState, visitor: &Visitor, action: &str, params: &str) -> UiResult {
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: action.to_string(),
            params: params.to_string(),
            max_attempts: wharf_jobs::DEFAULT_ATTEMPTS,
            deadline_ms: None,
            cron: None,
        })
        .await?;
    st.registry
        .meta()
        .audit(
            visitor.principal().name(),
            "job.create",
            &job.id.to_string(),
            Some(action),
        )
        .await?;
    Ok(see_other(&format!("/jobs/{}", job.id)))
}

struct LogRow {
    seq: i64,
    at: String,
    attempt: u32,
    line: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    l: Layout,
    job: JobRow,
    params: String,
    worker: String,
    started: String,
    heartbeat: String,
    finished_flag: bool,
    log: Vec<LogRow>,
    last_seq: i64,
}

fn finished(j: &Job) -> bool {
    matches!(
        j.status,
        JobStatus::Done | JobStatus::Error | JobStatus::Cancelled | JobStatus::WorkerDead
    )
}

/// `GET /jobs/{id}`: the job and its whole log (capped by the store), tailed by JS.
pub async fn page(State(st): State<AppState>, visitor: Visitor, Path(id): Path<i64>) -> UiResult {
    visitor.require_admin()?;
    let meta = st.registry.meta();
    let job = meta
        .job(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no job {id}")))?;
    let lines = meta.job_log(id, 0, 10_000).await?;
    Ok(render(&JobPage {
        l: visitor.layout(&st, format!("Job {id}"), "jobs"),
        params: job.params.clone(),
        worker: job.worker_id.clone().unwrap_or_else(|| "—".into()),
        started: opt_time(job.started_at_ms),
        heartbeat: opt_time(job.heartbeat_at_ms),
        finished_flag: finished(&job),
        last_seq: lines.last().map_or(0, |l| l.seq),
        log: lines
            .into_iter()
            .map(|l| LogRow {
                seq: l.seq,
                at: time(l.at_ms),
                attempt: l.attempt,
                line: l.line,
            })
            .collect(),
        job: job_row(&job),
    }))
}

#[derive(Deserialize)]
pub struct TailQuery {
    #[serde(default)]
    after: i64,
}

/// `GET /jobs/{id}/tail?after=SEQ`: new log lines and the job's state, for the page's
/// live tail (read-only, so the session cookie is enough).
pub async fn tail(
    State(st): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(q): Query<TailQuery>,
) -> UiResult {
    visitor.require_admin()?;
    let meta = st.registry.meta();
    let job = meta
        .job(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no job {id}")))?;
    let lines = meta.job_log(id, q.after, 1000).await?;
    Ok(Json(serde_json::json!({
        "status": job.status.as_str(),
        "finished": finished(&job),
        "progress": job.progress,
        "attempts": format!("{}/{}", job.attempts, job.max_attempts),
        "lines": lines.iter().map(|l| serde_json::json!({
            "seq": l.seq, "at": time(l.at_ms), "attempt": l.attempt, "line": l.line,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `POST /jobs/schedules`: `op` = `put` (name, action, schedule, run_for_minutes) or
/// `delete` (name), as `PUT|DELETE /api/v0/crons/{name}` do.
pub async fn schedules(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let meta = st.registry.meta();
    let name = form.get("name").trim().to_string();
    let actor = visitor.principal();
    let fail = |e: String| async { list_page(&st, &visitor, ListQuery::default(), Some(e)).await };
    match form.get("op") {
        "delete" => {
            if !meta.delete_cron(&name).await? {
                return fail(format!("there is no schedule {name:?}")).await;
            }
            meta.audit(actor.name(), "cron.delete", &name, None).await?;
        }
        "put" => {
            if crate::api::valid_account_name(&name).is_err() {
                return fail(format!(
                    "{name:?} is not a valid schedule name: lower-case letters, digits and . _ -"
                ))
                .await;
            }
            let action = form.get("action");
            if !wharf_jobs::actions::NAMES.contains(&action) {
                return fail(format!("this wharf runs no action {action:?}")).await;
            }
            let run_for_minutes = match form.get("run_for_minutes").trim() {
                "" => None,
                m => match m.parse::<u32>() {
                    Ok(m) if m >= 1 => Some(m),
                    _ => {
                        return fail(
                            "a run's limit is a whole number of minutes, at least 1, or empty"
                                .into(),
                        )
                        .await
                    }
                },
            };
            let schedule = form.get("schedule").trim().to_string();
            let now = meta.store_now().await?;
            let next = match wharf_jobs::schedule::next_after(&schedule, now) {
                Ok(n) => n,
                Err(e) => return fail(e.to_string()).await,
            };
            meta.put_cron(&Cron {
                name: name.clone(),
                action: action.to_string(),
                params: "{}".into(),
                schedule: schedule.clone(),
                run_for_minutes,
                enabled: true,
                next_run_at_ms: next,
                last_job_id: None,
            })
            .await?;
            meta.audit(actor.name(), "cron.put", &name, Some(&schedule))
                .await?;
        }
        other => return Err(UiError::BadRequest(format!("unknown operation {other:?}"))),
    }
    Ok(see_other("/jobs"))
}
