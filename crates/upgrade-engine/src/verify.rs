//! Verification after an upgrade (`wharf upgrade verify`, and the rolling upgrade's
//! `verify` step): checks the running registry as its clients
//! reach it (docs/upgrading.md): the data's and every live replica's version, the
//! registry API, the cluster status, a canary image pushed, pulled back bit for bit and
//! deleted, and the web UI. Each check passes, warns, fails or is skipped, with what it
//! measured; exit status 1 if any fails.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use semver::Version;
use serde_json::{json, Value};
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

use wharf_server::upgrade_checks::{Check, FAIL, SKIPPED};

/// Where the canary goes; each run pushes a new tag and deletes it again.
pub const CANARY_REPO: &str = "wharf-verify/canary";
/// Size of the canary's layer of random bytes.
const CANARY_LAYER_BYTES: usize = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn check(name: &'static str, ok: bool, measured: String, fix: Option<String>) -> Check {
    Check {
        name,
        status: if ok { "pass" } else { "fail" },
        measured,
        fix: if ok { None } else { fix },
    }
}

/// A user name and its password (or access token), to sign in with.
pub type Credentials = (String, String);

/// What `verify` found: every check, and the canary's details (digests, timings).
pub struct Verification {
    pub checks: Vec<Check>,
    pub canary: Option<Value>,
}

impl Verification {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.status == FAIL).count()
    }
}

/// `wharf upgrade verify`: the data's and every live replica's version (`data` is the
/// data's version as read before), then the checks through the registry at `base` as
/// its clients reach it, against release `own`.
pub async fn verify(
    config: &wharf_server::Config,
    data: anyhow::Result<Version>,
    own: &Version,
    base: &str,
    creds: Option<Credentials>,
    timeout: Duration,
) -> anyhow::Result<Verification> {
    let reg = Registry::new(base, creds, timeout)?;
    let mut checks = vec![versions(config, data, own).await];
    let (more, canary) = registry_checks(&reg, own).await;
    checks.extend(more);
    Ok(Verification { checks, canary })
}

/// Checks that `base` is an http:// or https:// URL, as `verify` needs it.
pub fn check_url(base: &str) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/').to_string();
    match reqwest::Url::parse(&base) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(base),
        _ => anyhow::bail!(
            "--url {base:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:5000)"
        ),
    }
}

/// Whether release `v` has the web UI and content caches (1.2.0 brought both): an
/// intermediate hop to an older release is not checked for them.
fn has_web_ui(v: &Version) -> bool {
    (v.major, v.minor) >= (1, 2)
}

/// The checks made through the registry's own API: `api`, `cluster-status`, `canary`,
/// `web-ui`; and the canary's details.
async fn registry_checks(reg: &Registry, own: &Version) -> (Vec<Check>, Option<Value>) {
    let signin = reg.sign_in().await;
    let mut checks = vec![api(reg, &signin, own).await, cluster_status(reg).await];
    let (c, canary) = canary(reg, &signin).await;
    checks.push(c);
    if has_web_ui(own) {
        checks.push(web_ui(reg, own).await);
        checks.push(content_caches(reg, &signin).await);
    } else {
        for name in ["web-ui", "content-caches"] {
            checks.push(Check {
                name,
                status: SKIPPED,
                measured: format!("release {own} has neither a web UI nor content caches"),
                fix: None,
            });
        }
    }
    (checks, canary)
}

