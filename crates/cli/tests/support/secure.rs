//! Helpers for the security tests: credentials on every request, authenticated pushes,
//! the management API, the Docker token protocol's challenges, external commands with
//! timeouts, and a `wharf serve` whose stdout and stderr the test reads itself.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::support::{self, TestServer};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

// ---------------------------------------------------------------------------------
// credentials and requests

/// How a request identifies its caller.
#[derive(Clone, Debug)]
pub enum Cred {
    Anonymous,
    /// HTTP basic: a user and a password or an access token (`curl -u user:secret`).
    Basic(String, String),
    /// A registry bearer token from `/auth/token`.
    Bearer(String),
}

impl Cred {
    pub fn basic(user: &str, secret: &str) -> Cred {
        Cred::Basic(user.to_string(), secret.to_string())
    }

    pub fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::Anonymous => rb,
            Cred::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Cred::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

/// The initial administrator of [`TestServer::start_secure`].
pub fn admin() -> Cred {
    Cred::basic("admin", support::ADMIN_PASSWORD)
}

pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// A response, read completely.
#[derive(Debug, Clone)]
pub struct Reply {
    pub method: Method,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} answered {} with a body that is not JSON ({e}): {}",
                self.method,
                self.url,
                self.status,
                self.text()
            )
        })
    }

    /// The distribution spec's error code: `errors[0].code`.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
    }

    /// `403 DENIED`, `201`: status and error code, for tables and messages.
    pub fn short(&self) -> String {
        match self.error_code() {
            Some(code) => format!("{} {code}", self.status.as_u16()),
            None => self.status.as_u16().to_string(),
        }
    }

    /// Everything a failure message needs.
    pub fn describe(&self) -> String {
        let challenge = self
            .header("www-authenticate")
            .map(|c| format!(" [WWW-Authenticate: {c}]"))
            .unwrap_or_default();
        let mut body = self.text();
        if body.len() > 600 {
            body.truncate(600);
            body.push('…');
        }
        format!(
            "{} {} -> {}{challenge} {body}",
            self.method, self.url, self.status
        )
    }
}

pub async fn send(rb: RequestBuilder) -> Reply {
    let req = rb.build().expect("a well-formed request");
    let (method, url) = (req.method().clone(), req.url().to_string());
    let resp = client()
        .execute(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("body of {method} {url}: {e}"));
    Reply {
        method,
        url,
        status,
        headers,
        body,
    }
}

/// A request to `base` + `path` (base: `http://127.0.0.1:PORT`).
pub async fn request_at(
    base: &str,
    method: Method,
    path: &str,
    cred: &Cred,
    body: Option<&Value>,
) -> Reply {
    let mut rb = client().request(method, format!("{base}{path}"));
    rb = cred.apply(rb);
    if let Some(b) = body {
        rb = rb.json(b);
    }
    send(rb).await
}

pub async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    cred: &Cred,
    body: Option<&Value>,
) -> Reply {
    request_at(&server.base, method, path, cred, body).await
}

pub async fn get(server: &TestServer, path: &str, cred: &Cred) -> Reply {
    request(server, Method::GET, path, cred, None).await
}

/// Asserts a status (and, for errors, the code in the JSON body).
pub fn expect(r: &Reply, status: u16, code: Option<&str>, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.describe());
    if let Some(code) = code {
        assert_eq!(
            r.error_code().as_deref(),
            Some(code),
            "{what}: error code: {}",
            r.describe()
        );
    }
}

// ---------------------------------------------------------------------------------
// challenges

/// `Bearer realm="…",service="…",scope="a:b:c,d"` into its scheme and parameters
/// (quoted values may hold commas).
pub fn parse_challenge(value: &str) -> (String, Vec<(String, String)>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.push((key.trim().to_string(), val));
    }
    (scheme.to_string(), params)
}

