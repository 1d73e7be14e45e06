//! The management API, `/api/v0`: what this replica is, health, and the
//! administration of users, tokens, organisations, teams, repository access and the
//! audit log. Callers authenticate with HTTP basic auth (a password or an access token,
//! `curl -u alice:wharf_…`) or a registry bearer token.
//!
//! The routes and their OpenAPI description come from one list, [`documented`]: each
//! handler carries a `#[utoipa::path]` naming its path, and `routes!` routes it there,
//! so the document served at `/api/v0/openapi.json` cannot drift from what is routed.

use axum::extract::{Request, State};
use std::net::IpAddr;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_auth::Principal;
use wharf_metastore::accounts::AuditEntry;
use wharf_oci::ErrorCode;

use crate::auth;
use crate::cluster::ClusterStatus;
use crate::error::{ApiError, ErrorBody};
use crate::http::{body_bytes, BodyError};
use crate::{AppState, ServerInfo};

pub(crate) mod content_caches;
mod jobs;
mod orgs;
pub(crate) mod proxies;
mod repos;
pub(crate) mod scan;
mod scan_policy;
pub(crate) mod upgrade;
mod users;

/// The management API's routes, relative to `/api/v0`.
pub fn router() -> Router<AppState> {
    documented().split_for_parts().0
}

/// The OpenAPI 3.1 description of the management API, paths under `/api/v0`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .nest("/api/v0", documented())
        .into_openapi()
}

/// Every route with its documentation. `/repositories/{*rest}` is the one routed by
/// hand (a repository name holds `/`): [`repos::docs`] documents each form it serves.
fn documented() -> OpenApiRouter<AppState> {
    let mut hand_routed = repos::docs::HandRouted::openapi();
    hand_routed.merge(scan_policy::docs::HandRouted::openapi());
    OpenApiRouter::with_openapi(hand_routed)
        .routes(routes!(openapi_json))
        .routes(routes!(version))
        .routes(routes!(cluster_status))
        .routes(routes!(upgrade_status))
        .routes(routes!(upgrade::plan))
        .routes(routes!(upgrade::check))
        .routes(routes!(users::me))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::update))
        .routes(routes!(users::list_tokens, users::create_token))
        .routes(routes!(users::revoke_token))
        .routes(routes!(orgs::create))
        .routes(routes!(orgs::set_member, orgs::remove_member))
        .routes(routes!(orgs::create_team))
        .routes(routes!(orgs::add_team_member, orgs::remove_team_member))
        .route(
            "/repositories/{*rest}",
            get(repos::get)
                .put(repos::put)
                .delete(repos::delete)
                .post(scan::post),
        )
        .merge(OpenApiRouter::with_openapi(
            scan::docs::HandRouted::openapi(),
        ))
        .routes(routes!(scan::rescan_all))
        .routes(routes!(scan::vulndb_get, scan::vulndb_upload))
        .routes(routes!(content_caches::list, content_caches::create))
        .routes(routes!(content_caches::update, content_caches::delete))
        .routes(routes!(content_caches::rotate_token))
        .routes(routes!(content_caches::probe))
        .routes(routes!(content_caches::own_registration))
        .routes(routes!(content_caches::heartbeat))
        .routes(routes!(
            content_caches::get_user_choice,
            content_caches::put_user_choice
        ))
        .routes(routes!(content_caches::put_team_choice))
        .routes(routes!(audit))
        .routes(routes!(jobs::list, jobs::create))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::logs))
        .routes(routes!(jobs::workers))
        .routes(routes!(jobs::list_crons))
        .routes(routes!(jobs::get_cron, jobs::put_cron, jobs::delete_cron))
        .routes(routes!(proxies::list, proxies::create))
        .routes(routes!(proxies::update, proxies::delete))
        .routes(routes!(scan_policy::get_default, scan_policy::put_default))
        .routes(routes!(scan_policy::get_registry_allowlist))
        .routes(routes!(
            scan_policy::put_registry_allow,
            scan_policy::delete_registry_allow
        ))
}