/// Every content cache the registry redirects to fetches a probe blob from the registry
/// and serves it back bit for bit, at a URL the registry signed for it (as a user of
/// that cache would be sent). Needs an administrator (the cluster status and the probe
/// URL); caches that are not serving are listed, not fetched from.
async fn content_caches(reg: &Registry, signin: &Result<SignIn, SignInFailure>) -> Check {
    let skipped = |measured: String| Check {
        name: "content-caches",
        status: SKIPPED,
        measured,
        fix: None,
    };
    let Ok(s) = signin else {
        return skipped("not signed in".into());
    };
    let api = |method: Method, path: &str| {
        let mut rb = reg.client.request(method, reg.url(path));
        if let Some((u, p)) = &reg.creds {
            rb = rb.basic_auth(u, Some(p));
        }
        rb
    };
    let status = match send(api(Method::GET, "/api/v0/meta/cluster_status")).await {
        Ok(r) if r.status == StatusCode::OK => {
            serde_json::from_slice::<Value>(&r.body).unwrap_or_default()
        }
        Ok(r) => {
            return skipped(format!(
                "the cluster status needs an administrator ({})",
                r.status
            ))
        }
        Err(e) => return skipped(format!("no cluster status: {e}")),
    };
    let caches = status["caches"].as_array().cloned().unwrap_or_default();
    if caches.is_empty() {
        return check(
            "content-caches",
            true,
            "no content caches registered".into(),
            None,
        );
    }
    let mut notes = Vec::new();
    let mut failed = Vec::new();
    let probe = random_layer();
    let digest = sha256(&probe);
    if let Err(e) = reg.push_blob(s, &probe, &digest).await {
        return check(
            "content-caches",
            false,
            format!("pushing the probe blob: {e}"),
            Some(FIX_URL.into()),
        );
    }
    for c in &caches {
        let name = c["name"].as_str().unwrap_or("?");
        if c["routed"] != Value::Bool(true) {
            notes.push(format!(
                "{name}: not checked ({})",
                c["state"].as_str().unwrap_or("?")
            ));
            continue;
        }
        let started = Instant::now();
        let result: Result<(), String> = async {
            let r = send(
                api(
                    Method::POST,
                    &format!("/api/v0/content_caches/{name}/probe"),
                )
                .json(&json!({"repository": CANARY_REPO, "digest": digest})),
            )
            .await?;
            if r.status != StatusCode::OK {
                return Err(format!("the probe URL: {}", r.describe()));
            }
            let url = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["url"].as_str().map(str::to_string))
                .ok_or("the probe URL: no url in the answer")?;
            let r = send(reg.client.get(&url)).await?;
            if r.status != StatusCode::OK {
                return Err(format!("GET at the cache answered {}", r.describe()));
            }
            if sha256(&r.body) != digest {
                return Err("the cache served other bytes than the registry holds".into());
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => notes.push(format!(
                "{name}: served the probe intact in {} ms",
                started.elapsed().as_millis()
            )),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    // The probe goes; its bytes are GC's.
    let _ = send(reg.v2(
        Method::DELETE,
        &format!("/v2/{CANARY_REPO}/blobs/{digest}"),
        s,
    ))
    .await;
    if failed.is_empty() {
        check("content-caches", true, notes.join("; "), None)
    } else {
        failed.extend(notes);
        check(
            "content-caches",
            false,
            failed.join("; "),
            Some("check the cache's log and its upstream (--cache-for); `wharf cache list` shows its state".into()),
        )
    }
}

/// `web-ui`: the sign-in page answers with its security headers, every file it links
/// loads, and a signed-in request to the system page shows this release as the
/// answering replica's version. The session is ended again at the end.
async fn web_ui(reg: &Registry, own: &Version) -> Check {
    let fail =
        |measured: String, fix: &str| check("web-ui", false, measured, Some(fix.to_string()));
    let fix_reach =
        "open the URL in a browser; a proxy in front of wharf must pass / and /static/ through";
    // Redirects are the answers checked here, not followed.
    let client = match Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wharf-upgrade-verify/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot make an HTTP client: {e}"), fix_reach),
    };
    let started = Instant::now();
    let login = match client.get(format!("{}/login", reg.base)).send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("GET /login: {e}"), fix_reach),
    };
    let status = login.status();
    let csp = login
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .is_some();
    let page = login.text().await.unwrap_or_default();
    if status != StatusCode::OK || !page.contains("action=\"/login\"") {
        return fail(
            format!("GET /login answered {status} without the sign-in form"),
            fix_reach,
        );
    }
    if !csp {
        return fail(
            "the sign-in page has no Content-Security-Policy header".into(),
            "a proxy in front of wharf must not strip its security headers",
        );
    }
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/static/"))
        .collect();
    for a in &assets {
        match client.get(format!("{}{a}", reg.base)).send().await {
            Ok(r) if r.status() == StatusCode::OK => {}
            Ok(r) => return fail(format!("GET {a}: {}", r.status()), fix_reach),
            Err(e) => return fail(format!("GET {a}: {e}"), fix_reach),
        }
    }
    let mut session_cookie = None;
    if let Some((user, secret)) = &reg.creds {
        let form = format!(
            "name={}&secret={}&next=%2Fsystem",
            urlencode(user),
            urlencode(secret)
        );
        let resp = client
            .post(format!("{}/login", reg.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, reg.base.as_str())
            .body(form)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return fail(format!("POST /login: {e}"), fix_reach),
        };
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        match (resp.status(), cookie) {
            (StatusCode::SEE_OTHER, Some(c)) => session_cookie = Some(c),
            (s, _) => {
                return fail(
                    format!("signing in to the web UI as {user} answered {s}"),
                    "check the user name and password; the same ones must work with `docker login`",
                )
            }
        }
    }
    let mut system = client.get(format!("{}/system", reg.base));
    if let Some(c) = &session_cookie {
        system = system.header(header::COOKIE, c.as_str());
    }
    let resp = match system.send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("GET /system: {e}"), fix_reach),
    };
    let status = resp.status();
    let page = resp.text().await.unwrap_or_default();
    let result = if status == StatusCode::OK {
        let expected = format!("id=\"replica-version\">{own}<");
        if page.contains(&expected) {
            check(
                "web-ui",
                true,
                format!(
                    "sign-in page, {} files and the system page (version {own}) in {} ms",
                    assets.len(),
                    started.elapsed().as_millis()
                ),
                None,
            )
        } else {
            fail(
                format!("the system page does not show version {own} for the replica that answered"),
                "a replica of another release answered: finish replacing replicas, then verify again",
            )
        }
    } else if session_cookie.is_none()
        && (status == StatusCode::SEE_OTHER || status == StatusCode::FORBIDDEN)
    {
        Check {
            name: "web-ui",
            status: "warn",
            measured: format!(
                "sign-in page and {} files load; the system page needs an administrator (pass --username)",
                assets.len()
            ),
            fix: None,
        }
    } else {
        fail(
            format!("GET /system answered {status}"),
            "the system page needs an administrator: pass --username of one",
        )
    };
    // End the session verify started, so it does not linger in the user's sessions.
    if let Some(c) = &session_cookie {
        if let Some(csrf) = page
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        {
            let _ = client
                .post(format!("{}/logout", reg.base))
                .header(header::COOKIE, c.as_str())
                .header(header::ORIGIN, reg.base.as_str())
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("_csrf={csrf}"))
                .send()
                .await;
        }
    }
    result
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// For the rolling upgrade's `verify` step: the registry checks through `base` (the
/// load balancer) against release `own`.
pub async fn verify_through(
    base: &str,
    creds: Option<Credentials>,
    own: &Version,
) -> anyhow::Result<Vec<Check>> {
    let reg = Registry::new(base, creds, Duration::from_secs(30))?;
    Ok(registry_checks(&reg, own).await.0)
}

