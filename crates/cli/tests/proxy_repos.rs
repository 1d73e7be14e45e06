//! Pull-through proxy repositories against real upstreams: Debian's `docker-registry`
//! (distribution 2.8) on loopback, filled with skopeo, and pulled through wharf with
//! skopeo. Also a tiny in-test upstream that sends wrong and truncated blobs (no real
//! registry does that on purpose).
//!
//! Every process a test starts (wharf, docker-registry) is killed by its PID on drop,
//! so also when the test fails; temp dirs go with it.

mod support;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use oci_layout::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::TestServer;
use tokio::process::Command;

const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

// ---------------------------------------------------------------------------------
// the upstream: Debian's docker-registry

/// A `docker-registry serve` process with its storage, config and access log in a temp
/// dir; killed (by PID) on drop. `restart` starts it again over the same storage.
struct Upstream {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Upstream {
    fn available() -> bool {
        support::require_tool("docker-registry") && support::require_tool("skopeo")
    }

    async fn start(auth: Option<(&str, &str)>) -> Upstream {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut u = Upstream {
            child: None,
            port: support::free_port(),
            dir,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let auth_yaml = match &u.auth {
            Some((user, pass)) => {
                let out = std::process::Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(u.dir.path().join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
                    u.dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: wharf-proxy-test\n{auth_yaml}",
            u.dir.path().join("storage").display(),
            u.port
        );
        std::fs::write(u.dir.path().join("config.yml"), config).unwrap();
        u.restart().await;
        u
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// Starts the process (again) and waits until it answers `/v2/` (bounded).
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/v2/", self.url())).send().await {
                if r.status() == StatusCode::OK || r.status() == StatusCode::UNAUTHORIZED {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "docker-registry did not answer within 10 s; its log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    /// Kills the process (by its PID) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pushes an image from an OCI layout as `repo:tag`, with skopeo.
    async fn push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut args = vec![
            "copy".to_string(),
            "--preserve-digests".into(),
            "--dest-tls-verify=false".into(),
        ];
        if let Some((u, p)) = &self.auth {
            args.push(format!("--dest-creds={u}:{p}"));
        }
        args.push(format!("oci:{}:{tag}", layout.display()));
        args.push(format!("docker://127.0.0.1:{}/{repo}:{tag}", self.port));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }

    /// Access-log lines that contain `needle`, once every request sent so far is logged:
    /// a request of ours sent directly is waited for in the log, and the registry logs
    /// requests as they finish, so any earlier request is in by then.
    async fn logged(&self, needle: &str) -> usize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let marker = format!("settle-{nanos}");
        let _ = reqwest::Client::new()
            .get(format!("{}/v2/{marker}/tags/list", self.url()))
            .send()
            .await;
        for _ in 0..200 {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains(&marker) {
                return log.lines().filter(|l| l.contains(needle)).count();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("docker-registry's access log did not show a request within 4 s");
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------
// clients

async fn run(mut cmd: Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(SKOPEO_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("could not run skopeo: {e}"),
        Err(_) => panic!("skopeo did not finish within {SKOPEO_TIMEOUT:?} (killed)"),
    }
}

fn skopeo_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    cmd
}

async fn skopeo(args: &[&str]) -> String {
    let out = run(skopeo_cmd(args)).await;
    assert!(
        out.status.success(),
        "skopeo {args:?} failed\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pulls `server/repo:tag` with skopeo into a fresh OCI layout and checks that it holds
/// exactly `image`: the manifest and every blob, byte for byte.
async fn pull_and_compare(server: &TestServer, repo: &str, tag: &str, image: &Image, into: &Path) {
    pull_and_compare_as(server, None, repo, tag, image, into).await
}

async fn pull_and_compare_as(
    server: &TestServer,
    creds: Option<&str>,
    repo: &str,
    tag: &str,
    image: &Image,
    into: &Path,
) {
    let creds = creds
        .map(|c| format!("--src-creds={c}"))
        .unwrap_or_else(|| "--src-tls-verify=false".into());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &creds,
        &format!("docker://{}/{repo}:{tag}", server.addr),
        &format!("oci:{}:{tag}", into.display()),
    ])
    .await;
    let layout = Layout::open(into);
    let d = layout.descriptor(tag);
    assert_eq!(
        d["digest"].as_str(),
        Some(image.manifest.digest.as_str()),
        "pulled digest"
    );
    assert!(
        layout.blob(&image.manifest.digest) == image.manifest.bytes,
        "manifest bytes differ"
    );
    for b in image.content() {
        assert!(
            layout.blob(&b.digest) == b.bytes,
            "blob {} differs",
            b.digest
        );
    }
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(method: Method, url: &str, body: Option<Value>) -> Reply {
    send_as(method, url, body, None).await
}

/// As `user:password` when given (the servers with authentication on).
async fn send_as(
    method: Method,
    url: &str,
    body: Option<Value>,
    creds: Option<(&str, &str)>,
) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("accept", MANIFEST_TYPES)
        .timeout(Duration::from_secs(60));
    if let Some(b) = body {
        req = req.json(&b);
    }
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.expect("request");
    let (status, headers) = (r.status(), r.headers().clone());
    // A body cut short (a fill that failed midway) reads as what arrived.
    let body = r.bytes().await.unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(url: &str) -> Reply {
    send(Method::GET, url, None).await
}

/// Adds a proxy through the management API (authentication is off on these servers).
async fn add_proxy(server: &TestServer, spec: Value) -> Reply {
    let r = send(Method::POST, &server.url("/api/v0/proxies"), Some(spec)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r
}

async fn metric(server: &TestServer, name: &str, proxy: &str) -> u64 {
    let text = get(&server.url("/metrics")).await.text();
    let key = format!("{name}{{proxy=\"{proxy}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
}

fn image_layout(dir: &Path, tag: &str, layers: &[usize]) -> Image {
    let mut rng = Rng::seeded();
    let image = random_image(&mut rng, "amd64", layers);
    write_layout(dir, &image.content(), &[(tag, &image.manifest)]);
    image
}

fn wharf_cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(support::WHARF);
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).arg("--data-dir").arg(&server.data_dir);
    cmd.output().expect("run wharf")
}

// ---------------------------------------------------------------------------------
// tests

/// The whole life of a proxied tag: pulled through byte for byte; served within the
/// revalidation interval without any upstream request; served marked stale while the
/// upstream is down (an uncached image fails naming the upstream); and revalidated to
/// the tag's new image when the upstream is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_revalidates_and_survives_the_upstream_going_down() {
    if !Upstream::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut upstream = Upstream::start(None).await;
    let first = image_layout(&tmp.path().join("v1"), "3", &[1_200_000, 40_000]);
    upstream
        .push(&tmp.path().join("v1"), "3", "library/alpine")
        .await;

    let server = TestServer::start();
    // Added with the CLI, on the store the server uses; revalidated at most hourly.
    let out = wharf_cli(
        &server,
        &[
            "proxy",
            "add",
            "hub",
            "--upstream",
            &upstream.url(),
            "--revalidate-secs",
            "3600",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = wharf_cli(&server, &["proxy", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["prefix"], "hub/");
    assert_eq!(listed[0]["upstreams"], json!([upstream.url()]));

    pull_and_compare(
        &server,
        "hub/library/alpine",
        "3",
        &first,
        &tmp.path().join("back1"),
    )
    .await;
    let gets_before = upstream.logged("GET /v2/library/alpine/manifests/").await;
    let heads_before = upstream.logged("HEAD /v2/library/alpine/manifests/").await;
    let blobs_before = upstream.logged("/blobs/").await;
    assert!(gets_before >= 1, "the manifest was fetched upstream");

    // Within the interval: served from the store, no request upstream at all.
    let revalidations = metric(&server, "wharf_proxy_revalidations_total", "hub/").await;
    for _ in 0..3 {
        let m = get(&server.url("/v2/hub/library/alpine/manifests/3")).await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.text());
        assert_eq!(
            m.header("docker-content-digest"),
            Some(first.manifest.digest.as_str())
        );
        assert!(m.header("warning").is_none());
    }
    pull_and_compare(
        &server,
        "hub/library/alpine",
        "3",
        &first,
        &tmp.path().join("back2"),
    )
    .await;
    assert_eq!(
        upstream.logged("GET /v2/library/alpine/manifests/").await,
        gets_before
    );
    assert_eq!(
        upstream.logged("HEAD /v2/library/alpine/manifests/").await,
        heads_before
    );
    assert_eq!(upstream.logged("/blobs/").await, blobs_before);
    assert_eq!(
        metric(&server, "wharf_proxy_revalidations_total", "hub/").await,
        revalidations
    );
    assert!(metric(&server, "wharf_proxy_hits_total", "hub/").await >= 3);
    let layer_bytes: u64 = first.content().iter().map(|b| b.size() as u64).sum();
    assert_eq!(
        metric(&server, "wharf_proxy_upstream_bytes_total", "hub/").await,
        layer_bytes,
        "each blob came from upstream once"
    );

    // Revalidate at every pull from now on; the upstream goes down.
    let r = send(
        Method::PUT,
        &server.url("/api/v0/proxies/hub"),
        Some(json!({"upstreams": [upstream.url()], "revalidate_secs": 1})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    upstream.stop();
    let mut stale = None;
    for _ in 0..40 {
        let m = get(&server.url("/v2/hub/library/alpine/manifests/3")).await;
        assert_eq!(
            m.status,
            StatusCode::OK,
            "cached content is served: {}",
            m.text()
        );
        assert_eq!(
            m.header("docker-content-digest"),
            Some(first.manifest.digest.as_str())
        );
        if m.header("warning").is_some() {
            stale = Some(m);
            break;
        }
        // The last revalidation is younger than the 1 s interval: wait it out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = stale.expect("a pull after the interval is marked stale");
    assert_eq!(
        stale.header("warning"),
        Some(r#"110 - "Response is Stale""#)
    );
    assert!(stale.body.as_ref() == first.manifest.bytes);
    pull_and_compare(
        &server,
        "hub/library/alpine",
        "3",
        &first,
        &tmp.path().join("back3"),
    )
    .await;
    assert!(metric(&server, "wharf_proxy_stale_serves_total", "hub/").await >= 1);
    assert!(metric(&server, "wharf_proxy_upstream_errors_total", "hub/").await >= 1);

    // Nothing cached: a clear error naming the upstream and its failure.
    let missing = get(&server.url("/v2/hub/library/debian/manifests/12")).await;
    assert_eq!(
        missing.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        missing.text()
    );
    let err = missing.json();
    assert_eq!(err["errors"][0]["code"], "UNAVAILABLE", "{err}");
    let message = err["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&upstream.url()) && message.contains("cannot be reached"),
        "{message}"
    );
    let out = run(skopeo_cmd(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/hub/library/debian:12", server.addr),
    ]))
    .await;
    // (skopeo prints only the status of a 5xx; the message is in the body above.)
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("503"), "{stderr}");

    // The upstream is back with the tag moved to a new image: the next pull after the
    // interval serves it.
    upstream.restart().await;
    let second = {
        let mut rng = Rng::seeded();
        rng.bytes(7); // another image than `first`
        let image = random_image(&mut rng, "amd64", &[300_000]);
        write_layout(
            &tmp.path().join("v2"),
            &image.content(),
            &[("3", &image.manifest)],
        );
        image
    };
    assert_ne!(second.manifest.digest, first.manifest.digest);
    upstream
        .push(&tmp.path().join("v2"), "3", "library/alpine")
        .await;
    let mut moved = false;
    for _ in 0..40 {
        let m = get(&server.url("/v2/hub/library/alpine/manifests/3")).await;
        assert_eq!(m.status, StatusCode::OK, "{}", m.text());
        if m.header("docker-content-digest") == Some(second.manifest.digest.as_str()) {
            assert!(m.header("warning").is_none());
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "the proxy never served the tag's new image");
    pull_and_compare(
        &server,
        "hub/library/alpine",
        "3",
        &second,
        &tmp.path().join("back4"),
    )
    .await;
    // The old image is still there by digest (immutable), without asking upstream.
    upstream.stop();
    let old = get(&server.url(&format!(
        "/v2/hub/library/alpine/manifests/{}",
        first.manifest.digest
    )))
    .await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text());
    assert!(
        old.header("warning").is_none(),
        "content by digest is never stale"
    );

    // cluster_status lists the proxy and what it holds, without a password.
    let status = get(&server.url("/api/v0/meta/cluster_status")).await.json();
    let p = &status["proxies"][0];
    assert_eq!(p["prefix"], "hub/", "{status}");
    assert_eq!(p["images"], 2, "{status}");
}

/// Pushes to a proxy repository are refused with a clear DENIED; a dead first upstream
/// fails over to the second; the audit log records the proxy's creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_refused_and_a_dead_upstream_fails_over() {
    if !Upstream::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(None).await;
    let image = image_layout(&tmp.path().join("src"), "1", &[50_000]);
    upstream
        .push(&tmp.path().join("src"), "1", "team/app")
        .await;

    // Authentication on: the refusal comes to a user who may push anywhere else.
    let server = TestServer::start_secure();
    let admin = ("admin", support::ADMIN_PASSWORD);
    let admin_creds = format!("admin:{}", support::ADMIN_PASSWORD);
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let r = send_as(
        Method::POST,
        &server.url("/api/v0/proxies"),
        Some(json!({"prefix": "mirror/", "upstreams": [dead, upstream.url()]})),
        Some(admin),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let anonymous = send(Method::GET, &server.url("/api/v0/proxies"), None).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "administrators only"
    );
    pull_and_compare_as(
        &server,
        Some(&admin_creds),
        "mirror/team/app",
        "1",
        &image,
        &tmp.path().join("back"),
    )
    .await;
    let metrics = send_as(Method::GET, &server.url("/metrics"), None, Some(admin))
        .await
        .text();
    assert!(
        !metrics.contains("wharf_proxy_upstream_errors_total{proxy=\"mirror/\"} 0"),
        "the dead upstream's failures are counted:\n{metrics}"
    );

    // A push with skopeo: refused, and skopeo shows why.
    let out = run(skopeo_cmd(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds={admin_creds}"),
        &format!("oci:{}:1", tmp.path().join("src").display()),
        &format!("docker://{}/mirror/team/mine:1", server.addr),
    ]))
    .await;
    assert!(!out.status.success(), "the push went through");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a pull-through proxy of"), "{stderr}");
    // The same, as the API answers it.
    for (method, path) in [
        (Method::POST, "/v2/mirror/team/mine/blobs/uploads/"),
        (Method::PUT, "/v2/mirror/team/app/manifests/2"),
    ] {
        let r = send_as(method, &server.url(path), None, Some(admin)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        let e = r.json();
        assert_eq!(e["errors"][0]["code"], "DENIED");
        assert_eq!(
            e["errors"][0]["message"].as_str().unwrap(),
            format!(
                "mirror/ is a pull-through proxy of {dead}, {}; push to another repository",
                upstream.url()
            )
        );
    }
    // Outside the prefix, pushes work as ever.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds={admin_creds}"),
        &format!("oci:{}:1", tmp.path().join("src").display()),
        &format!("docker://{}/team/mine:1", server.addr),
    ])
    .await;

    // Overlapping prefixes are refused; the audit log has the creation.
    let r = send_as(
        Method::POST,
        &server.url("/api/v0/proxies"),
        Some(json!({"prefix": "mirror/team", "upstreams": [upstream.url()]})),
        Some(admin),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let audit = send_as(Method::GET, &server.url("/api/v0/audit"), None, Some(admin))
        .await
        .text();
    assert!(
        audit.contains("proxy.create") && audit.contains("mirror/"),
        "{audit}"
    );
}

/// An upstream with basic authentication (htpasswd): pulls work with the proxy's
/// credentials, fail clearly with wrong ones, and the password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_auth_upstream_is_pulled_with_the_proxys_credentials() {
    if !Upstream::available() || !support::require_tool("htpasswd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(Some(("puller", "upstream-secret-pw"))).await;
    let image = image_layout(&tmp.path().join("src"), "1", &[80_000]);
    upstream
        .push(&tmp.path().join("src"), "1", "private/app")
        .await;

    let server = TestServer::start();
    let created = add_proxy(
        &server,
        json!({"prefix": "priv", "upstreams": [upstream.url()], "username": "puller", "password": "upstream-secret-pw"}),
    )
    .await;
    assert!(!created.text().contains("upstream-secret-pw"));
    assert_eq!(created.json()["has_password"], true);
    add_proxy(
        &server,
        json!({"prefix": "wrong", "upstreams": [upstream.url()], "username": "puller", "password": "not-it"}),
    )
    .await;
    pull_and_compare(
        &server,
        "priv/private/app",
        "1",
        &image,
        &tmp.path().join("back"),
    )
    .await;

    let refused = get(&server.url("/v2/wrong/private/app/manifests/1")).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    let message = refused.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("credentials"), "{message}");

    for shown in [
        get(&server.url("/api/v0/proxies")).await.text(),
        get(&server.url("/api/v0/meta/cluster_status")).await.text(),
        String::from_utf8_lossy(&wharf_cli(&server, &["proxy", "list", "--json"]).stdout)
            .into_owned(),
    ] {
        assert!(shown.contains("priv/"), "{shown}");
        assert!(
            !shown.contains("upstream-secret-pw"),
            "a password is shown: {shown}"
        );
    }
}

/// The retention job evicts the least recently used images over the size bound; what
/// is evicted is gone even from a pull (the upstream is down), the rest is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_evicts_the_least_recently_used_images() {
    if !Upstream::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut upstream = Upstream::start(None).await;
    let mut rng = Rng::seeded();
    let mut images = Vec::new();
    for tag in ["a", "b", "c"] {
        let image = random_image(&mut rng, "amd64", &[100_000]);
        let dir = tmp.path().join(tag);
        write_layout(&dir, &image.content(), &[(tag, &image.manifest)]);
        upstream.push(&dir, tag, "lib/img").await;
        images.push(image);
    }
    let size = |i: &Image| -> u64 {
        i.manifest.size() as u64 + i.content().iter().map(|b| b.size() as u64).sum::<u64>()
    };
    let server = TestServer::start();
    // Room for two of the three images (a and c).
    let max = size(&images[0]) + size(&images[2]) + 1000;
    assert!(max < size(&images[0]) + size(&images[1]) + size(&images[2]));
    add_proxy(
        &server,
        json!({"prefix": "hub/", "upstreams": [upstream.url()], "max_bytes": max}),
    )
    .await;
    // Pulled b, then a, then c: b is the least recently used.
    for (i, tag) in [(1, "b"), (0, "a"), (2, "c")] {
        pull_and_compare(
            &server,
            "hub/lib/img",
            tag,
            &images[i],
            &tmp.path().join(format!("back-{tag}")),
        )
        .await;
    }
    let status = get(&server.url("/api/v0/meta/cluster_status")).await.json();
    assert_eq!(status["proxies"][0]["images"], 3, "{status}");

    let job = send(
        Method::POST,
        &server.url("/api/v0/jobs"),
        Some(json!({"action": "proxy_retention"})),
    )
    .await;
    assert_eq!(job.status, StatusCode::ACCEPTED, "{}", job.text());
    let id = job.json()["id"].as_i64().unwrap();
    let mut done = Value::Null;
    for _ in 0..300 {
        done = get(&server.url(&format!("/api/v0/jobs/{id}"))).await.json();
        if ["done", "error", "cancelled", "worker_dead"]
            .contains(&done["status"].as_str().unwrap_or(""))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "done", "{done}");
    let logs = get(&server.url(&format!("/api/v0/jobs/{id}/logs")))
        .await
        .text();
    assert!(
        logs.contains(&images[1].manifest.digest),
        "b was evicted: {logs}"
    );
    assert!(
        !logs.contains(&images[0].manifest.digest),
        "a stays: {logs}"
    );

    upstream.stop();
    let b = get(&server.url("/v2/hub/lib/img/manifests/b")).await;
    assert_eq!(
        b.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "b is no longer cached: {}",
        b.text()
    );
    for tag in ["a", "c"] {
        let m = get(&server.url(&format!("/v2/hub/lib/img/manifests/{tag}"))).await;
        assert_eq!(
            m.status,
            StatusCode::OK,
            "{tag} is still cached: {}",
            m.text()
        );
    }
    let status = get(&server.url("/api/v0/meta/cluster_status")).await.json();
    assert_eq!(status["proxies"][0]["images"], 2, "{status}");
    // The schedule that runs it was made with the proxy.
    let crons = get(&server.url("/api/v0/crons")).await.text();
    assert!(crons.contains("proxy_retention"), "{crons}");
}

// ---------------------------------------------------------------------------------
// an upstream that lies

mod liar {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::extract::{Path, State};
    use axum::http::{header, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use bytes::Bytes;
    use futures_util::StreamExt;

    /// Serves one manifest whose config is served with the wrong bytes and whose layer
    /// is cut short (its Content-Length promises more than is sent).
    #[derive(Clone)]
    pub struct Liar {
        pub manifest: Bytes,
        pub config_digest: String,
        pub layer_digest: String,
        pub layer: Bytes,
        pub good_digest: String,
        pub good: Bytes,
        pub blob_gets: Arc<AtomicUsize>,
    }

    async fn manifest(State(l): State<Liar>) -> Response {
        (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                ),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    super::sha256(&l.manifest),
                ),
            ],
            l.manifest.clone(),
        )
            .into_response()
    }

    async fn blob(State(l): State<Liar>, Path((_, digest)): Path<(String, String)>) -> Response {
        l.blob_gets.fetch_add(1, Ordering::SeqCst);
        if digest == l.config_digest {
            // Right length, wrong bytes.
            return Bytes::from(vec![b'x'; 40]).into_response();
        }
        if digest == l.good_digest {
            // The right bytes, slowly: clients asking meanwhile must wait for this fetch.
            let chunks: Vec<Bytes> = l
                .good
                .chunks(64 * 1024)
                .map(Bytes::copy_from_slice)
                .collect();
            let stream = futures_util::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(c)
            });
            let mut r = Response::new(axum::body::Body::from_stream(stream));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, l.good.len().into());
            return r;
        }
        if digest == l.layer_digest {
            let half = l.layer.slice(..l.layer.len() / 2);
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::other("connection cut")),
            ]);
            let mut r = Response::new(axum::body::Body::from_stream(stream));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, l.layer.len().into());
            return r;
        }
        StatusCode::NOT_FOUND.into_response()
    }

    pub async fn serve(l: Liar) -> (String, tokio::task::JoinHandle<()>) {
        let app = axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/{ns}/app/manifests/{reference}",
                get(manifest).head(manifest),
            )
            .route("/v2/{ns}/app/blobs/{digest}", get(blob))
            .with_state(l);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, task)
    }
}

