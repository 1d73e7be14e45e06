//! Content caches: their registration by administrators, the caches' own registration
//! and heartbeats (with their token), and which cache a user or a team downloads from.

use axum::extract::{Path, Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_auth::{policy, secret};
use wharf_cache::report::{CacheReport, Registration};
use wharf_metastore::accounts::Subject;

use super::*;
use crate::content_cache::{assess, cache_views, new_cache_token, CacheView, CACHE_TOKEN_PREFIX};

/// A cache to register, or its new address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Lower-case letters and digits, separated by `.`, `_` or `-` (create only).
    #[serde(default)]
    name: Option<String>,
    /// Where clients are redirected to: `https://cache-eu.example.com`.
    url: String,
    /// Free text shown to users choosing a cache: `eu-west`, `Sydney office`.
    region: String,
}

/// A cache just registered, with its token (shown once).
#[derive(Serialize, ToSchema)]
pub struct CreatedCache {
    cache: CacheView,
    /// Give it to the cache (`wharf serve --cache-for … --cache-token …`); only its hash
    /// is kept.
    token: String,
}

/// A new token for a cache.
#[derive(Serialize, ToSchema)]
pub struct CacheToken {
    token: String,
}

/// The cache a user or team downloads from.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheChoice {
    /// A registered cache's name; `null` to download from the registry.
    cache: Option<String>,
}

/// A user's choice and what it comes to.
#[derive(Serialize, ToSchema)]
pub struct UserCacheChoice {
    /// The user's own choice.
    cache: Option<String>,
    /// The cache the user is redirected to now (their own choice, else a team's),
    /// while it is serving; `null`: the registry serves them.
    effective: Option<String>,
}

pub(crate) fn valid_url(url: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', ' ']) => Ok(()),
        _ => Err(invalid(format!(
            "url {url:?} is not an http(s) URL such as https://cache-eu.example.com"
        ))),
    }
}

pub(crate) fn valid_region(region: &str) -> Result<(), ApiError> {
    if region.trim().is_empty() || region.len() > 64 {
        return Err(invalid("region must be 1 to 64 characters"));
    }
    Ok(())
}

/// List content caches
///
/// `GET /api/v0/content_caches`: every registered cache, its state (`serving`,
/// `draining`, `silent`, `unseen`), whether users are redirected to it now, its
/// version and its last heartbeat. Any signed-in user (to choose one).
#[utoipa::path(get, path = "/content_caches", tag = "caches", operation_id = "list_content_caches",
    responses(
        (status = 200, description = "the caches", body = Vec<CacheView>),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let views = cache_views(st.registry.meta().as_ref())
        .await
        .map_err(store_error)?;
    Ok(Json(views).into_response())
}

/// Register a content cache
///
/// `POST /api/v0/content_caches {"name","url","region"}` (administrators): answers the
/// cache's token, shown once. Start the cache with it.
#[utoipa::path(post, path = "/content_caches", tag = "caches", operation_id = "create_content_cache",
    request_body = CacheSpec,
    responses(
        (status = 201, description = "the cache and its token", body = CreatedCache),
        (status = 400, description = "an invalid name, URL or region", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let spec: CacheSpec = json_body(req).await?;
    let name = spec.name.ok_or_else(|| invalid("a cache needs a name"))?;
    valid_account_name(&name)?;
    valid_url(&spec.url)?;
    valid_region(&spec.region)?;
    let token = new_cache_token();
    let row = st
        .registry
        .meta()
        .create_content_cache(&name, &spec.url, &spec.region, &secret::token_hash(&token))
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "content_cache.create",
        &name,
        Some(format!("url={} region={}", spec.url, spec.region)),
    )
    .await?;
    Ok(created(CreatedCache {
        cache: assess(&row, wharf_metastore::now_ms()),
        token,
    }))
}

/// Change a content cache
///
/// `PUT /api/v0/content_caches/{name} {"url","region"}` (administrators).
#[utoipa::path(put, path = "/content_caches/{name}", tag = "caches", operation_id = "update_content_cache",
    params(("name" = String, Path, description = "the cache's name")),
    request_body = CacheSpec,
    responses(
        (status = 204, description = "changed"),
        (status = 400, description = "an invalid URL or region", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such cache", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let spec: CacheSpec = json_body(req).await?;
    if spec.name.as_ref().is_some_and(|n| *n != name) {
        return Err(invalid("a cache cannot be renamed; register a new one"));
    }
    valid_url(&spec.url)?;
    valid_region(&spec.region)?;
    if !st
        .registry
        .meta()
        .update_content_cache(&name, &spec.url, &spec.region)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no content cache {name}")));
    }
    audit_log(
        &st,
        &actor,
        "content_cache.update",
        &name,
        Some(format!("url={} region={}", spec.url, spec.region)),
    )
    .await?;
    Ok(no_content())
}

