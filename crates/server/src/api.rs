//! The management API, `/api/v0`. For now: what this replica is, and health.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/meta/version", get(version))
}

/// `GET /api/v0/meta/version`: version, commit and schema level of this replica, so
/// operators and upgrade tooling can ask a running replica what it is.
async fn version(State(st): State<AppState>) -> impl IntoResponse {
    Json(st.info.as_ref().clone())
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