pub fn challenge_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// Checks a 401 carries the Bearer challenge that sends token clients to this server's
/// `/auth/token`, naming `scope` (or no scope when `None`). `Err` says what is wrong.
pub fn check_bearer_challenge(
    r: &Reply,
    server_base: &str,
    scope: Option<&str>,
) -> Result<(), String> {
    if r.status != StatusCode::UNAUTHORIZED {
        return Err(format!("expected 401, got {}", r.describe()));
    }
    // A signed-in caller whose bearer token lacks the scope is told DENIED (so Docker
    // says "denied", not "sign in"); the challenge then says insufficient_scope.
    let insufficient = r
        .header("www-authenticate")
        .is_some_and(|c| c.contains(r#"error="insufficient_scope""#));
    let code_ok = match r.error_code().as_deref() {
        Some("UNAUTHORIZED") => true,
        Some("DENIED") => insufficient,
        _ => false,
    };
    if !code_ok {
        return Err(format!(
            "expected code UNAUTHORIZED (or DENIED with insufficient_scope): {}",
            r.describe()
        ));
    }
    let Some(value) = r.header("www-authenticate") else {
        return Err(format!("401 without WWW-Authenticate: {}", r.describe()));
    };
    let (scheme, params) = parse_challenge(value);
    let realm = format!("{server_base}/auth/token");
    let ok = scheme == "Bearer"
        && challenge_param(&params, "realm") == Some(realm.as_str())
        && challenge_param(&params, "service") == Some("wharf")
        && challenge_param(&params, "scope") == scope;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "challenge {value:?} is not Bearer realm={realm:?},service=\"wharf\" with scope {scope:?}"
        ))
    }
}

pub fn assert_bearer_challenge(r: &Reply, server: &TestServer, scope: Option<&str>, what: &str) {
    if let Err(e) = check_bearer_challenge(r, &server.base, scope) {
        panic!("{what}: {e}");
    }
}

// ---------------------------------------------------------------------------------
// the token endpoint

/// `GET /auth/token?service=wharf&scope=…` with `cred` (basic or none).
pub async fn token_reply_at(base: &str, cred: &Cred, scopes: &[&str]) -> Reply {
    let mut query: Vec<(&str, &str)> = vec![("service", "wharf")];
    for s in scopes {
        query.push(("scope", s));
    }
    let rb = cred.apply(client().get(format!("{base}/auth/token")).query(&query));
    send(rb).await
}

/// A bearer token for `scopes` (granted as far as allowed); the endpoint must answer 200.
pub async fn bearer_at(base: &str, cred: &Cred, scopes: &[&str]) -> String {
    let r = token_reply_at(base, cred, scopes).await;
    assert_eq!(r.status, StatusCode::OK, "token request: {}", r.describe());
    let body = r.json();
    let token = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string();
    assert_eq!(
        body["access_token"].as_str(),
        Some(token.as_str()),
        "token and access_token differ"
    );
    token
}

pub async fn bearer(server: &TestServer, cred: &Cred, scopes: &[&str]) -> String {
    bearer_at(&server.base, cred, scopes).await
}

// ---------------------------------------------------------------------------------
// the management API

pub async fn create_user(server: &TestServer, name: &str, password: &str) {
    let r = request(
        server,
        Method::POST,
        "/api/v0/users",
        &admin(),
        Some(&json!({ "name": name, "password": password })),
    )
    .await;
    expect(&r, 201, None, &format!("creating the user {name}"));
    assert_eq!(r.json()["name"], name);
}

/// Creates an access token; returns its id and secret.
pub async fn create_token(
    server: &TestServer,
    cred: &Cred,
    user: &str,
    label: &str,
    expires_in_secs: Option<u64>,
) -> (i64, String, Value) {
    let mut body = json!({ "label": label });
    if let Some(s) = expires_in_secs {
        body["expires_in_secs"] = s.into();
    }
    let r = request(
        server,
        Method::POST,
        &format!("/api/v0/users/{user}/tokens"),
        cred,
        Some(&body),
    )
    .await;
    expect(&r, 201, None, &format!("creating a token for {user}"));
    let v = r.json();
    let secret = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token secret in {v}"))
        .to_string();
    assert!(
        secret.starts_with("wharf_"),
        "access tokens start with wharf_: {secret}"
    );
    let id = v["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no token id in {v}"));
    (id, secret, v)
}