// ---------------------------------------------------------------------------------
// versions

/// The data's version and every live replica's, from the metadata store.
async fn versions(
    config: &wharf_server::Config,
    data: anyhow::Result<Version>,
    own: &Version,
) -> Check {
    let fix_store = "pass the --data-dir or --metadata of the registry at --url";
    let data = match data {
        Ok(v) => v,
        Err(e) => {
            return check(
                "versions",
                false,
                format!("cannot read the data's version: {e:#}"),
                Some(fix_store.into()),
            )
        }
    };
    let replicas = async {
        let meta: Box<dyn MetaStore> = match config
            .metadata_location()
            .map_err(anyhow::Error::msg)?
        {
            MetadataLocation::Sqlite(p) => Box::new(SqliteMetaStore::open_for_upgrade(p).await?),
            MetadataLocation::Postgres(u) => Box::new(PgMetaStore::open_for_upgrade(&u.0).await?),
        };
        anyhow::Ok(meta.replicas().await?)
    }
    .await;
    let (rows, now) = match replicas {
        Ok(r) => r,
        Err(e) => {
            return check(
                "versions",
                false,
                format!("data {data}; cannot list the replicas: {e:#}"),
                Some(fix_store.into()),
            )
        }
    };
    let (live, silent): (Vec<_>, Vec<_>) = rows
        .iter()
        .partition(|r| now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000));
    let others: Vec<String> = live
        .iter()
        .filter(|r| r.report.version != own.to_string())
        .map(|r| {
            format!(
                "{} at {} runs {}",
                r.report.id, r.report.address, r.report.version
            )
        })
        .collect();
    let on_own = live.len() - others.len();
    let mut measured = Vec::new();
    let mut fixes = Vec::new();
    if data == *own {
        measured.push(format!("data {data}"));
    } else {
        measured.push(format!("data {data}, this binary {own}"));
        fixes.push(if data < *own {
            format!("upgrade the data: `wharf upgrade apply` with wharf {own}")
        } else {
            format!("the data is newer than this binary: verify with wharf {data}")
        });
    }
    let ignored = if silent.is_empty() {
        String::new()
    } else {
        format!(" ({} not reporting, ignored)", silent.len())
    };
    if others.is_empty() {
        measured.push(format!("{on_own} live replica(s) on {own}{ignored}"));
    } else {
        measured.push(format!(
            "{on_own} of {} live replica(s) on {own}{ignored}; not on {own}: {}",
            live.len(),
            others.join(", ")
        ));
        fixes.push(format!(
            "replace the replicas that run another version with wharf {own}"
        ));
    }
    if live.is_empty() {
        measured.push("no replica of this store is serving".into());
        fixes.push(format!("start the registry, or {fix_store}"));
    }
    check(
        "versions",
        fixes.is_empty(),
        measured.join("; "),
        Some(fixes.join("; ")),
    )
}

