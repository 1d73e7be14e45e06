//! The web UI, served at `/` by every replica from the binary: server-rendered HTML
//! (askama templates, checked at compile time), one stylesheet and a little JavaScript
//! that only enhances. Signed-in users hold a session (see [`session`]) kept in the
//! metadata store, so any replica serves them.

use axum::routing::get;
use axum::Router;

use crate::AppState;

pub mod assets;
mod explorer;
mod headers;

pub use headers::CONTENT_SECURITY_POLICY;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/{*name}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .route("/explorer", get(explorer::page))
        .layer(axum::middleware::from_fn(headers::security_headers))
}
