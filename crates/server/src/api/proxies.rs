//! Pull-through proxy repositories: `/api/v0/proxies` (administrators). Passwords are
//! stored for the upstreams and never shown; every change is audited (without them).

use axum::extract::{Path, Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_proxy::admin::{self as proxy_admin, ProxySpec};

use super::*;

/// A proxy to add or the new settings of one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyInput {
    /// Repository-name prefix (`hub` or `hub/`); required to add, ignored by `PUT`.
    prefix: Option<String>,
    /// Upstream registry base URLs (`https://registry-1.docker.io`), tried in order.
    upstreams: Vec<String>,
    username: Option<String>,
    /// Used with the upstreams; stored, never shown.
    password: Option<String>,
    /// How often a tag is revalidated upstream, in seconds [default: 60].
    revalidate_secs: Option<u64>,
    /// Retention: least-recently-used images go when the proxy holds more bytes.
    max_bytes: Option<u64>,
    /// Retention: images unused for this many days go.
    max_idle_days: Option<u32>,
}

impl ProxyInput {
    fn spec(self) -> (Option<String>, ProxySpec) {
        (
            self.prefix,
            ProxySpec {
                upstreams: self.upstreams,
                username: self.username,
                password: self.password,
                revalidate_secs: self.revalidate_secs,
                max_bytes: self.max_bytes,
                max_idle_days: self.max_idle_days,
            },
        )
    }
}