// ---------------------------------------------------------------------------------
// HTTP

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `401 UNAUTHORIZED: invalid credentials`: the status and, for errors, the
    /// distribution spec's code and message (or the start of the body).
    fn describe(&self) -> String {
        let mut s = self.status.as_u16().to_string();
        if self.status.is_success() {
            return s;
        }
        let v: Option<Value> = serde_json::from_slice(&self.body).ok();
        match v.as_ref().map(|v| &v["errors"][0]) {
            Some(e) if e.is_object() => {
                if let Some(code) = e["code"].as_str() {
                    s.push_str(&format!(" {code}"));
                }
                if let Some(m) = e["message"].as_str() {
                    s.push_str(&format!(": {m}"));
                }
            }
            _ => {
                let text = String::from_utf8_lossy(&self.body);
                let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if !text.is_empty() {
                    let short: String = text.chars().take(200).collect();
                    s.push_str(&format!(": {short}"));
                }
            }
        }
        s
    }
}

/// An error with its causes ("error sending request …: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        source = s.source();
    }
    if e.is_timeout() {
        parts.push("timed out (--timeout-secs)".into());
    }
    parts.join(": ")
}

async fn send(rb: RequestBuilder) -> Result<Reply, String> {
    let resp = rb.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| error_chain(&e))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// How requests to the registry API (`/v2/…`) are signed.
enum Auth {
    /// Authentication is off.
    Anonymous,
    Basic,
    Bearer(String),
}

struct SignIn {
    auth: Auth,
    /// For the report: how /v2/ was reached.
    how: String,
}

/// Why signing in failed, and what to do about it.
struct SignInFailure {
    message: String,
    fix: &'static str,
}

const FIX_URL: &str = "check --url: is the registry running and reachable from here?";
const FIX_NOT_WHARF: &str = "check that --url is a wharf registry";
const FIX_CREDENTIALS: &str = "check the credentials: --username with its password or an access \
                               token (--password-stdin or WHARF_PASSWORD)";
const FIX_NO_CREDENTIALS: &str = "pass --username with its password or an access token \
                                  (--password-stdin or WHARF_PASSWORD)";

fn failure(fix: &'static str) -> impl Fn(String) -> SignInFailure {
    move |message| SignInFailure { message, fix }
}

struct Registry {
    client: Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    creds: Option<(String, String)>,
}

/// `Bearer realm="…",service="…",scope="a,b"` into its scheme and parameters.
fn parse_challenge(value: &str) -> (String, Vec<(String, String)>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut val = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.push((key.trim().to_ascii_lowercase(), val));
    }
    (scheme.to_string(), params)
}