/// The document's frame: what the paths are nested in.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wharf management API",
        description = "Administration of a wharf registry: users and their access tokens, \
organisations and teams, repository visibility and grants, the audit log, jobs and their \
schedules, and the state of the cluster and of upgrades.\n\n\
Authenticate with HTTP basic auth (a password or an access token: `curl -u alice:wharf_…`) \
or a bearer token (an access token `wharf_…`, or a registry token from `/auth/token`). \
Errors have the OCI distribution spec's body: `{\"errors\":[{\"code\",\"message\",\"detail\"}]}`."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "meta", description = "This replica, the cluster and upgrades"),
        (name = "users", description = "User accounts"),
        (name = "tokens", description = "Users' access tokens"),
        (name = "organisations", description = "Organisations, their members and teams"),
        (name = "repositories", description = "Repository visibility and grants"),
        (name = "audit", description = "The log of administrative actions"),
        (name = "jobs", description = "Background jobs and the workers that run them"),
        (name = "schedules", description = "Schedules that queue jobs"),
        (name = "caches", description = "Content caches near distant users, and which one each user or team downloads from"),
        (name = "proxies", description = "Pull-through proxy repositories of other registries"),
        (name = "scanning", description = "Vulnerability scanning: images' findings and SBOMs, the advisory database, scan policies and allowlists"),
    )
)]
struct ApiDoc;

/// The two ways to authenticate, named by every operation's `security`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description =
            Some("a user name with its password or one of its access tokens".into());
        components.add_security_scheme("basic", SecurityScheme::Http(basic));
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "an access token (`wharf_…`), or a registry bearer token from `/auth/token`".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut cache = Http::new(HttpAuthScheme::Bearer);
        cache.description =
            Some("a content cache's own token (`wharf_cache_…`), from `wharf cache add`".into());
        components.add_security_scheme("cache_token", SecurityScheme::Http(cache));
    }
}

/// This document
///
/// `GET /api/v0/openapi.json`: the OpenAPI 3.1 description of `/api/v0`. No
/// credentials needed.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "the OpenAPI document", body = Object, content_type = "application/json")),
    security(()))]
async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// This replica's version
///
/// `GET /api/v0/meta/version`: version, commit and schema level of this replica, so
/// operators and upgrade tooling can ask a running replica what it is. No credentials
/// needed.
#[utoipa::path(get, path = "/meta/version", tag = "meta", operation_id = "version",
    responses((status = 200, description = "what this replica is", body = ServerInfo)),
    security(()))]
async fn version(State(st): State<AppState>) -> impl IntoResponse {
    let mut info = st.info.as_ref().clone();
    // The level now, not at start: an upgrade may have been finalised since.
    if let Ok(level) = st.registry.meta().schema_level().await {
        info.schema_level = level;
    }
    Json(info)
}

/// Where an upgrade stands
///
/// `GET /api/v0/upgrade`: where an upgrade to this replica's version stands (the data's
/// version, the plan from there, the journal's steps, each replica's version, the
/// background migrations), as `wharf upgrade status --format json` shows it.
/// Administrators only.
#[utoipa::path(get, path = "/upgrade", tag = "meta", operation_id = "upgrade_status",
    responses(
        (status = 200, description = "the upgrade's status", body = wharf_upgrade::status::Status),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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

/// The cluster's health
///
/// `GET /api/v0/meta/cluster_status`: every replica with its health, and the
/// cluster's current issues (`critical`, `description`); no issues means healthy.
/// Administrators only: it shows addresses and versions.
#[utoipa::path(get, path = "/meta/cluster_status", tag = "meta", operation_id = "cluster_status",
    responses(
        (status = 200, description = "the replicas and the cluster's issues", body = ClusterStatus),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
async fn cluster_status(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let thresholds = crate::cluster::Thresholds::for_interval(st.settings.heartbeat_interval)
        .with_vulndb_stale_after(st.settings.vulndb_stale_after);
    let status = crate::cluster::cluster_status(st.registry.meta().as_ref(), &thresholds)
        .await
        .map_err(store_error)?;
    Ok(Json(status).into_response())
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

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
    /// Only entries older than this id (to page back).
    before: Option<i64>,
}

/// The audit log
///
/// `GET /api/v0/audit?limit=N&before=ID`: administrative actions, newest first
/// (administrators).
#[utoipa::path(get, path = "/audit", tag = "audit", operation_id = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "the entries, newest first", body = Vec<AuditEntry>),
        (status = 400, description = "a bad query", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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
