//! The registry's side of content caches: which cache each user is redirected to,
//! the signed redirect itself, the blob endpoint that caches fill from, and how each
//! registered cache is doing (for the cluster status, the API and metrics).
//!
//! Every replica keeps a snapshot of the caches and of users' choices, refreshed every
//! [`REFRESH`]: a blob GET costs no extra query. A cache is routed to only while its
//! heartbeats arrive and it says it is serving; a silent or draining cache's users are
//! served by the registry itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wharf_cache::report::{CacheReport, CacheState};
use wharf_cache::signed::{SignedQuery, UrlSigner, Verifier, KEY_CONTEXT};
use wharf_metastore::{ContentCacheRow, MetaStore};
use wharf_oci::Digest;

use crate::http::{header_str, parse_range, set, DOCKER_CONTENT_DIGEST};
use crate::AppState;

/// How often a replica reloads the caches and the users' choices.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A cache silent for this many of its heartbeat intervals is not routed to.
const SILENT_AFTER_INTERVALS: i64 = 3;

/// The prefix of cache tokens, so a leaked one is recognisable.
pub const CACHE_TOKEN_PREFIX: &str = "wharf_cache_";

/// A new random token for a cache (256 bits); the store keeps its hash.
pub fn new_cache_token() -> String {
    format!(
        "{CACHE_TOKEN_PREFIX}{}",
        hex::encode(wharf_auth::secret::random_bytes::<32>())
    )
}

/// A registered cache as the API, the cluster status and the UI show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CacheView {
    pub name: String,
    pub url: String,
    pub region: String,
    /// `serving`, `draining`, `silent` (heartbeats stopped) or `unseen` (none yet).
    pub state: String,
    /// Whether the registry redirects to it now.
    pub routed: bool,
    /// The version it reported, if it reported.
    pub version: Option<String>,
    /// Milliseconds since its last heartbeat, by the store's clock.
    pub silent_for_ms: Option<i64>,
    /// Hits over all downloads since it started.
    pub hit_ratio: Option<f64>,
    /// Its last heartbeat, as it sent it.
    #[schema(value_type = Option<Object>)]
    pub report: Option<CacheReport>,
}

/// A cache in a list for people: `eu (1.2.0, serving)`.
pub fn describe(name: &str, version: Option<&str>, state: &str) -> String {
    format!("{name} ({}, {state})", version.unwrap_or("version unknown"))
}

/// Judges a cache at the store's time `now`.
pub fn assess(row: &ContentCacheRow, now: i64) -> CacheView {
    let report: Option<CacheReport> = row
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    let silent_for_ms = row.heartbeat_at_ms.map(|at| now - at);
    let state = match (&report, silent_for_ms) {
        (None, _) | (_, None) => "unseen",
        (Some(r), Some(silent))
            if silent > SILENT_AFTER_INTERVALS * r.heartbeat_interval_ms.max(500) =>
        {
            "silent"
        }
        (Some(r), _) if r.state == CacheState::Draining => "draining",
        _ => "serving",
    };
    CacheView {
        name: row.name.clone(),
        url: row.url.clone(),
        region: row.region.clone(),
        state: state.to_string(),
        routed: state == "serving",
        version: report.as_ref().map(|r| r.version.clone()),
        silent_for_ms,
        hit_ratio: report.as_ref().and_then(CacheReport::hit_ratio),
        report,
    }
}

/// Every registered cache, judged now.
pub async fn cache_views(meta: &dyn MetaStore) -> wharf_metastore::Result<Vec<CacheView>> {
    let (rows, now) = meta.content_caches().await?;
    Ok(rows.iter().map(|r| assess(r, now)).collect())
}

#[derive(Default)]
struct Snapshot {
    /// User id → the URL of their cache and its name, for routed caches only.
    routes: HashMap<i64, (String, String)>,
}

/// Redirect signing and routing, shared by a replica's requests.
pub struct CacheRouting {
    signer: UrlSigner,
    /// How long a redirect URL is valid (`cache_redirect_ttl_secs`): long enough for a
    /// client to follow it, short enough that a copied URL is soon useless.
    ttl_secs: i64,
    verifier: Verifier,
    snapshot: RwLock<Snapshot>,
    /// Redirects by cache name, for `/metrics`.
    redirects: RwLock<HashMap<String, u64>>,
}