impl Registry {
    fn new(base: &str, creds: Option<Credentials>, timeout: Duration) -> anyhow::Result<Registry> {
        Ok(Registry {
            client: Client::builder()
                .timeout(timeout.max(Duration::from_secs(1)))
                .connect_timeout(timeout.clamp(Duration::from_secs(1), Duration::from_secs(10)))
                .user_agent(concat!("wharf-upgrade-verify/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            creds,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to the registry API, signed as `signin` says.
    fn v2(&self, method: Method, path: &str, signin: &SignIn) -> RequestBuilder {
        self.sign(self.client.request(method, self.url(path)), signin)
    }

    fn sign(&self, rb: RequestBuilder, signin: &SignIn) -> RequestBuilder {
        match (&signin.auth, &self.creds) {
            (Auth::Bearer(t), _) => rb.bearer_auth(t),
            (Auth::Basic, Some((u, p))) => rb.basic_auth(u, Some(p)),
            _ => rb,
        }
    }

    /// Answers `GET /v2/`'s challenge: a bearer token from the realm (Docker's token
    /// protocol) with the canary's scope, or HTTP basic; then `GET /v2/` must be 200.
    async fn sign_in(&self) -> Result<SignIn, SignInFailure> {
        let unreachable = failure(FIX_URL);
        let not_wharf = failure(FIX_NOT_WHARF);
        let refused = failure(FIX_CREDENTIALS);
        let r = send(self.client.get(self.url("/v2/")))
            .await
            .map_err(|e| unreachable(format!("GET /v2/: {e}")))?;
        if r.status == StatusCode::OK {
            return Ok(SignIn {
                auth: Auth::Anonymous,
                how: "GET /v2/: 200 without signing in (authentication is off)".into(),
            });
        }
        if r.status != StatusCode::UNAUTHORIZED {
            return Err(not_wharf(format!("GET /v2/ answered {}", r.describe())));
        }
        let Some((user, secret)) = &self.creds else {
            return Err(failure(FIX_NO_CREDENTIALS)(
                "the registry requires authentication (GET /v2/ answered 401)".into(),
            ));
        };
        let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
        let (scheme, params) = parse_challenge(&challenge);
        let param = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let signin = if scheme.eq_ignore_ascii_case("bearer") {
            let Some(realm) = param("realm") else {
                return Err(not_wharf(format!(
                    "GET /v2/ answered 401 with a Bearer challenge without a realm: {challenge:?}"
                )));
            };
            let mut query = vec![(
                "scope",
                format!("repository:{CANARY_REPO}:pull,push,delete"),
            )];
            if let Some(service) = param("service") {
                query.push(("service", service.to_string()));
            }
            let t = send(
                self.client
                    .get(realm)
                    .query(&query)
                    .basic_auth(user, Some(secret)),
            )
            .await
            .map_err(|e| unreachable(format!("the token endpoint {realm}: {e}")))?;
            if matches!(t.status.as_u16(), 401 | 403) {
                return Err(refused(format!(
                    "the registry refused the credentials of {user}: the token endpoint {realm} \
                     answered {}",
                    t.describe()
                )));
            }
            if t.status != StatusCode::OK {
                return Err(not_wharf(format!(
                    "the token endpoint {realm} answered {}",
                    t.describe()
                )));
            }
            let token = serde_json::from_slice::<Value>(&t.body)
                .ok()
                .and_then(|v| {
                    v["token"]
                        .as_str()
                        .or(v["access_token"].as_str())
                        .map(str::to_string)
                })
                .ok_or_else(|| {
                    not_wharf(format!(
                        "the token endpoint {realm} answered without a token"
                    ))
                })?;
            SignIn {
                auth: Auth::Bearer(token),
                how: format!("GET /v2/: 200 as {user} with a bearer token"),
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            SignIn {
                auth: Auth::Basic,
                how: format!("GET /v2/: 200 as {user} with HTTP basic auth"),
            }
        } else {
            return Err(not_wharf(format!(
                "GET /v2/ answered 401 with a challenge this command does not speak: {challenge:?}"
            )));
        };
        let r = send(self.v2(Method::GET, "/v2/", &signin))
            .await
            .map_err(|e| unreachable(format!("GET /v2/: {e}")))?;
        if r.status != StatusCode::OK {
            return Err(refused(format!(
                "GET /v2/ as {user} answered {} (the registry refused the credentials)",
                r.describe()
            )));
        }
        Ok(signin)
    }

    /// A monolithic upload: POST, then PUT with the digest.
    async fn push_blob(&self, s: &SignIn, data: &[u8], digest: &str) -> Result<(), String> {
        let r = send(self.v2(
            Method::POST,
            &format!("/v2/{CANARY_REPO}/blobs/uploads/"),
            s,
        ))
        .await?;
        if r.status != StatusCode::ACCEPTED {
            return Err(format!("POST …/blobs/uploads/ answered {}", r.describe()));
        }
        let location = r
            .header("location")
            .ok_or("POST …/blobs/uploads/ answered 202 without a Location")?;
        let base = reqwest::Url::parse(&self.url("/")).map_err(|e| e.to_string())?;
        let mut url = base
            .join(location)
            .map_err(|e| format!("the upload Location {location:?}: {e}"))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let rb = self
            .client
            .put(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec());
        let r = send(self.sign(rb, s)).await?;
        if r.status != StatusCode::CREATED {
            return Err(format!("PUT of the upload answered {}", r.describe()));
        }
        match r.header("docker-content-digest") {
            Some(d) if d != digest => Err(format!(
                "the registry stored the blob as {d}, its digest is {digest}"
            )),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------
// the checks that ask the registry

async fn api(reg: &Registry, signin: &Result<SignIn, SignInFailure>, own: &Version) -> Check {
    let mut measured = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    match signin {
        Ok(s) => measured.push(s.how.clone()),
        Err(f) => {
            measured.push(f.message.clone());
            fixes.push(f.fix.into());
        }
    }
    match send(reg.client.get(reg.url("/api/v0/meta/version"))).await {
        Err(e) => {
            measured.push(format!("GET /api/v0/meta/version: {e}"));
            fixes.push(FIX_URL.into());
        }
        Ok(r) if r.status != StatusCode::OK => {
            measured.push(format!(
                "GET /api/v0/meta/version answered {}",
                r.describe()
            ));
            fixes.push(FIX_NOT_WHARF.into());
        }
        Ok(r) => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            match v["version"].as_str() {
                None => {
                    measured.push(format!(
                        "GET /api/v0/meta/version answered without a version: {}",
                        String::from_utf8_lossy(&r.body)
                    ));
                    fixes.push(FIX_NOT_WHARF.into());
                }
                Some(version) => {
                    measured.push(format!(
                        "GET /api/v0/meta/version: {version} (commit {}, schema level {})",
                        v["commit"].as_str().unwrap_or("?"),
                        v["schema_level"]
                    ));
                    if version != own.to_string() {
                        measured.push(format!("this binary is {own}"));
                        fixes.push(format!(
                            "the registry at --url runs {version}: replace every replica behind \
                             it with wharf {own}"
                        ));
                    }
                }
            }
        }
    }
    fixes.dedup();
    check(
        "api",
        fixes.is_empty(),
        measured.join("; "),
        Some(fixes.join("; ")),
    )
}

async fn cluster_status(reg: &Registry) -> Check {
    let path = "/api/v0/meta/cluster_status";
    let mut rb = reg.client.get(reg.url(path));
    if let Some((u, p)) = &reg.creds {
        rb = rb.basic_auth(u, Some(p));
    }
    let r = match send(rb).await {
        Ok(r) => r,
        Err(e) => {
            return check(
                "cluster-status",
                false,
                format!("GET {path}: {e}"),
                Some(FIX_URL.into()),
            )
        }
    };
    if r.status != StatusCode::OK {
        let fix = if matches!(r.status.as_u16(), 401 | 403) {
            "sign in as an administrator (--username with its password or an access token)"
        } else {
            FIX_NOT_WHARF
        };
        return check(
            "cluster-status",
            false,
            format!("GET {path} answered {}", r.describe()),
            Some(fix.into()),
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
        return check(
            "cluster-status",
            false,
            format!(
                "GET {path} answered with a body that is not JSON: {}",
                String::from_utf8_lossy(&r.body)
            ),
            Some(FIX_NOT_WHARF.into()),
        );
    };
    let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
    let issues = v["issues"].as_array().cloned().unwrap_or_default();
    let healthy = replicas.iter().filter(|r| r["healthy"] == true).count();
    let mut measured = vec![if healthy == replicas.len() {
        format!("{} replica(s), all healthy", replicas.len())
    } else {
        format!("{} replica(s), {healthy} healthy", replicas.len())
    }];
    let critical: Vec<&str> = issues
        .iter()
        .filter(|i| i["critical"] == true)
        .filter_map(|i| i["description"].as_str())
        .collect();
    let warnings: Vec<&str> = issues
        .iter()
        .filter(|i| i["critical"] != true)
        .filter_map(|i| i["description"].as_str())
        .collect();
    if issues.is_empty() {
        measured.push("no issues".into());
    }
    measured.extend(critical.iter().map(|d| format!("critical: {d}")));
    measured.extend(warnings.iter().map(|d| format!("warning: {d}")));
    let measured = measured.join("; ");
    if replicas.is_empty() {
        return check(
            "cluster-status",
            false,
            format!("{measured}: no replica is registered"),
            Some("check the registry's metadata store".into()),
        );
    }
    if !critical.is_empty() {
        return check(
            "cluster-status",
            false,
            measured,
            Some(
                "resolve the critical issues (`wharf cluster status` lists them): restart or \
                 replace dead replicas, fix clocks (NTP)"
                    .into(),
            ),
        );
    }
    Check {
        name: "cluster-status",
        status: if warnings.is_empty() { "pass" } else { "warn" },
        measured,
        fix: None,
    }
}

fn random_layer() -> Vec<u8> {
    let mut layer = Vec::with_capacity(CANARY_LAYER_BYTES);
    while layer.len() < CANARY_LAYER_BYTES {
        layer.extend_from_slice(&wharf_auth::secret::random_bytes::<4096>());
    }
    layer.truncate(CANARY_LAYER_BYTES);
    layer
}

fn sha256(data: &[u8]) -> String {
    wharf_oci::Digest::sha256_of(data).to_string()
}

/// Pushes the canary, pulls it back and compares, then deletes it (also when a step
/// failed, as far as it got).
async fn canary(reg: &Registry, signin: &Result<SignIn, SignInFailure>) -> (Check, Option<Value>) {
    let s = match signin {
        Ok(s) => s,
        Err(f) => {
            return (
                check(
                    "canary",
                    false,
                    format!("not pushed: not signed in: {}", f.message),
                    Some(f.fix.into()),
                ),
                None,
            )
        }
    };
    let nonce: String = wharf_auth::secret::random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tag = format!("verify-{secs}-{nonce}");
    let layer = random_layer();
    let layer_digest = sha256(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "io.wharf.verify.canary": tag } },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .expect("JSON");
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.wharf.verify.canary.v1",
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/octet-stream", "digest": layer_digest, "size": layer.len() }],
        "annotations": { "io.wharf.verify.canary": tag },
    }))
    .expect("JSON");
    let digest = sha256(&manifest);
    let total = (layer.len() + config.len() + manifest.len()) as u64;
    let blobs = [
        ("config", &config, &config_digest),
        ("layer", &layer, &layer_digest),
    ];

    let mut pushed_blobs: Vec<&str> = Vec::new();
    let mut pushed_manifest = false;
    let outcome: Result<(u128, u128), String> = async {
        let start = Instant::now();
        for (what, data, d) in blobs {
            reg.push_blob(s, data, d)
                .await
                .map_err(|e| format!("pushing the {what} blob: {e}"))?;
            pushed_blobs.push(d.as_str());
        }
        let r = send(
            reg.v2(
                Method::PUT,
                &format!("/v2/{CANARY_REPO}/manifests/{tag}"),
                s,
            )
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest.clone()),
        )
        .await
        .map_err(|e| format!("pushing the manifest: {e}"))?;
        if r.status != StatusCode::CREATED {
            return Err(format!(
                "pushing the manifest: PUT …/manifests/{tag} answered {}",
                r.describe()
            ));
        }
        pushed_manifest = true;
        if let Some(d) = r.header("docker-content-digest").filter(|d| *d != digest) {
            return Err(format!(
                "the registry stored the manifest as {d}, its digest is {digest}"
            ));
        }
        let push_ms = start.elapsed().as_millis();

        let start = Instant::now();
        let r = send(
            reg.v2(
                Method::GET,
                &format!("/v2/{CANARY_REPO}/manifests/{tag}"),
                s,
            )
            .header(header::ACCEPT, OCI_MANIFEST),
        )
        .await
        .map_err(|e| format!("pulling the manifest: {e}"))?;
        if r.status != StatusCode::OK {
            return Err(format!(
                "pulling the manifest: GET …/manifests/{tag} answered {}",
                r.describe()
            ));
        }
        if r.body[..] != manifest[..] {
            return Err(format!(
                "the manifest pulled by tag differs from the one pushed: {} bytes, digest {} \
                 (pushed {} bytes, {digest})",
                r.body.len(),
                sha256(&r.body),
                manifest.len()
            ));
        }
        if let Some(d) = r.header("docker-content-digest").filter(|d| *d != digest) {
            return Err(format!(
                "the manifest pulled back is labelled {d}, its digest is {digest}"
            ));
        }
        for (what, data, d) in blobs {
            let r = send(reg.v2(Method::GET, &format!("/v2/{CANARY_REPO}/blobs/{d}"), s))
                .await
                .map_err(|e| format!("pulling the {what} blob: {e}"))?;
            if r.status != StatusCode::OK {
                return Err(format!(
                    "pulling the {what} blob: GET …/blobs/{d} answered {}",
                    r.describe()
                ));
            }
            if r.body[..] != data[..] {
                let at = r
                    .body
                    .iter()
                    .zip(data.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(r.body.len().min(data.len()));
                return Err(format!(
                    "the {what} blob pulled back differs from the one pushed: {} bytes, \
                     digest {}, first difference at byte {at} (pushed {} bytes, {d})",
                    r.body.len(),
                    sha256(&r.body),
                    data.len()
                ));
            }
        }
        Ok((push_ms, start.elapsed().as_millis()))
    }
    .await;

    // Remove it: the manifest by digest (which untags it), then its blobs.
    let mut cleanup_errors = Vec::new();
    let mut removed = Vec::new();
    if pushed_manifest {
        let path = format!("/v2/{CANARY_REPO}/manifests/{digest}");
        match send(reg.v2(Method::DELETE, &path, s)).await {
            Ok(r) if r.status == StatusCode::ACCEPTED => {
                removed.push(format!("manifest {digest}"));
                let tagged = format!("/v2/{CANARY_REPO}/manifests/{tag}");
                match send(
                    reg.v2(Method::HEAD, &tagged, s)
                        .header(header::ACCEPT, OCI_MANIFEST),
                )
                .await
                {
                    Ok(r) if r.status == StatusCode::NOT_FOUND => {}
                    Ok(r) => cleanup_errors.push(format!(
                        "after the delete the tag {tag} still answers {}",
                        r.status.as_u16()
                    )),
                    Err(e) => cleanup_errors.push(format!("checking the tag {tag} is gone: {e}")),
                }
            }
            Ok(r) => cleanup_errors.push(format!(
                "deleting the manifest: DELETE {path} answered {}",
                r.describe()
            )),
            Err(e) => cleanup_errors.push(format!("deleting the manifest: {e}")),
        }
    }
    let mut blobs_left = 0;
    let mut blobs_removed = 0;
    // Blobs still referenced by a manifest that could not be deleted stay.
    if cleanup_errors.is_empty() {
        for d in &pushed_blobs {
            let path = format!("/v2/{CANARY_REPO}/blobs/{d}");
            match send(reg.v2(Method::DELETE, &path, s)).await {
                Ok(r) if r.status == StatusCode::ACCEPTED => blobs_removed += 1,
                _ => blobs_left += 1,
            }
        }
    }
    if blobs_removed > 0 {
        removed.push(format!("{blobs_removed} blob(s)"));
    }
    let removed_text = if removed.is_empty() {
        String::new()
    } else {
        let mut t = format!("; deleted {}", removed.join(" and "));
        if blobs_left > 0 {
            t.push_str(&format!(
                " ({blobs_left} blob(s) left for garbage collection)"
            ));
        }
        t
    };
    let report = json!({
        "repository": CANARY_REPO,
        "tag": tag,
        "manifest_digest": digest,
        "bytes": total,
        "push_ms": outcome.as_ref().ok().map(|o| o.0 as u64),
        "pull_ms": outcome.as_ref().ok().map(|o| o.1 as u64),
        "removed": pushed_manifest && cleanup_errors.is_empty(),
    });
    let c = match (&outcome, cleanup_errors.is_empty()) {
        (Ok((push_ms, pull_ms)), true) => check(
            "canary",
            true,
            format!(
                "pushed {CANARY_REPO}:{tag} ({total} bytes) in {push_ms} ms, pulled it back \
                 bit for bit in {pull_ms} ms{removed_text}"
            ),
            None,
        ),
        _ => {
            let mut measured = Vec::new();
            if let Err(e) = &outcome {
                measured.push(format!("{CANARY_REPO}:{tag}: {e}"));
            } else {
                measured.push(format!(
                    "pushed and pulled {CANARY_REPO}:{tag} ({total} bytes) bit for bit"
                ));
            }
            measured.extend(cleanup_errors.iter().cloned());
            let fix = if cleanup_errors.is_empty() {
                "the registry does not store and serve images faithfully: see its log; the user \
                 needs push and delete access to wharf-verify/canary"
                    .to_string()
            } else {
                format!(
                    "delete the canary by hand (DELETE /v2/{CANARY_REPO}/manifests/{digest}); the \
                     user needs delete access to wharf-verify/canary"
                )
            };
            check(
                "canary",
                false,
                format!("{}{removed_text}", measured.join("; ")),
                Some(fix),
            )
        }
    };
    (c, Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5000/auth/token",service="wharf",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                (
                    "realm".to_string(),
                    "http://127.0.0.1:5000/auth/token".to_string()
                ),
                ("service".to_string(), "wharf".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="wharf""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params, vec![("realm".to_string(), "wharf".to_string())]);
    }
}