pub async fn revoke_token(server: &TestServer, cred: &Cred, user: &str, id: i64) {
    let r = request(
        server,
        Method::DELETE,
        &format!("/api/v0/users/{user}/tokens/{id}"),
        cred,
        None,
    )
    .await;
    expect(&r, 204, None, &format!("revoking token {id} of {user}"));
}

pub async fn set_visibility(server: &TestServer, cred: &Cred, repo: &str, visibility: &str) {
    let r = request(
        server,
        Method::PUT,
        &format!("/api/v0/repositories/{repo}/_settings"),
        cred,
        Some(&json!({ "visibility": visibility })),
    )
    .await;
    expect(&r, 204, None, &format!("making {repo} {visibility}"));
}

pub async fn grant_user(server: &TestServer, cred: &Cred, repo: &str, user: &str, level: &str) {
    let r = request(
        server,
        Method::PUT,
        &format!("/api/v0/repositories/{repo}/_grants/user/{user}"),
        cred,
        Some(&json!({ "level": level })),
    )
    .await;
    expect(&r, 204, None, &format!("granting {user} {level} on {repo}"));
}

pub async fn set_disabled(server: &TestServer, user: &str, disabled: bool) {
    let r = request(
        server,
        Method::PATCH,
        &format!("/api/v0/users/{user}"),
        &admin(),
        Some(&json!({ "disabled": disabled })),
    )
    .await;
    expect(
        &r,
        200,
        None,
        &format!("setting disabled={disabled} on {user}"),
    );
    assert_eq!(r.json()["disabled"], disabled);
}

// ---------------------------------------------------------------------------------
// pushing with credentials

/// A tiny image: config, one layer and the manifest naming them, unique per `seed`.
pub struct TinyImage {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

pub fn tiny_image(seed: &str) -> TinyImage {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
    let layer = format!("layer bytes for {seed}").into_bytes();
    let desc = |mt: &str, d: &[u8]| json!({ "mediaType": mt, "digest": support::sha256(d), "size": d.len() });
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
    }))
    .unwrap();
    let digest = support::sha256(&manifest);
    TinyImage {
        config,
        layer,
        manifest,
        digest,
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    }
}

/// Pushes a blob (POST, then PUT with the digest) as `cred`; the first response that
/// is not the expected one is the error.
pub async fn try_push_blob(base: &str, cred: &Cred, repo: &str, data: &[u8]) -> Result<(), Reply> {
    let r = send(cred.apply(client().post(format!("{base}/v2/{repo}/blobs/uploads/")))).await;
    if r.status != StatusCode::ACCEPTED {
        return Err(r);
    }
    let location = absolute(base, r.header("location").unwrap_or_default());
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = client()
        .put(format!("{location}{sep}digest={}", support::sha256(data)))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec());
    let r = send(cred.apply(put)).await;
    if r.status != StatusCode::CREATED {
        return Err(r);
    }
    Ok(())
}

/// Pushes config, layer and manifest under `tag`; returns the manifest digest, or the
/// first response that refused.
pub async fn try_push_at(
    base: &str,
    cred: &Cred,
    repo: &str,
    tag: &str,
    seed: &str,
) -> Result<String, Reply> {
    let img = tiny_image(seed);
    try_push_blob(base, cred, repo, &img.config).await?;
    try_push_blob(base, cred, repo, &img.layer).await?;
    let put = client()
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone());
    let r = send(cred.apply(put)).await;
    if r.status != StatusCode::CREATED {
        return Err(r);
    }
    Ok(img.digest)
}

pub async fn try_push(
    server: &TestServer,
    cred: &Cred,
    repo: &str,
    tag: &str,
    seed: &str,
) -> Result<String, Reply> {
    try_push_at(&server.base, cred, repo, tag, seed).await
}

