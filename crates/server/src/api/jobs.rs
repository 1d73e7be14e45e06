//! `/api/v0/jobs`, `/api/v0/workers`, `/api/v0/crons`: the job system, for
//! administrators. `POST /api/v0/jobs {"action": "metadatastoremigration"}` queues a
//! job; any replica's worker runs it.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use wharf_metastore::jobs::{Cron, Job, JobStatus, LogLine, NewJob};

use super::{
    admin, audit_log, invalid, json_body, no_content, not_found, serde_urlencoded_query,
    store_error, ApiResult,
};
use crate::auth;
use crate::error::ErrorBody;
use crate::AppState;

/// The caller, who must be an administrator (anyone when authentication is off).
async fn administrator(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    addr: Option<std::net::IpAddr>,
) -> Result<wharf_auth::Principal, crate::error::ApiError> {
    if st.settings.auth_enabled {
        admin(st, headers, addr).await
    } else {
        Ok(wharf_auth::Principal::Anonymous)
    }
}

/// A job; times are in milliseconds since the Unix epoch.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    id: i64,
    /// What it does, e.g. `gc`.
    action: String,
    status: JobStatus,
    /// The action's parameters (a JSON object).
    params: Value,
    /// Attempts started so far.
    attempts: u32,
    /// Attempts in all (the first run and its retries).
    max_attempts: u32,
    /// The worker running it, or that ran it last.
    worker_id: Option<String>,
    /// The schedule that queued it, if any.
    cron: Option<String>,
    /// The job stops by then (a time-boxed run).
    deadline_ms: Option<i64>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    heartbeat_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    /// What the action reports as it goes, for example done, total, rate and ETA.
    progress: Option<Value>,
    last_error: Option<String>,
}

/// A job as the API shows it: parameters and progress as JSON, not strings.
pub fn job_view(j: &Job) -> JobView {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    };
    JobView {
        id: j.id,
        action: j.action.clone(),
        status: j.status,
        params: serde_json::from_str::<Value>(&j.params).unwrap_or(Value::Null),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        worker_id: j.worker_id.clone(),
        cron: j.cron.clone(),
        deadline_ms: j.deadline_ms,
        created_at_ms: j.created_at_ms,
        started_at_ms: j.started_at_ms,
        heartbeat_at_ms: j.heartbeat_at_ms,
        finished_at_ms: j.finished_at_ms,
        progress: parse(&j.progress),
        last_error: j.last_error.clone(),
    }
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    jobs: Vec<JobView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs of this action.
    action: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs older than this id (to page back).
    before: Option<i64>,
    /// At most this many (default 50, at most 1000).
    limit: Option<usize>,
}

/// The jobs, newest first
///
/// `GET /api/v0/jobs?action=&status=&before=&limit=` (administrators).
#[utoipa::path(get, path = "/jobs", tag = "jobs", operation_id = "list_jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "the jobs, newest first", body = JobList),
        (status = 400, description = "a bad query (an unknown status, or a number that is not one)", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let q: ListQuery = serde_urlencoded_query(req.uri().query())?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => {
            Some(JobStatus::parse(s).ok_or_else(|| invalid(format!("unknown status {s:?}")))?)
        }
    };
    let jobs = st
        .registry
        .meta()
        .jobs(
            q.action.as_deref(),
            status,
            q.before,
            q.limit.unwrap_or(50).min(1000),
        )
        .await
        .map_err(store_error)?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(job_view).collect(),
    })
    .into_response())
}

/// A job to queue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJobRequest {
    /// An action this wharf runs, e.g. `gc`; an unknown one is refused with the list.
    action: String,
    /// The action's parameters, a JSON object (default `{}`).
    #[serde(default)]
    params: Option<Value>,
    /// 1 to 10 (default 3): the first run and its retries.
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// Queue a job
///
/// `POST /api/v0/jobs {"action": …, "params": {…}}` (administrators): any replica's
/// worker runs it.
#[utoipa::path(post, path = "/jobs", tag = "jobs", operation_id = "create_job",
    request_body = NewJobRequest,
    responses(
        (status = 202, description = "queued", body = JobView),
        (status = 400, description = "an unknown action, params that are not an object, max_attempts out of range, or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let body: NewJobRequest = json_body(req).await?;
    if !wharf_jobs::actions::NAMES.contains(&body.action.as_str()) {
        return Err(invalid(format!(
            "unknown action {:?}; this wharf runs: {}",
            body.action,
            wharf_jobs::actions::NAMES.join(", ")
        )));
    }
    let params = body.params.unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return Err(invalid("params must be a JSON object"));
    }
    let attempts = body.max_attempts.unwrap_or(wharf_jobs::DEFAULT_ATTEMPTS);
    if !(1..=10).contains(&attempts) {
        return Err(invalid("max_attempts must be between 1 and 10"));
    }
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: body.action,
            params: params.to_string(),
            max_attempts: attempts,
            deadline_ms: None,
            cron: None,
        })
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "job.create",
        &job.id.to_string(),
        Some(job.action.clone()),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

