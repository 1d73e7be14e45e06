//! Who is calling, and may they: credentials from the `Authorization` header, the
//! Docker token protocol's challenges, and the `/auth/token` endpoint.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use wharf_auth::jwt::Claims;
use wharf_auth::{AuthError, Principal, Scope};
use wharf_oci::ErrorCode;

use crate::error::ApiError;
use crate::http::{body_bytes, BodyError};
use crate::AppState;

/// A caller, and the bearer token it presented if any (whose scopes bound what it may do).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub claims: Option<Claims>,
    /// Whether the request carried credentials at all (anonymous callers are challenged
    /// with 401 instead of refused with 403).
    pub presented_credentials: bool,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            principal: Principal::Anonymous,
            claims: None,
            presented_credentials: false,
        }
    }
}

pub fn client_addr(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// `user:secret` from `Authorization: Basic …`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(B64.decode(encoded.trim()).ok()?).ok()?;
    let (user, secret) = decoded.split_once(':')?;
    Some((user.to_string(), secret.to_string()))
}

/// Identifies the caller from the request's `Authorization` header.
pub async fn identify(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Caller::anonymous());
    };
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        let token = token.trim();
        // An access token sent as a bearer token (as GitHub's and GitLab's APIs take
        // them): the same as HTTP basic auth with it, since it names its user.
        if token.starts_with(wharf_auth::secret::TOKEN_PREFIX) {
            let principal = st
                .auth
                .basic("", token, addr)
                .await
                .map_err(|e| auth_error(st, headers, e, None))?;
            return Ok(Caller {
                principal,
                claims: None,
                presented_credentials: true,
            });
        }
        let (claims, principal) = st
            .auth
            .bearer(token)
            .await
            .map_err(|e| auth_error(st, headers, e, None))?;
        return Ok(Caller {
            principal,
            claims: Some(claims),
            presented_credentials: true,
        });
    }
    let Some((user, secret)) = basic_credentials(value) else {
        return Err(unauthorized(
            st,
            headers,
            "the Authorization header is neither Basic nor Bearer",
            None,
        ));
    };
    let principal = st
        .auth
        .basic(&user, &secret, addr)
        .await
        .map_err(|e| auth_error(st, headers, e, None))?;
    Ok(Caller {
        principal,
        claims: None,
        presented_credentials: true,
    })
}

/// Whether the caller may pull from `repo` (for mount sources).
pub async fn may_pull(st: &AppState, caller: &Caller, repo: &wharf_oci::RepoName) -> bool {
    if !st.settings.auth_enabled {
        return true;
    }
    match &caller.claims {
        Some(claims) => claims
            .access
            .iter()
            .any(|s| s.allows("repository", repo.as_str(), "pull")),
        None => st
            .auth
            .repo_access(&caller.principal, repo.as_str())
            .await
            .is_ok_and(|a| a.pull),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "authentication failed");
    ApiError::new(
        ErrorCode::Unknown,
        "internal error; the registry's log has the details",
    )
}

