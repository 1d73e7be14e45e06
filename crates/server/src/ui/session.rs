//! Who is looking at a page: the session cookie, sign-in and sign-out, and the checks
//! every state-changing form passes (CSRF token, and the request's own origin).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use wharf_auth::session::{constant_time_eq, Session};
use wharf_metastore::browse::Viewer as BrowseViewer;

use super::page::{Layout, UiError};
use crate::http::{body_bytes, BodyError};
use crate::AppState;

/// The cookie's name. With TLS it carries the `__Host-` prefix, which browsers accept
/// only with `Secure`, `Path=/` and no `Domain`: no other site or subdomain can set it.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-wharf_session"
    } else {
        "wharf_session"
    }
}

/// The request's visitor: a session, or anonymous.
#[derive(Clone)]
pub struct Visitor {
    pub session: Option<Session>,
    /// Authentication is off (`--insecure-no-auth`): everyone may do everything.
    pub auth_off: bool,
}

impl Visitor {
    pub fn is_admin(&self) -> bool {
        self.auth_off || wharf_auth::policy::is_system_admin(self.session.as_ref().map(|s| &s.user))
    }

    pub fn user(&self) -> Option<&wharf_metastore::accounts::User> {
        self.session.as_ref().map(|s| &s.user)
    }

    /// The principal for policy checks and the audit log.
    pub fn principal(&self) -> wharf_auth::Principal {
        match &self.session {
            Some(s) => wharf_auth::Principal::User {
                user: s.user.clone(),
                token: None,
            },
            None => wharf_auth::Principal::Anonymous,
        }
    }

    /// The viewer for listing queries.
    pub fn browse_viewer(&self) -> BrowseViewer {
        if self.is_admin() {
            return BrowseViewer::Admin;
        }
        match self.user() {
            Some(u) => BrowseViewer::User {
                id: u.id,
                name: u.name.clone(),
            },
            None => BrowseViewer::Anonymous,
        }
    }

    pub fn layout(&self, st: &AppState, title: impl Into<String>, nav: &'static str) -> Layout {
        Layout {
            title: title.into(),
            nav,
            user: self.user().map(|u| u.name.clone()),
            admin: self.is_admin(),
            csrf: self
                .session
                .as_ref()
                .map(|s| s.csrf.clone())
                .unwrap_or_default(),
            version: st.info.version.clone(),
            auth_off: self.auth_off,
        }
    }

    /// Administrators only, else 403 (or the sign-in page for anonymous visitors).
    pub fn require_admin(&self) -> Result<(), UiError> {
        if self.is_admin() {
            Ok(())
        } else if self.session.is_none() {
            Err(UiError::SignIn)
        } else {
            Err(UiError::Forbidden("this page is for administrators".into()))
        }
    }

    pub fn require_user(&self) -> Result<&Session, UiError> {
        self.session.as_ref().ok_or(UiError::SignIn)
    }
}

fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, UiError> {
        let auth_off = !st.settings.auth_enabled;
        let name = cookie_name(st.settings.tls);
        let session = match session_cookie(&parts.headers, name) {
            Some(secret) => st.auth.session(secret).await.map_err(|e| {
                tracing::error!(error = %e, "reading a web session failed");
                UiError::Internal
            })?,
            None => None,
        };
        Ok(Visitor { session, auth_off })
    }
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(tls: bool, secret: &str) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let max_age = wharf_auth::session::ABSOLUTE_LIFETIME_MS / 1000;
    HeaderValue::from_str(&format!(
        "{}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        cookie_name(tls)
    ))
    .expect("the session secret is hex")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(tls)
    ))
    .expect("static cookie")
}

/// A submitted form's fields.
pub struct Form(pub HashMap<String, String>);

impl Form {
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn checked(&self, key: &str) -> bool {
        matches!(self.get(key), "on" | "true" | "1")
    }
}

/// Refuses a state-changing request that another site may have sent: a browser names
/// the sending page's origin in `Origin` and says where it came from in
/// `Sec-Fetch-Site`; a request from another port of the same host is "same-site",
/// which `SameSite=Strict` cookies do not stop, so only "same-origin" (or a client that
/// sends neither header, which no browser is) passes.
pub fn check_origin(headers: &HeaderMap) -> Result<(), UiError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(UiError::Forbidden(format!(
                "this form was sent from another site ({site}); it was not accepted"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin == "null" || !origin_host.eq_ignore_ascii_case(host) {
            return Err(UiError::Forbidden(
                "this form was sent from another origin; it was not accepted".into(),
            ));
        }
    }
    Ok(())
}

/// Reads a form body (at most 64 KiB) after the origin check.
pub async fn read_form(req: Request) -> Result<Form, UiError> {
    check_origin(req.headers())?;
    let bytes = body_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => UiError::BadRequest("the form is too large".into()),
            BodyError::Read(e) => UiError::BadRequest(format!("the form could not be read: {e}")),
        })?;
    Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
}

/// Reads a form from a signed-in visitor and checks its CSRF token.
pub async fn signed_form(visitor: &Visitor, req: Request) -> Result<Form, UiError> {
    let form = read_form(req).await?;
    if visitor.auth_off {
        return Ok(form);
    }
    let session = visitor.require_user()?;
    if !constant_time_eq(form.get("_csrf"), &session.csrf) {
        return Err(UiError::Forbidden(
            "the form's security token is missing or stale; reload the page and try again".into(),
        ));
    }
    Ok(form)
}

/// Where to go after signing in: only a path on this site.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.contains(['\r', '\n']);
    if ok {
        next
    } else {
        "/"
    }
}

/// A 303 to `to` (Post/Redirect/Get).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_forms_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5000"));
        assert!(check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5000"),
        );
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_origin(&h).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(check_origin(&h).is_err());
        h.remove("sec-fetch-site");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:5001"),
        );
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/repos/a"), "/repos/a");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next(""), "/");
    }
}
