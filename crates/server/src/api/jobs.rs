//! `/api/v0/jobs`, `/api/v0/workers`, `/api/v0/crons`: the job system, for
//! administrators. `POST /api/v0/jobs {"action": "metadatastoremigration"}` queues a
//! job; any replica's worker runs it.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use wharf_metastore::jobs::{Cron, Job, JobStatus, NewJob};

use super::{
    admin, audit_log, invalid, json_body, no_content, not_found, serde_urlencoded_query,
    store_error, ApiResult,
};
use crate::auth;
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

/// A job as the API shows it: parameters and progress as JSON, not strings.
pub fn job_view(j: &Job) -> Value {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    };
    json!({
        "id": j.id,
        "action": j.action,
        "status": j.status.as_str(),
        "params": serde_json::from_str::<Value>(&j.params).unwrap_or(Value::Null),
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "worker_id": j.worker_id,
        "cron": j.cron,
        "deadline_ms": j.deadline_ms,
        "created_at_ms": j.created_at_ms,
        "started_at_ms": j.started_at_ms,
        "heartbeat_at_ms": j.heartbeat_at_ms,
        "finished_at_ms": j.finished_at_ms,
        "progress": parse(&j.progress),
        "last_error": j.last_error,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    action: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/v0/jobs?action=&status=&before=&limit=`: newest first.
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
    Ok(Json(json!({ "jobs": jobs.iter().map(job_view).collect::<Vec<_>>() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJobRequest {
    action: String,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// `POST /api/v0/jobs {"action": …, "params": {…}}`: queues a job (202).
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

/// `GET /api/v0/jobs/{id}`.
pub async fn get(State(st): State<AppState>, Path(id): Path<i64>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    Ok(Json(job_view(&find(&st, id).await?)).into_response())
}

/// `DELETE /api/v0/jobs/{id}`: cancels a waiting job at once, asks a running one to
/// stop (202 with the job; its status says which).
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

#[derive(Deserialize)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/v0/jobs/{id}/logs?after=SEQ&limit=N`: oldest first; pass the last `seq`
/// seen as `after` to follow.
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
    Ok(Json(json!({ "job_id": id, "lines": lines })).into_response())
}

/// `GET /api/v0/workers`: each replica's worker, whether it is alive, and its job.
pub async fn workers(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let (workers, now) = st.registry.meta().workers().await.map_err(store_error)?;
    let dead_after = 3 * st.settings.job_heartbeat.as_millis() as i64;
    let view: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "address": w.address,
                "version": w.version,
                "actions": w.actions.split(',').collect::<Vec<_>>(),
                "started_at_ms": w.started_at_ms,
                "heartbeat_at_ms": w.heartbeat_at_ms,
                "alive": now - w.heartbeat_at_ms <= dead_after,
                "job_id": w.job_id,
            })
        })
        .collect();
    Ok(Json(json!({ "workers": view })).into_response())
}

/// `GET /api/v0/crons`.
pub async fn list_crons(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let crons = st.registry.meta().crons().await.map_err(store_error)?;
    Ok(Json(json!({ "crons": crons.iter().map(cron_view).collect::<Vec<_>>() })).into_response())
}

fn cron_view(c: &Cron) -> Value {
    json!({
        "name": c.name,
        "action": c.action,
        "params": serde_json::from_str::<Value>(&c.params).unwrap_or(Value::Null),
        "schedule": c.schedule,
        "run_for_minutes": c.run_for_minutes,
        "enabled": c.enabled,
        "next_run_at_ms": c.next_run_at_ms,
        "last_job_id": c.last_job_id,
    })
}

/// `GET /api/v0/crons/{name}`.
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CronRequest {
    action: String,
    /// minute hour day-of-month month day-of-week, UTC
    schedule: String,
    #[serde(default)]
    params: Option<Value>,
    /// Absent: each run goes until done.
    #[serde(default)]
    run_for_minutes: Option<u32>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// `PUT /api/v0/crons/{name} {"action", "schedule", "run_for_minutes"?, "params"?,
/// "enabled"?}`: creates or replaces a schedule.
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

/// `DELETE /api/v0/crons/{name}`.
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
