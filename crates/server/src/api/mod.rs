//! The management API, `/api/v0`: what this replica is, health, and the
//! administration of users, tokens, organisations, teams, repository access and the
//! audit log. Callers authenticate with HTTP basic auth (a password or an access token,
//! `curl -u alice:wharf_…`) or a registry bearer token.

use axum::extract::{Request, State};
use std::net::IpAddr;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use wharf_auth::Principal;
use wharf_oci::ErrorCode;

use crate::auth;
use crate::error::ApiError;
use crate::http::{body_bytes, BodyError};
use crate::AppState;

mod jobs;
mod orgs;
mod repos;
mod users;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/meta/version", get(version))
        .route("/meta/cluster_status", get(cluster_status))
        .route("/upgrade", get(upgrade_status))
        .route("/me", get(users::me))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{name}", patch(users::update))
        .route(
            "/users/{name}/tokens",
            get(users::list_tokens).post(users::create_token),
        )
        .route("/users/{name}/tokens/{id}", delete(users::revoke_token))
        .route("/orgs", post(orgs::create))
        .route(
            "/orgs/{org}/members/{user}",
            put(orgs::set_member).delete(orgs::remove_member),
        )
        .route("/orgs/{org}/teams", post(orgs::create_team))
        .route(
            "/orgs/{org}/teams/{team}/members/{user}",
            put(orgs::add_team_member).delete(orgs::remove_team_member),
        )
        .route(
            "/repositories/{*rest}",
            get(repos::get).put(repos::put).delete(repos::delete),
        )
        .route("/audit", get(audit))
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{id}/logs", get(jobs::logs))
        .route("/workers", get(jobs::workers))
        .route("/crons", get(jobs::list_crons))
        .route(
            "/crons/{name}",
            get(jobs::get_cron)
                .put(jobs::put_cron)
                .delete(jobs::delete_cron),
        )
}

/// `GET /api/v0/meta/version`: version, commit and schema level of this replica, so
/// operators and upgrade tooling can ask a running replica what it is.
async fn version(State(st): State<AppState>) -> impl IntoResponse {
    let mut info = st.info.as_ref().clone();
    // The level now, not at start: an upgrade may have been finalised since.
    if let Ok(level) = st.registry.meta().schema_level().await {
        info.schema_level = level;
    }
    Json(info)
}

/// `GET /api/v0/upgrade`: where an upgrade to this replica's version stands (the data's
/// version, the plan from there, the journal's steps, each replica's version, the
/// background migrations), as `wharf upgrade status --format json` shows it.
/// Administrators only.
async fn upgrade_status(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let own = wharf_upgrade::Version::parse(&st.info.version)
        .map_err(|e| ApiError::new(ErrorCode::Unknown, format!("this build's version: {e}")))?;
    let status = wharf_upgrade::status::status(st.registry.meta().as_ref(), &own)
        .await
        .map_err(store_error)?;
    Ok(Json(status).into_response())
}

/// `GET /api/v0/meta/cluster_status`: every replica with its health, and the
/// cluster's current issues (`critical`, `description`); no issues means healthy.
/// Administrators only: it shows addresses and versions.
async fn cluster_status(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let (rows, now) = st.registry.meta().replicas().await.map_err(store_error)?;
    let thresholds = crate::cluster::Thresholds::for_interval(st.settings.heartbeat_interval);
    Ok(Json(crate::cluster::assess(rows, now, &thresholds)).into_response())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    if st.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// The signed-in caller; the management API has nothing for anonymous callers.
pub async fn signed_in(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let caller = auth::identify(st, headers, addr).await?;
    match caller.principal {
        Principal::Anonymous => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "sign in with HTTP basic auth (a password or an access token)",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            r#"Basic realm="wharf""#.to_string(),
        )),
        p => Ok(p),
    }
}

/// The caller, who must be a system administrator.
pub async fn admin(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    let p = signed_in(st, headers, addr).await?;
    if wharf_auth::policy::is_system_admin(p.user()) {
        Ok(p)
    } else {
        Err(denied(&p, "administer the registry"))
    }
}

pub fn denied(p: &Principal, what: &str) -> ApiError {
    ApiError::new(ErrorCode::Denied, format!("{} may not {what}", p.name()))
}

pub fn not_found(what: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ApiNotFound, what)
}

pub fn invalid(what: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, what)
}

pub fn store_error(e: wharf_metastore::MetaError) -> ApiError {
    match e {
        wharf_metastore::MetaError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
        other => {
            tracing::error!(error = %other, "management request failed");
            ApiError::new(
                ErrorCode::Unknown,
                "internal error; the registry's log has the details",
            )
        }
    }
}

/// The user called `name`, or a 404 saying so.
pub async fn find_user(
    st: &AppState,
    name: &str,
) -> Result<wharf_metastore::accounts::User, ApiError> {
    Ok(st
        .auth
        .store()
        .user_credentials(name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no user {name}")))?
        .user)
}

/// Parses a JSON request body (at most 64 KiB).
pub async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let bytes = body_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => invalid("request body is larger than 64 KiB"),
            BodyError::Read(e) => invalid(format!("request body could not be read: {e}")),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("request body is not the expected JSON: {e}")))
}

/// Records an administrative action; a failure to record fails the request, since an
/// unaudited change is worse than a refused one.
pub async fn audit_log(
    st: &AppState,
    actor: &Principal,
    action: &str,
    target: &str,
    details: Option<String>,
) -> Result<(), ApiError> {
    st.auth
        .store()
        .audit(actor.name(), action, target, details.as_deref())
        .await
        .map_err(store_error)
}

/// A user or organisation name: one repository-name path component, since it names the
/// namespace of the repositories it owns.
pub fn valid_account_name(name: &str) -> Result<(), ApiError> {
    if !name.contains('/') && name.parse::<wharf_oci::RepoName>().is_ok() && name.len() <= 64 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a valid name: lower-case letters and digits, separated by '.', '_' or '-', at most 64 characters"
        )))
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
    before: Option<i64>,
}

/// `GET /api/v0/audit?limit=N&before=ID`: administrative actions, newest first.
async fn audit(State(st): State<AppState>, req: Request) -> ApiResult {
    admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let q: AuditQuery = serde_urlencoded_query(req.uri().query())?;
    let entries = st
        .auth
        .store()
        .list_audit(q.before, q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(store_error)?;
    Ok(Json(entries).into_response())
}

/// Query strings into a struct, with a clear error.
pub fn serde_urlencoded_query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, ApiError> {
    let pairs: serde_json::Map<String, serde_json::Value> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| {
                let v = v.into_owned();
                let value = v
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(serde_json::Value::String(v));
                (k.into_owned(), value)
            })
            .collect();
    serde_json::from_value(serde_json::Value::Object(pairs))
        .map_err(|e| invalid(format!("bad query: {e}")))
}

pub fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
