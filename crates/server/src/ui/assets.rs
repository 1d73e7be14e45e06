//! The UI's static files, embedded by `build.rs` under content-hashed names and served
//! at `/static/<name>.<hash>.<ext>` with a year-long, immutable cache lifetime.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) struct Asset {
    /// The path under `assets/`, e.g. `ui/app.css`.
    pub logical: &'static str,
    /// The served name, e.g. `ui/app.3f2a9c1e07.css`.
    pub hashed: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The URL of an asset, by its path under `assets/`. Templates call this; a name that
/// does not exist is a bug caught by the tests that render every page.
pub fn url(logical: &str) -> String {
    match ASSETS.iter().find(|a| a.logical == logical) {
        Some(a) => format!("/static/{}", a.hashed),
        None => {
            debug_assert!(false, "no asset {logical}");
            format!("/static/{logical}")
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// `GET /static/{*name}`: only hashed names are served, so a cached copy is never stale.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.hashed == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let mut resp = asset.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.hashed)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

/// `GET /favicon.ico`: browsers ask for it whatever the page says.
pub async fn favicon() -> Response {
    match ASSETS.iter().find(|a| a.logical == "ui/favicon.svg") {
        Some(a) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            a.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_unique_hashed_name_and_a_known_type() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.hashed), "{} twice", a.hashed);
            assert_ne!(a.hashed, a.logical);
            assert!(
                !content_type(a.hashed).starts_with("text/plain") || a.logical.ends_with(".txt"),
                "{} has no content type",
                a.logical
            );
        }
        assert!(url("ui/app.css").starts_with("/static/ui/app."));
    }
}
