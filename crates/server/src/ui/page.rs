//! What every page shares: the layout's data, error pages, and formatting helpers.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::assets;

/// The data of `base.html`, which every page extends.
pub struct Layout {
    pub title: String,
    /// Which main-menu entry is current.
    pub nav: &'static str,
    pub user: Option<String>,
    pub admin: bool,
    pub csrf: String,
    pub version: String,
    pub auth_off: bool,
}

impl Layout {
    pub fn asset(&self, logical: &str) -> String {
        assets::url(logical)
    }
}

/// Renders a template into a response; a template that fails to render (a bug) is a 500.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            UiError::Internal.into_response()
        }
    }
}

pub fn render_status(status: StatusCode, t: &impl Template) -> Response {
    let mut r = render(t);
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

/// A page that shows a form's error answers 400, the same page without one 200.
pub fn form_status(error: &Option<String>) -> StatusCode {
    if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum UiError {
    /// Anonymous visitor on a page that needs a user: to the sign-in page.
    SignIn,
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Internal,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    l: Layout,
    status: u16,
    heading: &'a str,
    message: &'a str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            UiError::SignIn => return Redirect::to("/login").into_response(),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.as_str()),
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.as_str()),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.as_str()),
            UiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "the registry's log has the details",
            ),
        };
        // The error page carries no session data: it is rendered without a visitor.
        let page = ErrorPage {
            l: Layout {
                title: heading.to_string(),
                nav: "",
                user: None,
                admin: false,
                csrf: String::new(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                auth_off: false,
            },
            status: status.as_u16(),
            heading,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message.to_string()).into_response(),
        }
    }
}

/// A store failure: logged, and a 500 page.
pub fn internal(e: impl std::fmt::Display) -> UiError {
    tracing::error!(error = %e, "a web UI page failed");
    UiError::Internal
}

impl From<wharf_metastore::MetaError> for UiError {
    fn from(e: wharf_metastore::MetaError) -> Self {
        internal(e)
    }
}

impl From<wharf_auth::AuthError> for UiError {
    fn from(e: wharf_auth::AuthError) -> Self {
        internal(e)
    }
}

pub type UiResult = Result<Response, UiError>;

/// `1.4 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A time as `2026-12-05 21:54:01 UTC`.
pub fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn opt_time(ms: Option<i64>) -> String {
    ms.map(time).unwrap_or_else(|| "—".into())
}

/// `sha256:0123456789ab`.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

/// A query-string value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_796_507_641_000), "2026-12-05 21:54:01 UTC");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }
}