/// A proxy, without its password.
#[derive(Serialize, ToSchema)]
pub struct ProxyView {
    /// Repository-name prefix, ending in `/`.
    prefix: String,
    upstreams: Vec<String>,
    username: Option<String>,
    /// Whether a password is stored (it is never shown).
    has_password: bool,
    revalidate_secs: u64,
    max_bytes: Option<u64>,
    max_idle_days: Option<u32>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn view(p: &wharf_metastore::ProxyConfig) -> ProxyView {
    let v = proxy_admin::ProxyView::from(p);
    ProxyView {
        prefix: v.prefix,
        upstreams: v.upstreams,
        username: v.username,
        has_password: v.has_password,
        revalidate_secs: v.revalidate_secs,
        max_bytes: v.max_bytes,
        max_idle_days: v.max_idle_days,
        created_at_ms: v.created_at_ms,
        updated_at_ms: v.updated_at_ms,
    }
}

/// What the audit log keeps of a change: the settings, no password.
fn audit_details(p: &wharf_metastore::ProxyConfig) -> Option<String> {
    serde_json::to_string(&proxy_admin::ProxyView::from(p)).ok()
}

async fn administrator(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    if st.settings.auth_enabled {
        admin(st, headers, addr).await
    } else {
        Ok(Principal::Anonymous)
    }
}

/// List proxies
///
/// `GET /api/v0/proxies` (administrators): every pull-through proxy, by prefix.
#[utoipa::path(get, path = "/proxies", tag = "proxies", operation_id = "list_proxies",
    responses(
        (status = 200, description = "the proxies", body = Vec<ProxyView>),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let all = st.registry.meta().proxies().await.map_err(store_error)?;
    Ok(Json(all.iter().map(view).collect::<Vec<_>>()).into_response())
}

/// Add a proxy
///
/// `POST /api/v0/proxies {"prefix","upstreams",…}` (administrators): repositories
/// under the prefix are then pulled through from the upstreams; pushes to them are
/// refused. Schedules `proxy_retention` if it is not yet.
#[utoipa::path(post, path = "/proxies", tag = "proxies", operation_id = "create_proxy",
    request_body = ProxyInput,
    responses(
        (status = 201, description = "the new proxy", body = ProxyView),
        (status = 400, description = "an invalid prefix, URL or setting", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 409, description = "the prefix is taken or overlaps another proxy's", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let input: ProxyInput = json_body(req).await?;
    let (prefix, spec) = input.spec();
    let prefix = prefix.ok_or_else(|| invalid("a proxy needs a prefix"))?;
    let config =
        proxy_admin::config_from(&prefix, spec, wharf_metastore::now_ms()).map_err(invalid)?;
    add(&st, &config).await?;
    audit_log(
        &st,
        &actor,
        "proxy.create",
        &config.prefix,
        audit_details(&config),
    )
    .await?;
    Ok(created(view(&config)))
}

/// Adds a checked proxy (the API and the web UI): refused with a conflict when its
/// prefix overlaps another proxy's or is taken; the retention schedule comes with the
/// first proxy; this replica sees it at once, the others within their refresh.
pub(crate) async fn add(
    st: &AppState,
    config: &wharf_metastore::ProxyConfig,
) -> Result<(), ApiError> {
    let meta = st.registry.meta();
    let existing = meta.proxies().await.map_err(store_error)?;
    if let Some(why) = proxy_admin::overlap(config, &existing) {
        return Err(ApiError::new(ErrorCode::Conflict, why));
    }
    meta.create_proxy(config).await.map_err(store_error)?;
    proxy_admin::ensure_retention_schedule(meta.as_ref())
        .await
        .map_err(store_error)?;
    st.proxies.invalidate().await;
    Ok(())
}

/// Change a proxy
///
/// `PUT /api/v0/proxies/{prefix}` (administrators; the prefix without its trailing
/// `/`, any inner `/` written `%2F`): replaces the proxy's settings. A password left
/// out keeps the stored one when the username stays the same.
#[utoipa::path(put, path = "/proxies/{prefix}", tag = "proxies", operation_id = "update_proxy",
    params(("prefix" = String, Path, description = "the proxy's prefix, without the trailing `/`")),
    request_body = ProxyInput,
    responses(
        (status = 200, description = "the proxy as changed", body = ProxyView),
        (status = 400, description = "an invalid URL or setting", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such proxy", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn update(
    State(st): State<AppState>,
    Path(prefix): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let input: ProxyInput = json_body(req).await?;
    let (_, spec) = input.spec();
    let meta = st.registry.meta();
    let prefix = proxy_admin::normalise_prefix(&prefix).map_err(invalid)?;
    let old = meta
        .proxies()
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|p| p.prefix == prefix)
        .ok_or_else(|| not_found(format!("no proxy {prefix}")))?;
    let mut config =
        proxy_admin::config_from(&prefix, spec, wharf_metastore::now_ms()).map_err(invalid)?;
    if config.password.is_none() && config.username == old.username {
        config.password = old.password.clone();
    }
    config.created_at_ms = old.created_at_ms;
    if !meta.update_proxy(&config).await.map_err(store_error)? {
        return Err(not_found(format!("no proxy {prefix}")));
    }
    st.proxies.invalidate().await;
    audit_log(
        &st,
        &actor,
        "proxy.update",
        &config.prefix,
        audit_details(&config),
    )
    .await?;
    Ok(Json(view(&config)).into_response())
}

/// Remove a proxy
///
/// `DELETE /api/v0/proxies/{prefix}` (administrators): the prefix stops being proxied;
/// what it stored stays, as pushed content would (delete it, then let GC reclaim it).
#[utoipa::path(delete, path = "/proxies/{prefix}", tag = "proxies", operation_id = "delete_proxy",
    params(("prefix" = String, Path, description = "the proxy's prefix, without the trailing `/`")),
    responses(
        (status = 204, description = "removed"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such proxy", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    State(st): State<AppState>,
    Path(prefix): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let prefix = proxy_admin::normalise_prefix(&prefix).map_err(invalid)?;
    if !st
        .registry
        .meta()
        .delete_proxy(&prefix)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("no proxy {prefix}")));
    }
    st.proxies.invalidate().await;
    audit_log(&st, &actor, "proxy.delete", &prefix, None).await?;
    Ok(no_content())
}