async fn find(st: &AppState, id: i64) -> Result<Job, crate::error::ApiError> {
    st.registry
        .meta()
        .job(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no job {id}")))
}

/// A job
///
/// `GET /api/v0/jobs/{id}` (administrators).
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", operation_id = "get_job",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 200, description = "the job", body = JobView),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(State(st): State<AppState>, Path(id): Path<i64>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    Ok(Json(job_view(&find(&st, id).await?)).into_response())
}

/// Cancel a job
///
/// `DELETE /api/v0/jobs/{id}` (administrators): cancels a waiting job at once, asks a
/// running one to stop (202 with the job; its status says which).
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", operation_id = "cancel_job",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 202, description = "the job: `cancelled`, or `cancel_request` while a running one stops", body = JobView),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn cancel(State(st): State<AppState>, Path(id): Path<i64>, req: Request) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let job = st
        .registry
        .meta()
        .cancel_job(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no job {id}")))?;
    audit_log(&st, &actor, "job.cancel", &id.to_string(), None).await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// Only lines after this `seq` (default 0: from the start).
    after: Option<i64>,
    /// At most this many lines (default 1000, at most 10000).
    limit: Option<usize>,
}

/// Lines of a job's log.
#[derive(Serialize, ToSchema)]
pub struct JobLog {
    job_id: i64,
    /// Oldest first.
    lines: Vec<LogLine>,
}

