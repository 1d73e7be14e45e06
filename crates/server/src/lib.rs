//! The HTTP surface of wharf and the composition root that assembles a running
//! registry from its configuration.
//!
//! - `/v2/...`: the OCI distribution API ([`v2`]), routed by [`endpoint::Endpoint`].
//! - `/api/v0/...`: the management API ([`api`]).
//! - `/` and everything not above: the web UI ([`ui`]).
//! - `/healthz`, `/readyz`: liveness, and readiness for load balancers (not ready
//!   while starting or draining).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use wharf_auth::Authenticator;
use wharf_registry::Registry;

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod content_cache;
pub mod drain;
pub mod endpoint;
pub mod error;
pub mod http;
mod listener_close;
mod metrics;
pub mod run;
pub mod tls;
pub mod ui;
pub mod upgrade_checks;
pub mod v2;

pub use config::Config;
pub use wharf_metastore::schema::SCHEMA_LEVEL;

/// What a replica says about itself.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ServerInfo {
    /// wharf's version, e.g. `1.1.0`.
    pub version: String,
    /// The git commit it was built from.
    pub commit: String,
    /// The metadata schema level of the data it serves.
    pub schema_level: u32,
}

/// Request-handling settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Off only for loopback development and benchmarks (`--insecure-no-auth`).
    pub auth_enabled: bool,
    /// Whether clients reach this replica over TLS (for the token realm's scheme).
    pub tls: bool,
    /// The token endpoint to advertise, when the one seen by clients differs from the
    /// request's own host (behind a proxy).
    pub token_realm: Option<String>,
    /// How often replicas report themselves (judging who is dead depends on it).
    pub heartbeat_interval: std::time::Duration,
    /// The job workers' heartbeat interval (a worker silent for three is dead).
    pub job_heartbeat: std::time::Duration,
    /// The cluster status warns when the vulnerability database is older than this.
    pub vulndb_stale_after: std::time::Duration,
    /// The configuration the replica started with: the upgrade checks it offers
    /// (`GET /api/v0/upgrade/check`) look at its stores and data directory.
    pub config: Arc<Config>,
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// Pull-through proxy repositories (a prefix served from upstream registries).
    pub proxies: Arc<wharf_proxy::Proxies>,
    pub auth: Arc<Authenticator>,
    pub settings: Arc<Settings>,
    pub info: Arc<ServerInfo>,
    /// False while draining, so a load balancer stops sending new requests.
    pub ready: Arc<AtomicBool>,
    /// Which content cache each user is redirected to, and the redirects' signer.
    pub caches: Arc<content_cache::CacheRouting>,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(v2::handle))
        .route("/v2/", any(v2::handle))
        .route("/v2/{*rest}", any(v2::handle))
        .route("/auth/token", get(auth::token).post(auth::token))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::metrics))
        .route(
            &format!("{}/{{digest}}", wharf_cache::CACHE_BLOB_PATH),
            get(content_cache::fill),
        )
        .nest("/api/v0", api::router())
        .merge(ui::router())
        .layer(axum::middleware::from_fn(log_request))
        // Outermost: whatever answered early, the unread body is drained first.
        .layer(axum::middleware::from_fn(drain::drain_unread_body))
        .with_state(state)
}

/// One debug line per request; errors the server caused are logged where they happen.
async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
    resp
}
