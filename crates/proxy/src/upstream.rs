//! One upstream registry, spoken to as a registry client does: the Docker token
//! protocol (a `401` with a `Bearer` challenge, a token fetched from its realm with the
//! proxy's credentials if any, cached until it expires) or HTTP basic authentication.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

/// A token is dropped this long before the upstream says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);
/// Tokens are cached for this long when the token server does not say.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} rate-limits this registry (429 Too Many Requests)")]
    RateLimited { url: String },
    #[error("{url} refused the proxy's credentials: {detail}")]
    Auth { url: String, detail: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
}

impl UpstreamError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::Status { status: 404, .. })
    }
}

/// How a request to the upstream is authorised.
#[derive(Clone)]
enum Credential {
    Bearer(String),
    Basic,
}

/// An upstream registry and the credentials the proxy uses with it.
pub struct Upstream {
    /// The base URL, without a trailing `/`.
    pub url: String,
    http: reqwest::Client,
    username: Option<String>,
    password: Option<String>,
    /// Bearer tokens by scope, with their expiry.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The upstream challenged for basic authentication once: send it up front.
    basic: AtomicBool,
}

/// The parameters of a `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="…"` (quoted values may hold commas).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Upstream {
    pub fn new(
        http: reqwest::Client,
        url: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> Upstream {
        Upstream {
            url: url.trim_end_matches('/').to_string(),
            http,
            username,
            password,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().expect("token cache lock");
        tokens
            .get(scope)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(t, _)| t.clone())
    }

    /// Fetches a token from the challenge's realm, with the proxy's credentials if it
    /// has them (anonymous tokens otherwise, as Docker Hub gives for public images).
    async fn fetch_token(&self, c: &Challenge, scope: &str) -> Result<String, UpstreamError> {
        let realm = c.params.get("realm").ok_or_else(|| UpstreamError::Auth {
            url: self.url.clone(),
            detail: "a Bearer challenge without a realm".into(),
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(service) = c.params.get("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_deref());
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Auth {
                url: self.url.clone(),
                detail: format!("its token server {realm} answered {}", resp.status()),
            });
        }
        let reply: TokenReply = resp.json().await.map_err(|e| UpstreamError::Auth {
            url: self.url.clone(),
            detail: format!("its token server {realm} sent no token: {e}"),
        })?;
        let token = reply
            .token
            .or(reply.access_token)
            .ok_or_else(|| UpstreamError::Auth {
                url: self.url.clone(),
                detail: format!("its token server {realm} sent no token"),
            })?;
        let life = reply
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFE)
            .saturating_sub(TOKEN_MARGIN);
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(scope.to_string(), (token.clone(), Instant::now() + life));
        Ok(token)
    }

    /// Sends `method /v2/{path}` with the credential it needs, answering one
    /// authentication challenge. Any status but 2xx is an error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &[&str],
        scope: &str,
    ) -> Result<Response, UpstreamError> {
        let url = format!("{}/v2/{path}", self.url);
        let mut cred = match self.cached_token(scope) {
            Some(t) => Some(Credential::Bearer(t)),
            None if self.basic.load(Ordering::Relaxed) => Some(Credential::Basic),
            None => None,
        };
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), &url);
            if !accept.is_empty() {
                req = req.header(ACCEPT, accept.join(", "));
            }
            match &cred {
                Some(Credential::Bearer(t)) => {
                    req = req.header(AUTHORIZATION, format!("Bearer {t}"))
                }
                Some(Credential::Basic) => {
                    if let Some(user) = &self.username {
                        req = req.basic_auth(user, self.password.as_deref());
                    }
                }
                None => {}
            }
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(UpstreamError::RateLimited {
                    url: self.url.clone(),
                });
            }
            if status != StatusCode::UNAUTHORIZED {
                return Err(UpstreamError::Status {
                    url: self.url.clone(),
                    status: status.as_u16(),
                });
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let refused = |detail: &str| UpstreamError::Auth {
                url: self.url.clone(),
                detail: detail.to_string(),
            };
            if attempt > 0 {
                return Err(refused("401 Unauthorized with the credential it asked for"));
            }
            cred = match challenge {
                Some(c) if c.scheme == "bearer" => {
                    let scope = c
                        .params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| scope.to_string());
                    Some(Credential::Bearer(self.fetch_token(&c, &scope).await?))
                }
                Some(c) if c.scheme == "basic" => {
                    if self.username.is_none() {
                        return Err(refused(
                            "it asks for a user name and password, and the proxy has none",
                        ));
                    }
                    self.basic.store(true, Ordering::Relaxed);
                    Some(Credential::Basic)
                }
                _ => {
                    return Err(refused(
                        "401 Unauthorized without a challenge the proxy understands",
                    ))
                }
            };
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "Registry Realm");
    }

    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as Status};
    use axum::response::IntoResponse;
    use axum::routing::get;

    /// A registry that wants bearer tokens, and its token server, which wants the
    /// proxy's basic credentials (`proxy:s3cret` → `cHJveHk6czNjcmV0`).
    #[derive(Clone, Default)]
    struct Fake {
        token_requests: Arc<AtomicUsize>,
        base: Arc<Mutex<String>>,
    }

    async fn token(
        State(f): State<Fake>,
        headers: HeaderMap,
        q: axum::extract::RawQuery,
    ) -> axum::response::Response {
        f.token_requests.fetch_add(1, Ordering::SeqCst);
        let query = q.0.unwrap_or_default();
        let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
        if basic != Some("Basic cHJveHk6czNjcmV0") {
            return (Status::UNAUTHORIZED, "bad credentials").into_response();
        }
        assert!(query.contains("service=fake"), "{query}");
        assert!(
            query.contains("scope=repository%3Alib%2Fapp%3Apull"),
            "{query}"
        );
        axum::Json(serde_json::json!({"token": "tok-1", "expires_in": 300})).into_response()
    }

    async fn manifest(State(f): State<Fake>, headers: HeaderMap) -> axum::response::Response {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer tok-1") {
            return ([("docker-content-digest", "sha256:0000")], "{}").into_response();
        }
        let base = f.base.lock().unwrap().clone();
        (
            Status::UNAUTHORIZED,
            [(
                "www-authenticate",
                format!(
                    r#"Bearer realm="{base}/token",service="fake",scope="repository:lib/app:pull""#
                ),
            )],
        )
            .into_response()
    }

    async fn start_fake() -> (Fake, String, tokio::task::JoinHandle<()>) {
        let fake = Fake::default();
        let app = axum::Router::new()
            .route("/token", get(token))
            .route(
                "/v2/lib/app/manifests/{reference}",
                get(manifest).head(manifest),
            )
            .route(
                "/v2/limited/manifests/{reference}",
                get(|| async { Status::TOO_MANY_REQUESTS }),
            )
            .route(
                "/v2/broken/manifests/{reference}",
                get(|| async { Status::BAD_GATEWAY }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *fake.base.lock().unwrap() = base.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (fake, base, task)
    }

    #[tokio::test]
    async fn bearer_tokens_are_fetched_with_the_credentials_and_cached() {
        let (fake, base, task) = start_fake().await;
        let up = Upstream::new(
            reqwest::Client::new(),
            &base,
            Some("proxy".into()),
            Some("s3cret".into()),
        );
        let scope = "repository:lib/app:pull";
        for _ in 0..3 {
            let r = up
                .send(
                    Method::HEAD,
                    "lib/app/manifests/1",
                    &["application/json"],
                    scope,
                )
                .await
                .unwrap();
            assert_eq!(r.headers()["docker-content-digest"], "sha256:0000");
        }
        assert_eq!(
            fake.token_requests.load(Ordering::SeqCst),
            1,
            "the token is cached until it expires"
        );

        let wrong = Upstream::new(
            reqwest::Client::new(),
            &base,
            Some("proxy".into()),
            Some("wrong".into()),
        );
        let err = wrong
            .send(Method::GET, "lib/app/manifests/1", &[], scope)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Auth { .. }), "{err}");
        assert!(
            err.to_string().contains("token server") && err.to_string().contains("401"),
            "{err}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_told_apart() {
        let (_fake, base, task) = start_fake().await;
        let up = Upstream::new(reqwest::Client::new(), &base, None, None);
        let err = up
            .send(
                Method::HEAD,
                "limited/manifests/1",
                &[],
                "repository:limited:pull",
            )
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::RateLimited { .. }), "{err}");
        assert!(err.to_string().contains("429"), "{err}");
        let err = up
            .send(
                Method::GET,
                "broken/manifests/1",
                &[],
                "repository:broken:pull",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, UpstreamError::Status { status: 502, .. }),
            "{err}"
        );
        assert!(!err.is_not_found());
        task.abort();
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let up = Upstream::new(reqwest::Client::new(), &base, None, None);
        let err = up
            .send(Method::HEAD, "a/manifests/1", &[], "repository:a:pull")
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&base), "{err}");
    }
}