impl CacheRouting {
    pub fn new(seeds: &[(String, [u8; 32])], ttl: Duration) -> CacheRouting {
        let signer = UrlSigner::from_seeds(seeds);
        CacheRouting {
            ttl_secs: ttl.as_secs() as i64,
            verifier: signer.verifier(),
            signer,
            snapshot: RwLock::new(Snapshot::default()),
            redirects: RwLock::new(HashMap::new()),
        }
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// Reloads the caches and the users' choices.
    pub async fn refresh(&self, meta: &dyn MetaStore) -> wharf_metastore::Result<()> {
        let (rows, now) = match meta.content_caches().await {
            Ok(v) => v,
            // A store without the table (during a rollback window) has no caches.
            Err(e) if is_missing_table(&e) => (Vec::new(), 0),
            Err(e) => return Err(e),
        };
        let routed: HashMap<String, String> = rows
            .iter()
            .map(|r| (r, assess(r, now)))
            .filter(|(_, v)| v.routed)
            .map(|(r, _)| (r.name.clone(), r.url.clone()))
            .collect();
        let routes = if routed.is_empty() {
            HashMap::new()
        } else {
            meta.content_cache_routes()
                .await?
                .into_iter()
                .filter_map(|(user, cache)| {
                    routed.get(&cache).map(|url| (user, (url.clone(), cache)))
                })
                .collect()
        };
        self.snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .routes = routes;
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until the task is dropped.
    pub async fn run(self: Arc<Self>, meta: Arc<dyn MetaStore>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.refresh(meta.as_ref()).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "could not reload the content caches; redirects use the last known state");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Where to send `user` for `digest`, if they have a cache that is serving.
    pub fn redirect(&self, user_id: i64, digest: &Digest, size: u64) -> Option<String> {
        let (url, name) = self
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .routes
            .get(&user_id)
            .cloned()?;
        let expires = wharf_metastore::now_ms() / 1000 + self.ttl_secs;
        *self
            .redirects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        Some(self.signer.url(&url, digest, size, expires))
    }

    /// A URL for `digest` at the cache at `base`, valid as long as a redirect.
    pub fn url_at(&self, base: &str, digest: &Digest, size: u64) -> String {
        let expires = wharf_metastore::now_ms() / 1000 + self.ttl_secs;
        self.signer.url(base, digest, size, expires)
    }

    pub fn redirect_counts(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> = self
            .redirects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        v
    }
}

/// The derived keys of the registry's redirect signatures.
pub fn seeds(auth: &wharf_auth::Authenticator) -> Vec<(String, [u8; 32])> {
    auth.derived_keys(KEY_CONTEXT)
}

fn is_missing_table(e: &wharf_metastore::MetaError) -> bool {
    let m = e.to_string();
    m.contains("no such table") || m.contains("does not exist")
}

/// `GET|HEAD /cache/v1/blobs/<digest>?s&e&k&sig` on a replica: what a cache fills
/// from. The signature is the permission (the registry checked the user when it
/// signed); the blob is read from the blob store.
pub async fn fill(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    query: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let text = |status: StatusCode, m: String| (status, m + "\n").into_response();
    let Ok(digest) = digest.parse::<Digest>() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{digest:?} is not a digest"),
        );
    };
    let Ok(Query(q)) = query else {
        return text(StatusCode::FORBIDDEN, "the URL is not signed".into());
    };
    if let Err(e) = st
        .caches
        .verifier
        .verify(&digest, &q, wharf_metastore::now_ms() / 1000)
    {
        return text(StatusCode::FORBIDDEN, e.to_string());
    }
    let range = match parse_range(header_str(req.headers(), &header::RANGE), q.s) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let head = req.method() == axum::http::Method::HEAD;
    let body = if head {
        Body::empty()
    } else {
        match st.registry.blobs().read(&digest, range).await {
            Ok(s) => Body::from_stream(s),
            Err(wharf_blobstore::StoreError::NotFound) => {
                return text(StatusCode::NOT_FOUND, format!("{digest} is not stored"))
            }
            Err(e) => {
                tracing::error!(%digest, error = %e, "a cache's fill could not be read");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the blob store failed; the registry's log has the details".into(),
                );
            }
        }
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    let len = match range {
        Some(r) => {
            set(
                h,
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, q.s),
            );
            r.end - r.start
        }
        None => q.s,
    };
    set(h, header::CONTENT_LENGTH, len.to_string());
    set(h, header::CONTENT_TYPE, "application/octet-stream");
    set(h, DOCKER_CONTENT_DIGEST, digest.to_string());
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    resp
}