/// Remove a content cache
///
/// `DELETE /api/v0/content_caches/{name}` (administrators): its users download from the
/// registry again; its token stops working.
#[utoipa::path(delete, path = "/content_caches/{name}", tag = "caches", operation_id = "delete_content_cache",
    params(("name" = String, Path, description = "the cache's name")),
    responses(
        (status = 204, description = "removed"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such cache", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    if !st
        .registry
        .meta()
        .delete_content_cache(&name)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no content cache {name}")));
    }
    audit_log(&st, &actor, "content_cache.delete", &name, None).await?;
    Ok(no_content())
}

/// Replace a cache's token
///
/// `POST /api/v0/content_caches/{name}/token` (administrators): the old token stops
/// working at once; restart the cache with the new one.
#[utoipa::path(post, path = "/content_caches/{name}/token", tag = "caches", operation_id = "rotate_content_cache_token",
    params(("name" = String, Path, description = "the cache's name")),
    responses(
        (status = 200, description = "the new token, shown once", body = CacheToken),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such cache", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn rotate_token(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let token = new_cache_token();
    if !st
        .registry
        .meta()
        .set_content_cache_token(&name, &secret::token_hash(&token))
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no content cache {name}")));
    }
    audit_log(&st, &actor, "content_cache.token", &name, None).await?;
    Ok(Json(CacheToken { token }).into_response())
}

/// The cache that presented its token.
async fn calling_cache(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<wharf_metastore::ContentCacheRow, ApiError> {
    let refused = || {
        ApiError::new(
            ErrorCode::Unauthorized,
            "present the cache's token: Authorization: Bearer wharf_cache_…",
        )
    };
    let token = crate::http::header_str(headers, &header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.starts_with(CACHE_TOKEN_PREFIX))
        .ok_or_else(refused)?;
    st.registry
        .meta()
        .content_cache_by_token(&secret::token_hash(token))
        .await
        .map_err(store_error)?
        .ok_or_else(refused)
}

fn registration(st: &AppState, row: &wharf_metastore::ContentCacheRow) -> Registration {
    Registration {
        name: row.name.clone(),
        region: row.region.clone(),
        url: row.url.clone(),
        keys: st.caches.signer().public_keys(),
        registry_version: st.info.version.clone(),
    }
}

/// A cache's registration
///
/// `GET /api/v0/content_caches/_self` with the cache's token (`Authorization: Bearer
/// wharf_cache_…`): its name, and the public keys that redirects are signed with.
#[utoipa::path(get, path = "/content_caches/_self", tag = "caches", operation_id = "content_cache_registration",
    responses(
        (status = 200, description = "the cache's registration", body = Object),
        (status = 401, description = "no cache token, or an unknown one", body = ErrorBody),
    ),
    security(("cache_token" = [])))]
pub async fn own_registration(State(st): State<AppState>, req: Request) -> ApiResult {
    let row = calling_cache(&st, req.headers()).await?;
    Ok(Json(registration(&st, &row)).into_response())
}

/// A cache's heartbeat
///
/// `POST /api/v0/content_caches/_self/heartbeat` with the cache's token and its report
/// (version, state, size, counters): answers the registration, so key changes reach it.
#[utoipa::path(post, path = "/content_caches/_self/heartbeat", tag = "caches", operation_id = "content_cache_heartbeat",
    request_body(content = Object, description = "the cache's report"),
    responses(
        (status = 200, description = "the cache's registration", body = Object),
        (status = 400, description = "not a report", body = ErrorBody),
        (status = 401, description = "no cache token, or an unknown one", body = ErrorBody),
    ),
    security(("cache_token" = [])))]
pub async fn heartbeat(State(st): State<AppState>, req: Request) -> ApiResult {
    let row = calling_cache(&st, req.headers()).await?;
    let report: CacheReport = json_body(req).await?;
    let text = serde_json::to_string(&report).expect("a report serialises");
    if !st
        .registry
        .meta()
        .content_cache_heartbeat(&row.name, &text)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no content cache {}", row.name)));
    }
    Ok(Json(registration(&st, &row)).into_response())
}

async fn user_subject(st: &AppState, actor: &Principal, name: &str) -> Result<i64, ApiError> {
    let own = actor.user().is_some_and(|u| u.name == name);
    if !own && !policy::is_system_admin(actor.user()) {
        return Err(denied(
            actor,
            &format!("choose the content cache of {name}"),
        ));
    }
    Ok(find_user(st, name).await?.id)
}

