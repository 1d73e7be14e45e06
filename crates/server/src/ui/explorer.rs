//! The API explorer: Swagger UI, served from the binary, over `/api/v0/openapi.json`.
//! Swagger UI's files are vendored under `assets/swagger-ui/` (see `THIRD_PARTY.md`)
//! and started by our own `init.js`, since the page's CSP allows no inline script.

use askama::Template;
use askama_web::WebTemplate;
use axum::response::{IntoResponse, Response};

use super::assets::url;

#[derive(Template, WebTemplate)]
#[template(path = "explorer.html")]
struct Explorer {
    favicon: String,
    swagger_css: String,
    explorer_css: String,
    bundle_js: String,
    init_js: String,
}

/// `GET /explorer`: no credentials needed to look; "Authorize" in the page takes them
/// for the requests it sends (the API accepts no session cookie).
pub async fn page() -> Response {
    Explorer {
        favicon: url("ui/favicon.svg"),
        swagger_css: url("swagger-ui/swagger-ui.css"),
        explorer_css: url("swagger-ui/explorer.css"),
        bundle_js: url("swagger-ui/swagger-ui-bundle.js"),
        init_js: url("swagger-ui/init.js"),
    }
    .into_response()
}