fn sha256(b: &[u8]) -> String {
    support::sha256(b)
}

/// Whether any file under `dir` is named by the digest's hex (the blob store's layout).
fn stored_anywhere(dir: &Path, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(hex))
            {
                return true;
            }
        }
    }
    false
}

/// A blob with the wrong bytes, and one cut short: neither is kept, neither is served
/// as the blob later, and a later request fetches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_truncated_blob_from_upstream_leaves_nothing_stored() {
    let mut rng = Rng::seeded();
    let image = random_image(&mut rng, "amd64", &[200_000]);
    let liar = liar::Liar {
        manifest: image.manifest.bytes.clone().into(),
        config_digest: image.config.digest.clone(),
        layer_digest: image.layers[0].digest.clone(),
        layer: image.layers[0].bytes.clone().into(),
        good_digest: String::new(),
        good: bytes::Bytes::new(),
        blob_gets: Default::default(),
    };
    let gets = liar.blob_gets.clone();
    let (url, task) = liar::serve(liar).await;
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _task = Abort(task);

    let server = TestServer::start();
    add_proxy(&server, json!({"prefix": "bad", "upstreams": [url]})).await;
    let m = get(&server.url("/v2/bad/x/app/manifests/1")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());

    for b in [&image.config, &image.layers[0]] {
        let path = format!("/v2/bad/x/app/blobs/{}", b.digest);
        let r = get(&server.url(&path)).await;
        assert!(
            !(r.status == StatusCode::OK && r.body.as_ref() == b.bytes),
            "the right bytes cannot have come from this upstream"
        );
        // Not stored: a HEAD asks upstream again and fails as the GET did; the blob
        // store holds no file of that digest.
        // (The failed fill may still be ending when the client has its bytes: a HEAD
        // then shares its outcome, so ask until one starts a fetch of its own.)
        let before = gets.load(std::sync::atomic::Ordering::SeqCst);
        let mut fetched_again = false;
        for _ in 0..50 {
            let head = send(Method::HEAD, &server.url(&path), None).await;
            assert_ne!(head.status, StatusCode::OK, "{} was stored", b.digest);
            if gets.load(std::sync::atomic::Ordering::SeqCst) > before {
                fetched_again = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(fetched_again, "a later request fetches from upstream again");
        assert!(
            !stored_anywhere(&server.data_dir, &b.digest),
            "{} is on disk",
            b.digest
        );
    }
}

/// Twelve clients asking at once for the same missing blob cause one upstream fetch;
/// each gets the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_a_blob_fetch_it_once() {
    let mut rng = Rng::seeded();
    let image = random_image(&mut rng, "amd64", &[10]);
    let good = rng.bytes(1_500_000);
    let good_digest = sha256(&good);
    let liar = liar::Liar {
        manifest: image.manifest.bytes.clone().into(),
        config_digest: image.config.digest.clone(),
        layer_digest: image.layers[0].digest.clone(),
        layer: image.layers[0].bytes.clone().into(),
        good_digest: good_digest.clone(),
        good: good.clone().into(),
        blob_gets: Default::default(),
    };
    let gets = liar.blob_gets.clone();
    let (url, task) = liar::serve(liar).await;
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _task = Abort(task);

    let server = TestServer::start();
    add_proxy(&server, json!({"prefix": "up", "upstreams": [url]})).await;
    let blob_url = server.url(&format!("/v2/up/x/app/blobs/{good_digest}"));
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let u = blob_url.clone();
            tokio::spawn(async move { get(&u).await })
        })
        .collect();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(
            r.body.as_ref() == good.as_slice(),
            "a client got other bytes"
        );
    }
    assert_eq!(
        gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream fetch"
    );
    assert!(
        stored_anywhere(&server.data_dir, &good_digest),
        "the blob was kept"
    );
}