/// Pushes an image that must be accepted; returns its manifest digest.
pub async fn push(server: &TestServer, cred: &Cred, repo: &str, tag: &str, seed: &str) -> String {
    try_push(server, cred, repo, tag, seed)
        .await
        .unwrap_or_else(|r| panic!("pushing {repo}:{tag}: {}", r.describe()))
}

// ---------------------------------------------------------------------------------
// external commands

fn describe_cmd(cmd: &tokio::process::Command) -> String {
    let std = cmd.as_std();
    let mut s = std.get_program().to_string_lossy().into_owned();
    for a in std.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion with `stdin` fed to it (or no stdin), killing it if it
/// outlives `timeout`.
pub async fn run(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> Output {
    let what = describe_cmd(&cmd);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let fut = async {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not run `{what}`: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("writing the stdin of `{what}`: {e}"));
            drop(pipe);
        }
        child
            .wait_with_output()
            .await
            .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(out) => out,
        Err(_) => panic!("`{what}` did not finish within {timeout:?} (killed)"),
    }
}

pub fn output_text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
pub async fn run_ok(
    cmd: tokio::process::Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> String {
    let what = describe_cmd(&cmd);
    let out = run(cmd, stdin, timeout).await;
    assert!(
        out.status.success(),
        "`{what}` failed\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns stdout and stderr together.
pub async fn run_fails(
    cmd: tokio::process::Command,
    stdin: Option<&str>,
    timeout: Duration,
) -> String {
    let what = describe_cmd(&cmd);
    let out = run(cmd, stdin, timeout).await;
    assert!(
        !out.status.success(),
        "`{what}` succeeded but must fail\n{}",
        output_text(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wharf ARGS` with a clean environment (no WHARF_* from the caller).
pub fn wharf_cmd(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(support::WHARF);
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args);
    cmd
}

/// Removes Docker containers and images when dropped, also when the test fails.
pub struct DockerCleanup {
    pub containers: Vec<String>,
    pub images: Vec<String>,
}

impl DockerCleanup {
    fn docker(args: &[&str]) {
        let child = std::process::Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if support::wait_with_timeout(&mut child, Duration::from_secs(60)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            Self::docker(&["rm", "--force", c]);
        }
        for i in &self.images {
            Self::docker(&["rmi", "--force", i]);
        }
    }
}

// ---------------------------------------------------------------------------------
// a `wharf serve` whose output the test reads

/// A `wharf serve` started by the test itself, to read what it prints: the stdout lines
/// before `listening on`, and every stderr line (collected until it exits). Killed on
/// drop.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    pub addr: String,
    /// Stdout lines printed before the `listening on` line.
    pub before_listening: Vec<String>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl ServeProcess {
    /// Starts a prepared command (see [`support::serve_command`]) with stdout and stderr
    /// piped, and waits (at most 30 s) for its `listening on` line.
    pub fn spawn(mut cmd: std::process::Command) -> ServeProcess {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start wharf serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut before = Vec::new();
        let mut proc = ServeProcess {
            child,
            base: String::new(),
            addr: String::new(),
            before_listening: Vec::new(),
            stderr: Some(stderr),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        proc.addr = rest.trim().to_string();
                        proc.base = format!("http://{}", proc.addr);
                        proc.before_listening = before;
                        return proc;
                    }
                    before.push(line);
                }
                Err(_) => {
                    let _ = proc.child.kill();
                    let status = proc.child.wait();
                    let err = proc.stderr.take().and_then(|h| h.join().ok());
                    panic!(
                        "wharf serve did not report its address within 30 s (exit: {status:?})\nstdout: {before:?}\nstderr: {err:?}"
                    );
                }
            }
        }
    }

    /// Stops it with SIGTERM (SIGKILL if it does not exit within 30 s); returns every
    /// line it wrote on stderr.
    pub fn stop(mut self) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if support::wait_with_timeout(&mut self.child, Duration::from_secs(30)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stderr
            .take()
            .map(|h| h.join().expect("stderr reader"))
            .unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