/// A job's log
///
/// `GET /api/v0/jobs/{id}/logs?after=SEQ&limit=N` (administrators): oldest first; pass
/// the last `seq` seen as `after` to follow.
#[utoipa::path(get, path = "/jobs/{id}/logs", tag = "jobs", operation_id = "job_logs",
    params(("id" = i64, Path, description = "the job's id"), LogQuery),
    responses(
        (status = 200, description = "the lines, oldest first", body = JobLog),
        (status = 400, description = "a bad query", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn logs(State(st): State<AppState>, Path(id): Path<i64>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let q: LogQuery = serde_urlencoded_query(req.uri().query())?;
    find(&st, id).await?;
    let lines = st
        .registry
        .meta()
        .job_log(
            id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(1000).min(10_000),
        )
        .await
        .map_err(store_error)?;
    Ok(Json(JobLog { job_id: id, lines }).into_response())
}

/// A replica's job worker; times are in milliseconds since the Unix epoch.
#[derive(Serialize, ToSchema)]
pub struct WorkerView {
    id: String,
    /// The replica it runs in.
    address: String,
    /// The replica's version.
    version: String,
    /// The actions it can run.
    actions: Vec<String>,
    started_at_ms: i64,
    heartbeat_at_ms: i64,
    /// Heartbeating: silent for at most three heartbeat intervals.
    alive: bool,
    /// The job it runs now.
    job_id: Option<i64>,
}

/// The workers.
#[derive(Serialize, ToSchema)]
pub struct WorkerList {
    workers: Vec<WorkerView>,
}

/// The job workers
///
/// `GET /api/v0/workers` (administrators): each replica's worker, whether it is alive,
/// and its job.
#[utoipa::path(get, path = "/workers", tag = "jobs", operation_id = "list_workers",
    responses(
        (status = 200, description = "every registered worker", body = WorkerList),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn workers(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let (workers, now) = st.registry.meta().workers().await.map_err(store_error)?;
    let dead_after = 3 * st.settings.job_heartbeat.as_millis() as i64;
    let view = workers
        .into_iter()
        .map(|w| WorkerView {
            actions: w.actions.split(',').map(str::to_string).collect(),
            alive: now - w.heartbeat_at_ms <= dead_after,
            id: w.id,
            address: w.address,
            version: w.version,
            started_at_ms: w.started_at_ms,
            heartbeat_at_ms: w.heartbeat_at_ms,
            job_id: w.job_id,
        })
        .collect();
    Ok(Json(WorkerList { workers: view }).into_response())
}

/// The schedules.
#[derive(Serialize, ToSchema)]
pub struct CronList {
    crons: Vec<CronView>,
}

/// The schedules
///
/// `GET /api/v0/crons` (administrators).
#[utoipa::path(get, path = "/crons", tag = "schedules", operation_id = "list_crons",
    responses(
        (status = 200, description = "every schedule", body = CronList),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_crons(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let crons = st.registry.meta().crons().await.map_err(store_error)?;
    Ok(Json(CronList {
        crons: crons.iter().map(cron_view).collect(),
    })
    .into_response())
}

/// A schedule that queues a job; times are in milliseconds since the Unix epoch.
#[derive(Serialize, ToSchema)]
pub struct CronView {
    name: String,
    /// The action of the jobs it queues.
    action: String,
    /// Their parameters (a JSON object).
    params: Value,
    /// minute hour day-of-month month day-of-week, UTC.
    #[schema(example = "0 3 * * *")]
    schedule: String,
    /// Each run stops after this many minutes; none: each run goes until done.
    run_for_minutes: Option<u32>,
    enabled: bool,
    next_run_at_ms: i64,
    /// The job it queued last.
    last_job_id: Option<i64>,
}

fn cron_view(c: &Cron) -> CronView {
    CronView {
        name: c.name.clone(),
        action: c.action.clone(),
        params: serde_json::from_str::<Value>(&c.params).unwrap_or(Value::Null),
        schedule: c.schedule.clone(),
        run_for_minutes: c.run_for_minutes,
        enabled: c.enabled,
        next_run_at_ms: c.next_run_at_ms,
        last_job_id: c.last_job_id,
    }
}

/// A schedule
///
/// `GET /api/v0/crons/{name}` (administrators).
#[utoipa::path(get, path = "/crons/{name}", tag = "schedules", operation_id = "get_cron",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 200, description = "the schedule", body = CronView),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_cron(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let crons = st.registry.meta().crons().await.map_err(store_error)?;
    let c = crons
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| not_found(format!("no schedule {name}")))?;
    Ok(Json(cron_view(c)).into_response())
}

/// A schedule to create or replace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronRequest {
    /// An action this wharf runs, e.g. `gc`.
    action: String,
    /// minute hour day-of-month month day-of-week, UTC
    #[schema(example = "0 3 * * *")]
    schedule: String,
    /// The jobs' parameters, a JSON object (default `{}`).
    #[serde(default)]
    params: Option<Value>,
    /// Absent: each run goes until done.
    #[serde(default)]
    run_for_minutes: Option<u32>,
    /// Default true.
    #[serde(default)]
    enabled: Option<bool>,
}

/// Create or replace a schedule
///
/// `PUT /api/v0/crons/{name} {"action", "schedule", "run_for_minutes"?, "params"?,
/// "enabled"?}` (administrators).
#[utoipa::path(put, path = "/crons/{name}", tag = "schedules", operation_id = "put_cron",
    params(("name" = String, Path, description = "the schedule's name")),
    request_body = CronRequest,
    responses(
        (status = 200, description = "the schedule as stored, with its next run", body = CronView),
        (status = 400, description = "an invalid name, action, schedule or parameters, or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_cron(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let body: CronRequest = json_body(req).await?;
    super::valid_account_name(&name)
        .map_err(|_| invalid(format!("{name:?} is not a valid schedule name")))?;
    if !wharf_jobs::actions::NAMES.contains(&body.action.as_str()) {
        return Err(invalid(format!("unknown action {:?}", body.action)));
    }
    if body.run_for_minutes == Some(0) {
        return Err(invalid(
            "run_for_minutes must be at least 1 (leave it out to run until done)",
        ));
    }
    let params = body.params.unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return Err(invalid("params must be a JSON object"));
    }
    let now = st.registry.meta().store_now().await.map_err(store_error)?;
    let next = wharf_jobs::schedule::next_after(&body.schedule, now)
        .map_err(|e| invalid(e.to_string()))?;
    let cron = Cron {
        name: name.clone(),
        action: body.action,
        params: params.to_string(),
        schedule: body.schedule,
        run_for_minutes: body.run_for_minutes,
        enabled: body.enabled.unwrap_or(true),
        next_run_at_ms: next,
        last_job_id: None,
    };
    st.registry
        .meta()
        .put_cron(&cron)
        .await
        .map_err(store_error)?;
    audit_log(&st, &actor, "cron.put", &name, Some(cron.schedule.clone())).await?;
    Ok(Json(cron_view(&cron)).into_response())
}

/// Delete a schedule
///
/// `DELETE /api/v0/crons/{name}` (administrators).
#[utoipa::path(delete, path = "/crons/{name}", tag = "schedules", operation_id = "delete_cron",
    params(("name" = String, Path, description = "the schedule's name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such schedule", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_cron(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    if !st
        .registry
        .meta()
        .delete_cron(&name)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no schedule {name}")));
    }
    audit_log(&st, &actor, "cron.delete", &name, None).await?;
    Ok(no_content())
}