/// Scanning applies to proxied images: storing a proxied manifest queues its scan, as a
/// push does, and the scan fetches the layers no client has asked for yet, so it reads
/// the whole image (and they are then served with the upstream gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_image_is_scanned_whole() {
    if !Upstream::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut upstream = Upstream::start(None).await;
    let image = image_layout(&tmp.path().join("src"), "1", &[60_000, 20_000]);
    upstream
        .push(&tmp.path().join("src"), "1", "lib/scanned")
        .await;
    let server = TestServer::start();
    add_proxy(
        &server,
        json!({"prefix": "hub", "upstreams": [upstream.url()]}),
    )
    .await;
    // Only the manifest is pulled.
    let m = get(&server.url("/v2/hub/lib/scanned/manifests/1")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.text());

    let mut job = Value::Null;
    for _ in 0..300 {
        let jobs = get(&server.url("/api/v0/jobs?action=scan")).await.json();
        if let Some(j) = jobs["jobs"].as_array().and_then(|a| {
            a.iter()
                .find(|j| j["params"]["digest"] == image.manifest.digest.as_str())
        }) {
            if ["done", "error", "cancelled", "worker_dead"]
                .contains(&j["status"].as_str().unwrap_or(""))
            {
                job = j.clone();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(job["status"], "done", "the proxied image's scan: {job}");
    assert_eq!(job["params"]["repository"], "hub/lib/scanned", "{job}");
    let logs = get(&server.url(&format!("/api/v0/jobs/{}/logs", job["id"])))
        .await
        .text();
    assert!(logs.contains("1 images scanned, 0 failed"), "{logs}");

    upstream.stop();
    for b in image.content() {
        let r = get(&server.url(&format!("/v2/hub/lib/scanned/blobs/{}", b.digest))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.body.as_ref() == b.bytes, "{} differs", b.digest);
    }
}