/// A user's content cache
///
/// `GET /api/v0/users/{name}/content_cache`: the user's own choice and the cache they
/// are redirected to now (the user, or an administrator).
#[utoipa::path(get, path = "/users/{name}/content_cache", tag = "caches", operation_id = "get_user_content_cache",
    params(("name" = String, Path, description = "the user's name")),
    responses(
        (status = 200, description = "the choice", body = UserCacheChoice),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither the user nor an administrator", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_user_choice(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let id = user_subject(&st, &actor, &name).await?;
    let meta = st.registry.meta();
    let cache = meta
        .content_cache_choice(Subject::User(id))
        .await
        .map_err(store_error)?;
    let effective = match meta
        .content_cache_routes()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|(u, _)| *u == id)
    {
        Some((_, c)) => cache_views(meta.as_ref())
            .await
            .map_err(store_error)?
            .into_iter()
            .find(|v| v.name == c && v.routed)
            .map(|v| v.name),
        None => None,
    };
    Ok(Json(UserCacheChoice { cache, effective }).into_response())
}

/// Choose a user's content cache
///
/// `PUT /api/v0/users/{name}/content_cache {"cache": "eu" | null}`: the user, or an
/// administrator for them. Their blob downloads are redirected to it while it serves.
#[utoipa::path(put, path = "/users/{name}/content_cache", tag = "caches", operation_id = "put_user_content_cache",
    params(("name" = String, Path, description = "the user's name")),
    request_body = CacheChoice,
    responses(
        (status = 204, description = "chosen"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither the user nor an administrator", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 409, description = "no such cache", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_user_choice(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let id = user_subject(&st, &actor, &name).await?;
    let choice: CacheChoice = json_body(req).await?;
    st.registry
        .meta()
        .choose_content_cache(Subject::User(id), choice.cache.as_deref())
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "content_cache.choose",
        &format!("user:{name}"),
        Some(choice.cache.unwrap_or_else(|| "none".into())),
    )
    .await?;
    Ok(no_content())
}

/// Choose a team's content cache
///
/// `PUT /api/v0/orgs/{org}/teams/{team}/content_cache {"cache": "eu" | null}`: the
/// organisation's administrators or the registry's. Members without a choice of their
/// own download from it.
#[utoipa::path(put, path = "/orgs/{org}/teams/{team}/content_cache", tag = "caches", operation_id = "put_team_content_cache",
    params(
        ("org" = String, Path, description = "the organisation"),
        ("team" = String, Path, description = "the team"),
    ),
    request_body = CacheChoice,
    responses(
        (status = 204, description = "chosen"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator of the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation or team", body = ErrorBody),
        (status = 409, description = "no such cache", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_team_choice(
    State(st): State<AppState>,
    Path((org, team)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let found = super::orgs::managed_org(&st, &actor, &org).await?;
    let t = st
        .auth
        .store()
        .team_by_name(found.id, &team)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no team {org}/{team}")))?;
    let choice: CacheChoice = json_body(req).await?;
    st.registry
        .meta()
        .choose_content_cache(Subject::Team(t.id), choice.cache.as_deref())
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "content_cache.choose",
        &format!("team:{org}/{team}"),
        Some(choice.cache.unwrap_or_else(|| "none".into())),
    )
    .await?;
    Ok(no_content())
}

/// A blob to fetch through a cache.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// A repository that holds the blob.
    repository: String,
    /// The blob's digest.
    digest: String,
}

/// A signed URL at a cache.
#[derive(Serialize, ToSchema)]
pub struct ProbeUrl {
    url: String,
}

/// A signed URL for a blob at one cache
///
/// `POST /api/v0/content_caches/{name}/probe {"repository","digest"}` (administrators):
/// the URL a user of that cache would be redirected to, whether or not the cache is
/// serving now, for checking a cache by hand or from `wharf upgrade verify`.
#[utoipa::path(post, path = "/content_caches/{name}/probe", tag = "caches", operation_id = "probe_content_cache",
    params(("name" = String, Path, description = "the cache's name")),
    request_body = ProbeRequest,
    responses(
        (status = 200, description = "the signed URL", body = ProbeUrl),
        (status = 400, description = "not a repository name or digest", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such cache, or no such blob in the repository", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn probe(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let body: ProbeRequest = json_body(req).await?;
    let repo: wharf_oci::RepoName = body
        .repository
        .parse()
        .map_err(|e| invalid(format!("repository {:?}: {e}", body.repository)))?;
    let digest: wharf_oci::Digest = body
        .digest
        .parse()
        .map_err(|e| invalid(format!("digest {:?}: {e}", body.digest)))?;
    let (rows, _) = st
        .registry
        .meta()
        .content_caches()
        .await
        .map_err(store_error)?;
    let cache = rows
        .into_iter()
        .find(|c| c.name == name)
        .ok_or_else(|| not_found(format!("no content cache {name}")))?;
    let info = match st.registry.stat_blob(&repo, &digest).await {
        Ok(i) if i.in_store => i,
        _ => return Err(not_found(format!("{repo} has no stored blob {digest}"))),
    };
    let url = st.caches.url_at(&cache.url, &digest, info.size);
    Ok(Json(ProbeUrl { url }).into_response())
}