/// The token endpoint a client should ask, derived from how it reached us unless
/// configured.
fn realm(st: &AppState, headers: &HeaderMap) -> String {
    if let Some(r) = &st.settings.token_realm {
        return r.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get(HeaderName::from_static("x-forwarded-proto"))
        .and_then(|h| h.to_str().ok())
        .unwrap_or(if st.settings.tls { "https" } else { "http" });
    format!("{proto}://{host}/auth/token")
}

/// A 401 with the challenge that sends Docker clients to the token endpoint.
pub fn unauthorized(
    st: &AppState,
    headers: &HeaderMap,
    detail: &str,
    scope: Option<&str>,
) -> ApiError {
    challenge(st, headers, ErrorCode::Unauthorized, detail, scope, None)
}

/// A 401 with a Bearer challenge; `error` is RFC 6750's (`invalid_token`,
/// `insufficient_scope`), which tells a client whether signing in again could help.
fn challenge(
    st: &AppState,
    headers: &HeaderMap,
    code: ErrorCode,
    detail: &str,
    scope: Option<&str>,
    error: Option<&str>,
) -> ApiError {
    let mut challenge = format!(
        r#"Bearer realm="{}",service="{}""#,
        realm(st, headers),
        st.auth.config().service
    );
    if let Some(scope) = scope {
        challenge.push_str(&format!(r#",scope="{scope}""#));
    }
    if let Some(error) = error {
        challenge.push_str(&format!(r#",error="{error}""#));
    }
    let mut err = ApiError::new(code, detail).with_header(header::WWW_AUTHENTICATE, challenge);
    err.status_override = Some(axum::http::StatusCode::UNAUTHORIZED);
    err
}

/// A bearer token that is valid but does not grant what the request needs: still a
/// 401 (the client may ask for a token with the scope named), marked
/// `insufficient_scope` and DENIED, so clients report "denied", not "sign in".
pub fn insufficient_scope(
    st: &AppState,
    headers: &HeaderMap,
    signed_in: bool,
    detail: &str,
    scope: &str,
) -> ApiError {
    // An anonymous token's holder could still sign in; a user's could not do better.
    let code = if signed_in {
        ErrorCode::Denied
    } else {
        ErrorCode::Unauthorized
    };
    challenge(
        st,
        headers,
        code,
        detail,
        Some(scope),
        Some("insufficient_scope"),
    )
}

pub fn auth_error(
    st: &AppState,
    headers: &HeaderMap,
    e: AuthError,
    scope: Option<&str>,
) -> ApiError {
    match e {
        AuthError::RateLimited(secs) => ApiError::new(ErrorCode::TooManyRequests, e.to_string())
            .with_header(header::RETRY_AFTER, secs.to_string()),
        AuthError::Store(e) => internal(e),
        e @ (AuthError::BadToken(_) | AuthError::TokenRevoked) => challenge(
            st,
            headers,
            ErrorCode::Unauthorized,
            &e.to_string(),
            scope,
            Some("invalid_token"),
        ),
        other => unauthorized(st, headers, &other.to_string(), scope),
    }
}

/// `GET|POST /auth/token`: the Docker token protocol. Credentials come as HTTP basic
/// (password or access token), as a form (`grant_type=password|refresh_token`), or not
/// at all (anonymous, for public repositories). Scopes are granted as far as allowed.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    match issue_token(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn issue_token(st: &AppState, req: Request) -> Result<Response, ApiError> {
    let addr = client_addr(&req);
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let is_post = req.method() == axum::http::Method::POST;
    if is_post {
        let body = body_bytes(req.into_body(), 64 * 1024)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    ApiError::new(ErrorCode::Unsupported, "token request too large")
                }
                BodyError::Read(e) => ApiError::new(
                    ErrorCode::Unsupported,
                    format!("body could not be read: {e}"),
                ),
            })?;
        params.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    // GET takes repeated `scope=`; the OAuth2 POST form takes space-separated scopes.
    let scopes: Vec<Scope> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();

    let form_credentials = match get("grant_type").as_deref() {
        Some("password") => Some((
            get("username").unwrap_or_default(),
            get("password").unwrap_or_default(),
        )),
        Some("refresh_token") => Some((
            get("username").unwrap_or_default(),
            get("refresh_token").unwrap_or_default(),
        )),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                format!("grant_type {other:?} is not supported"),
            ))
        }
        None => None,
    };
    let principal = match form_credentials {
        Some((user, secret)) => st
            .auth
            .basic(&user, &secret, addr)
            .await
            .map_err(|e| auth_error(st, &headers, e, None))?,
        None => identify(st, &headers, addr).await?.principal,
    };
    let issued = st
        .auth
        .issue(&principal, &scopes)
        .await
        .map_err(|e| auth_error(st, &headers, e, None))?;

    // A refresh token ("identity token" in Docker) when asked for: a revocable access
    // token, so the client need not keep the password.
    let wants_refresh = get("offline_token").as_deref() == Some("true")
        || get("access_type").as_deref() == Some("offline");
    let refresh = match (&principal, wants_refresh) {
        (Principal::User { user, token: None }, true) => {
            let expires = wharf_metastore::now_ms() + REFRESH_TOKEN_DAYS * 24 * 3600 * 1000;
            let label = format!(
                "refresh token for {}",
                get("client_id").unwrap_or_else(|| "a client".into())
            );
            let (secret, _) = st
                .auth
                .create_access_token(user, &label, Some(expires))
                .await
                .map_err(internal)?;
            Some(secret)
        }
        _ => None,
    };
    let issued_at = format_rfc3339(issued.issued_at_secs);
    let mut body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    Ok(Json(body).into_response())
}

/// Refresh tokens handed to `docker login` expire after this many days of life.
const REFRESH_TOKEN_DAYS: i64 = 90;

/// `2026-11-23T23:59:00Z` from Unix seconds (the token protocol's `issued_at`).
pub fn format_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_478_340), "2026-11-23T23:59:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            basic_credentials("Basic YWxpY2U6cHc6eA=="),
            Some(("alice".into(), "pw:x".into()))
        );
        assert_eq!(basic_credentials("Basic !!"), None);
        assert_eq!(basic_credentials("Token x"), None);
    }
}
