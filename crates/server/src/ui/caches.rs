//! Caches and proxies, for administrators: content caches registered (their token
//! shown once), given a new token or removed, a user's or team's cache chosen, and
//! pull-through proxies added or removed. The same abilities as
//! `/api/v0/content_caches` and `/api/v0/proxies`, with the same checks and audit.

use askama::Template;
use axum::extract::{Request, State};
use wharf_metastore::accounts::Subject;
use wharf_metastore::MetaError;
use wharf_proxy::admin as proxy_admin;

use super::page::{render_status, size, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

struct CacheRow {
    name: String,
    url: String,
    region: String,
    state: String,
    routed: bool,
    version: String,
}

struct ProxyRow {
    prefix: String,
    upstreams: String,
    username: String,
    revalidate: String,
    retention: String,
    held: String,
}

/// A cache's token, shown once after it was made.
struct NewToken {
    cache: String,
    token: String,
    registry: String,
}

#[derive(Template)]
#[template(path = "caches.html")]
struct CachesPage {
    l: Layout,
    caches: Vec<CacheRow>,
    proxies: Vec<ProxyRow>,
    token: Option<NewToken>,
    error: Option<String>,
}

async fn caches_page(
    st: &AppState,
    visitor: &Visitor,
    registry: &str,
    token: Option<(String, String)>,
    error: Option<String>,
) -> UiResult {
    let meta = st.registry.meta();
    let caches = crate::content_cache::cache_views(meta.as_ref())
        .await?
        .into_iter()
        .map(|c| CacheRow {
            name: c.name,
            url: c.url,
            region: c.region,
            state: c.state,
            routed: c.routed,
            version: c.version.unwrap_or_else(|| "—".into()),
        })
        .collect();
    // What each proxy holds, as the cluster status counts it.
    let proxies = crate::cluster::proxy_status(meta.as_ref())
        .await?
        .into_iter()
        .map(|p| ProxyRow {
            upstreams: p.upstreams.join(", "),
            username: p.username.unwrap_or_else(|| "—".into()),
            revalidate: format!("{} s", p.revalidate_secs),
            retention: match (p.max_bytes, p.max_idle_days) {
                (None, None) => "kept".to_string(),
                (Some(b), None) => format!("up to {}", size(b)),
                (None, Some(d)) => format!("unused {d} days"),
                (Some(b), Some(d)) => format!("up to {}, unused {d} days", size(b)),
            },
            held: format!("{} image(s), {}", p.images, size(p.bytes)),
            prefix: p.prefix,
        })
        .collect();
    let status = super::page::form_status(&error);
    Ok(render_status(
        status,
        &CachesPage {
            l: visitor.layout(st, "Caches and proxies", "caches"),
            caches,
            proxies,
            token: token.map(|(cache, token)| NewToken {
                cache,
                token,
                registry: registry.to_string(),
            }),
            error,
        },
    ))
}

/// The registry's address as this visitor reached it, for the cache's command line.
fn registry_url(st: &AppState, req: &Request) -> String {
    let scheme = if st.settings.tls { "https" } else { "http" };
    format!("{scheme}://{}", super::registry_host(req.headers()))
}

/// `GET /admin/caches`.
pub async fn page(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let registry = registry_url(&st, &req);
    caches_page(&st, &visitor, &registry, None, None).await
}

/// `POST /admin/caches`: `op` = `cache-add` (name, url, region), `cache-token` (name),
/// `cache-remove` (name), `choose` (who: a user, or `org/team`; cache: a name or empty),
/// `proxy-add` (prefix, upstreams one per line, username, password, revalidate_secs,
/// max_gib, max_idle_days), `proxy-remove` (prefix).
pub async fn post(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let registry = registry_url(&st, &req);
    let form = signed_form(&visitor, req).await?;
    let actor = visitor.principal();
    let meta = st.registry.meta();
    let fail = |e: String| caches_page(&st, &visitor, &registry, None, Some(e));
    let (what, target, details, token) = match form.get("op") {
        "cache-add" => {
            let name = form.get("name").trim().to_string();
            let url = form.get("url").trim().trim_end_matches('/').to_string();
            let region = form.get("region").trim().to_string();
            let valid = crate::api::valid_account_name(&name)
                .and_then(|_| crate::api::content_caches::valid_url(&url))
                .and_then(|_| crate::api::content_caches::valid_region(&region));
            if let Err(e) = valid {
                return fail(e.detail).await;
            }
            let token = crate::content_cache::new_cache_token();
            let hash = wharf_auth::secret::token_hash(&token);
            match meta.create_content_cache(&name, &url, &region, &hash).await {
                Ok(_) => {}
                Err(MetaError::Conflict(_)) => {
                    return fail(format!("the name {name:?} is taken")).await
                }
                Err(e) => return Err(e.into()),
            }
            let details = format!("url={url} region={region}");
            ("content_cache.create", name, Some(details), Some(token))
        }
        "cache-token" => {
            let name = form.get("name").to_string();
            let token = crate::content_cache::new_cache_token();
            let hash = wharf_auth::secret::token_hash(&token);
            if !meta.set_content_cache_token(&name, &hash).await? {
                return fail(format!("there is no content cache {name:?}")).await;
            }
            ("content_cache.token", name, None, Some(token))
        }
        "cache-remove" => {
            let name = form.get("name").to_string();
            if !meta.delete_content_cache(&name).await? {
                return fail(format!("there is no content cache {name:?}")).await;
            }
            ("content_cache.delete", name, None, None)
        }
        "choose" => {
            let who = form.get("who").trim().to_string();
            let cache = match form.get("cache").trim() {
                "" => None,
                c => Some(c.to_string()),
            };
            let (subject, target) = match who.split_once('/') {
                Some((org, team)) => {
                    let store = st.auth.store();
                    let Some(o) = store.org_by_name(org).await? else {
                        return fail(format!("there is no organisation {org:?}")).await;
                    };
                    let Some(t) = store.team_by_name(o.id, team).await? else {
                        return fail(format!("there is no team {who:?}")).await;
                    };
                    (Subject::Team(t.id), format!("team:{who}"))
                }
                None => match st.auth.store().user_credentials(&who).await? {
                    Some(c) => (Subject::User(c.user.id), format!("user:{who}")),
                    None => return fail(format!("there is no user {who:?}")).await,
                },
            };
            match meta.choose_content_cache(subject, cache.as_deref()).await {
                Ok(()) => {}
                Err(MetaError::Conflict(m)) => return fail(m).await,
                Err(e) => return Err(e.into()),
            }
            let choice = cache.unwrap_or_else(|| "none".into());
            ("content_cache.choose", target, Some(choice), None)
        }
        "proxy-add" => {
            let number = |key: &str| -> Result<Option<u64>, String> {
                match form.get(key).trim() {
                    "" => Ok(None),
                    v => v
                        .parse()
                        .map(Some)
                        .map_err(|_| format!("{key} must be a whole number, not {v:?}")),
                }
            };
            let optional = |key: &str| match form.get(key).trim() {
                "" => None,
                v => Some(v.to_string()),
            };
            let spec = (|| {
                Ok::<_, String>(proxy_admin::ProxySpec {
                    upstreams: form
                        .get("upstreams")
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                    username: optional("username"),
                    password: optional("password"),
                    revalidate_secs: number("revalidate_secs")?,
                    max_bytes: number("max_gib")?.map(|g| g << 30),
                    max_idle_days: number("max_idle_days")?.map(|d| d.min(u32::MAX as u64) as u32),
                })
            })();
            let config = match spec.and_then(|spec| {
                proxy_admin::config_from(form.get("prefix"), spec, wharf_metastore::now_ms())
            }) {
                Ok(c) => c,
                Err(e) => return fail(e).await,
            };
            match crate::api::proxies::add(&st, &config).await {
                Ok(()) => {}
                Err(e) if e.code == wharf_oci::ErrorCode::Conflict => return fail(e.detail).await,
                Err(e) => return Err(super::page::internal(e.detail)),
            }
            let details = serde_json::to_string(&proxy_admin::ProxyView::from(&config)).ok();
            ("proxy.create", config.prefix, details, None)
        }
        "proxy-remove" => {
            let prefix = match proxy_admin::normalise_prefix(form.get("prefix")) {
                Ok(p) => p,
                Err(e) => return fail(e).await,
            };
            if !meta.delete_proxy(&prefix).await? {
                return fail(format!("there is no proxy {prefix}")).await;
            }
            st.proxies.invalidate().await;
            ("proxy.delete", prefix, None, None)
        }
        other => return Err(UiError::BadRequest(format!("unknown operation {other:?}"))),
    };
    st.auth
        .store()
        .audit(
            actor.name(),
            what,
            &target,
            Some(&match details {
                Some(d) => format!("web UI: {d}"),
                None => "web UI".to_string(),
            }),
        )
        .await?;
    match token {
        // Shown once, on this answer only (not a redirect: nothing to bookmark).
        Some(token) => caches_page(&st, &visitor, &registry, Some((target, token)), None).await,
        None => Ok(see_other("/admin/caches")),
    }
}
