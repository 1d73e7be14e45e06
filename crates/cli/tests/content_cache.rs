//! Content caches with real processes on loopback: a registry with authentication, a
//! cache (`wharf serve --cache-for`), skopeo and plain HTTP clients.
//! - Pulls by a user who chose a cache are redirected to it, land on it (its counters),
//!   come back byte for byte, and are served from it the second time; users without
//!   access get no redirect; tampered, unsigned and expired URLs are refused; a dead
//!   cache's users are served by the registry.
//! - Twenty clients missing one 256 MiB blob at once cause one upstream fetch.
//! - An upstream that sends wrong or truncated bytes leaves nothing kept (a faulty
//!   upstream in the test, signing URLs as the registry does: the one fake here, since
//!   a real registry cannot be made to send wrong bytes); the cache stays under its size
//!   bound over a larger working set; a chain whose upstreams loop is refused at the
//!   loop and served by the next upstream.
//! - A cache whose blobs live in an S3 bucket (moto) fills, evicts and finds its blobs
//!   again after a restart.
//! - The docker driver replaces a cache container while four clients download through
//!   the registry the whole time: none fails (the registry serves them while the cache
//!   is away), and the new container serves the blob its volume kept.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::collections::HashMap;
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use oci_layout::{random_image, write_layout, Layout, Rng};
use reqwest::{Method, StatusCode};
use secure::{admin, create_user, expect, request, Cred};
use serde_json::{json, Value};
use sha2::Digest as _;
use support::{serve_command, TestServer};
use wharf_cache::report::Registration;
use wharf_cache::signed::UrlSigner;

const PASSWORD: &str = "password-of-a-user";

/// Polls `check` every 100 ms until it gives a value, for at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a cache through the API; returns its token.
async fn register_cache(reg: &TestServer, name: &str) -> String {
    let r = request(
        reg,
        Method::POST,
        "/api/v0/content_caches",
        &admin(),
        Some(&json!({"name": name, "url": "http://127.0.0.1:1", "region": "test"})),
    )
    .await;
    expect(&r, 201, None, "registering a cache");
    r.json()["token"].as_str().unwrap().to_string()
}

/// Starts `wharf serve --cache-for …` on a free port.
fn start_cache(upstreams: &[&str], token: &str, max_bytes: u64) -> TestServer {
    start_cache_at(0, upstreams, token, max_bytes)
}

fn start_cache_at(port: u16, upstreams: &[&str], token: &str, max_bytes: u64) -> TestServer {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let mut cmd = serve_command();
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--heartbeat-interval-secs",
        "1",
    ])
    .arg("--data-dir")
    .arg(&dir)
    .arg("--cache-for")
    .arg(upstreams.join(","))
    .arg("--cache-max-bytes")
    .arg(max_bytes.to_string())
    .env("WHARF_CACHE_TOKEN", token);
    TestServer::launch(cmd, &dir).owning(tmp)
}

async fn set_cache_url(reg: &TestServer, name: &str, url: &str) {
    let r = request(
        reg,
        Method::PUT,
        &format!("/api/v0/content_caches/{name}"),
        &admin(),
        Some(&json!({"url": url, "region": "test"})),
    )
    .await;
    expect(&r, 204, None, "setting the cache's URL");
}

/// A cache's Prometheus counters and gauges, by name without the `wharf_cache_` prefix.
async fn cache_metrics(cache: &TestServer) -> HashMap<String, u64> {
    let text = reqwest::get(cache.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.strip_prefix("wharf_cache_")?.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The answer to a blob GET at the registry, not following redirects.
async fn blob_get(reg: &TestServer, cred: &Cred, repo: &str, digest: &str) -> secure::Reply {
    secure::get(reg, &format!("/v2/{repo}/blobs/{digest}"), cred).await
}

async fn skopeo(args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    secure::run(cmd, None, Duration::from_secs(180)).await
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_of_a_user_who_chose_a_cache_land_on_it_byte_for_byte() {
    if !support::require_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = TestServer::start_secure_with(&["--cache-redirect-ttl-secs", "3"]);
    create_user(&reg, "alice", PASSWORD).await;
    create_user(&reg, "bob", PASSWORD).await;
    let alice = Cred::basic("alice", PASSWORD);
    let bob = Cred::basic("bob", PASSWORD);

    // alice pushes an image of three layers with skopeo.
    let mut rng = Rng::seeded();
    let image = random_image(&mut rng, "amd64", &[1_500_000, 300_000, 5_000]);
    let src = tmp.path().join("src");
    write_layout(&src, &image.content(), &[("v1", &image.manifest)]);
    let remote = format!("docker://{}/alice/app:v1", reg.addr);
    let creds = format!("alice:{PASSWORD}");
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:v1", src.display()),
        &remote,
    ])
    .await;
    assert!(out.status.success(), "push: {}", secure::output_text(&out));

    // The cache, registered, started with its token, and chosen by alice.
    let token = register_cache(&reg, "eu").await;
    let mut cache = start_cache(&[&reg.base], &token, 1 << 30);
    set_cache_url(&reg, "eu", &cache.base).await;
    let r = request(
        &reg,
        Method::PUT,
        "/api/v0/users/alice/content_cache",
        &alice,
        Some(&json!({"cache": "eu"})),
    )
    .await;
    expect(&r, 204, None, "alice chooses the cache");
    let r = request(
        &reg,
        Method::PUT,
        "/api/v0/users/alice/content_cache",
        &bob,
        Some(&json!({"cache": null})),
    )
    .await;
    expect(&r, 403, Some("DENIED"), "bob cannot choose for alice");

    // Once the replica has seen the cache's heartbeat, alice's blob GETs redirect.
    let layer = &image.content()[1].digest;
    let location = eventually(
        "a redirect to the cache",
        Duration::from_secs(20),
        || async {
            let r = blob_get(&reg, &alice, "alice/app", layer).await;
            (r.status == StatusCode::TEMPORARY_REDIRECT)
                .then(|| r.header("location").unwrap().to_string())
        },
    )
    .await;
    assert!(
        location.starts_with(&format!("{}/cache/v1/blobs/{layer}?", cache.base)),
        "{location}"
    );
    // bob may not pull alice's private repository: no redirect, no blob.
    let r = blob_get(&reg, &bob, "alice/app", layer).await;
    assert!(
        matches!(r.status.as_u16(), 401 | 403 | 404),
        "bob: {}",
        r.describe()
    );
    // The choice as the API shows it.
    let r = secure::get(&reg, "/api/v0/users/alice/content_cache", &alice).await;
    assert_eq!(r.json(), json!({"cache": "eu", "effective": "eu"}));

    // Tampered and unsigned URLs are refused by the cache.
    let other = &image.content()[2].digest;
    let plain = secure::client();
    for (what, url) in [
        ("another size", location.replacen("?s=", "?s=1", 1)),
        ("another digest", location.replace(layer.as_str(), other)),
        ("another signature", location.replace("sig=", "sig=AAAA")),
        (
            "no signature",
            location.split('?').next().unwrap().to_string(),
        ),
    ] {
        let r = plain.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}: {url}");
    }
    let before = cache_metrics(&cache).await;
    assert_eq!(before["refused_total"], 4);
    assert_eq!(
        before["misses_total"] + before["hits_total"],
        0,
        "refused requests fetch nothing"
    );

    // skopeo pulls as alice: every blob comes from the cache, byte for byte.
    let pull = |n: u32| {
        let dir = tmp.path().join(format!("back{n}"));
        let creds = creds.clone();
        let remote = remote.clone();
        async move {
            let out = skopeo(&[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                &creds,
                &remote,
                &format!("oci:{}:v1", dir.display()),
            ])
            .await;
            assert!(
                out.status.success(),
                "pull {n}: {}",
                secure::output_text(&out)
            );
            Layout::open(&dir)
        }
    };
    let back = pull(1).await;
    for b in image.content() {
        assert_eq!(back.blob(&b.digest), b.bytes, "blob {} differs", b.digest);
    }
    let total: u64 = image.content().iter().map(|b| b.bytes.len() as u64).sum();
    let m = cache_metrics(&cache).await;
    assert_eq!(m["misses_total"], image.content().len() as u64, "{m:?}");
    assert_eq!(m["upstream_bytes_total"], total, "{m:?}");
    assert_eq!(m["client_bytes_total"], total, "{m:?}");
    // The second pull is served from what the cache holds.
    let back = pull(2).await;
    for b in image.content() {
        assert_eq!(back.blob(&b.digest), b.bytes);
    }
    let m = cache_metrics(&cache).await;
    assert_eq!(m["hits_total"], image.content().len() as u64, "{m:?}");
    assert_eq!(
        m["upstream_bytes_total"], total,
        "nothing fetched again: {m:?}"
    );
    // Kept once each fill is synced (a client may hear the last byte a moment before).
    eventually("the blobs to be kept", Duration::from_secs(10), || async {
        (cache_metrics(&cache).await["stored_bytes"] == total).then_some(())
    })
    .await;

    // bob's pull is refused.
    let bob_creds = format!("bob:{PASSWORD}");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &bob_creds,
        &remote,
        &format!("oci:{}:v1", tmp.path().join("bob").display()),
    ])
    .await;
    assert!(!out.status.success(), "bob pulled alice's private image");

    // The registry shows the cache, its state and counters.
    let status = secure::get(&reg, "/api/v0/meta/cluster_status", &admin())
        .await
        .json();
    let c = &status["caches"][0];
    assert_eq!(
        (
            c["name"].as_str(),
            c["state"].as_str(),
            c["routed"].as_bool()
        ),
        (Some("eu"), Some("serving"), Some(true)),
        "{status}"
    );
    eventually(
        "the registry's metrics show the cache's hits",
        Duration::from_secs(10),
        || async {
            let text = secure::get(&reg, "/metrics", &admin()).await.text();
            let line = format!(
                "wharf_content_cache_hits_total{{cache=\"eu\"}} {}",
                image.content().len()
            );
            text.contains(&line).then_some(())
        },
    )
    .await;

    // `wharf upgrade verify` fetches a probe through every serving cache.
    let mut verify = secure::wharf_cmd(&[
        "upgrade",
        "verify",
        "--url",
        &reg.base,
        "--username",
        "admin",
        "--format",
        "json",
    ]);
    verify
        .arg("--data-dir")
        .arg(&reg.data_dir)
        .env("WHARF_PASSWORD", support::ADMIN_PASSWORD);
    let out = secure::run(verify, None, Duration::from_secs(120)).await;
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", secure::output_text(&out)));
    let caches_check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "content-caches")
        .cloned()
        .unwrap();
    assert_eq!(caches_check["status"], "pass", "{report:#}");
    assert!(
        caches_check["measured"]
            .as_str()
            .unwrap()
            .contains("eu: served the probe intact"),
        "{report:#}"
    );

    // A redirect expires (3 s here): the cache refuses it then.
    let url = blob_get(&reg, &alice, "alice/app", layer)
        .await
        .header("location")
        .unwrap()
        .to_string();
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a fresh redirect is served");
    drop(r); // hung up half-way: the cache lives on
    let refusal = eventually(
        "the redirect to expire",
        Duration::from_secs(10),
        || async {
            let r = plain.get(&url).send().await.unwrap();
            (r.status() == StatusCode::FORBIDDEN).then_some(())?;
            Some(r.text().await.unwrap())
        },
    )
    .await;
    assert!(
        cache.child.try_wait().unwrap().is_none(),
        "clients that hung up killed the cache"
    );
    assert!(refusal.contains("expired"), "{refusal}");

    // A dead cache: the registry serves alice itself once the heartbeats stop.
    cache.signal_and_wait("KILL");
    eventually(
        "the registry to stop redirecting to the dead cache",
        Duration::from_secs(20),
        || async {
            (blob_get(&reg, &alice, "alice/app", layer).await.status == StatusCode::OK)
                .then_some(())
        },
    )
    .await;
    let back = pull(3).await;
    for b in image.content() {
        assert_eq!(back.blob(&b.digest), b.bytes);
    }
    let status = secure::get(&reg, "/api/v0/meta/cluster_status", &admin())
        .await
        .json();
    assert_eq!(status["caches"][0]["state"], "silent", "{status}");
    let issues = status["issues"].to_string();
    assert!(
        issues.contains("content cache eu") && issues.contains("has not reported"),
        "{issues}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_missing_one_large_blob_cause_one_upstream_fetch() {
    let reg = TestServer::start_secure();
    create_user(&reg, "alice", PASSWORD).await;
    let alice = Cred::basic("alice", PASSWORD);
    let blob = Rng::seeded().bytes(256 << 20);
    let digest = sha256_hex(&blob);
    secure::try_push_blob(&reg.base, &alice, "alice/big", &blob)
        .await
        .unwrap_or_else(|r| panic!("push: {}", r.describe()));
    drop(blob);
    let token = register_cache(&reg, "eu").await;
    let cache = start_cache(&[&reg.base], &token, 1 << 30);
    set_cache_url(&reg, "eu", &cache.base).await;
    let r = request(
        &reg,
        Method::PUT,
        "/api/v0/users/alice/content_cache",
        &alice,
        Some(&json!({"cache": "eu"})),
    )
    .await;
    expect(&r, 204, None, "alice chooses the cache");
    eventually(
        "a redirect to the cache",
        Duration::from_secs(20),
        || async {
            (blob_get(&reg, &alice, "alice/big", &digest).await.status
                == StatusCode::TEMPORARY_REDIRECT)
                .then_some(())
        },
    )
    .await;

    // Twenty clients as they are: each asks the registry and follows the redirect.
    let follow = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let started = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (follow, url, started) = (
            follow.clone(),
            reg.url(&format!("/v2/alice/big/blobs/{digest}")),
            started.clone(),
        );
        tasks.push(tokio::spawn(async move {
            started.wait().await;
            let resp = follow
                .get(&url)
                .basic_auth("alice", Some(PASSWORD))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let served_by = resp.url().to_string();
            let mut hasher = sha2::Sha256::new();
            let mut n = 0u64;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.expect("body");
                n += chunk.len() as u64;
                hasher.update(&chunk);
            }
            (
                served_by,
                n,
                format!("sha256:{}", hex::encode(hasher.finalize())),
            )
        }));
    }
    for t in tasks {
        let (served_by, n, got) = t.await.unwrap();
        assert!(served_by.starts_with(&cache.base), "served by {served_by}");
        assert_eq!((n, got.as_str()), (256 << 20, digest.as_str()));
    }
    let m = cache_metrics(&cache).await;
    assert_eq!(m["fills_total"], 1, "one upstream fetch: {m:?}");
    assert_eq!(m["upstream_bytes_total"], 256 << 20, "{m:?}");
    assert_eq!(m["misses_total"] + m["hits_total"], 20, "{m:?}");
    assert_eq!(m["client_bytes_total"], 20 * (256 << 20), "{m:?}");
}

// ---------------------------------------------------------------------------------
// a faulty upstream

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The right length, other bytes.
    WrongBytes,
    /// The body ends early.
    Truncated,
}

struct Upstream {
    signer: UrlSigner,
    blobs: HashMap<String, (Vec<u8>, Fault)>,
    fetches: AtomicUsize,
}

async fn fake_registration(State(up): State<Arc<Upstream>>) -> impl IntoResponse {
    axum::Json(Registration {
        name: "edge".into(),
        region: "test".into(),
        url: "http://unused".into(),
        keys: up.signer.public_keys(),
        registry_version: "test".into(),
    })
}

async fn fake_blob(
    State(up): State<Arc<Upstream>>,
    Path(digest): Path<String>,
) -> axum::response::Response {
    up.fetches.fetch_add(1, Ordering::SeqCst);
    let Some((bytes, fault)) = up.blobs.get(&digest) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut body = bytes.clone();
    match fault {
        Fault::None => {}
        Fault::WrongBytes => body[0] ^= 0xff,
        Fault::Truncated => body.truncate(body.len() - 10),
    }
    body.into_response()
}

/// The faulty upstream on a free port; returns its URL.
async fn start_upstream(up: Arc<Upstream>) -> String {
    let app = axum::Router::new()
        .route(
            "/api/v0/content_caches/_self",
            axum::routing::get(fake_registration),
        )
        .route(
            "/api/v0/content_caches/_self/heartbeat",
            axum::routing::post(fake_registration),
        )
        .route("/cache/v1/blobs/{digest}", axum::routing::get(fake_blob))
        .with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn signer() -> UrlSigner {
    UrlSigner::from_seeds(&[("k1".into(), [7u8; 32])])
}

fn signed_url(signer: &UrlSigner, cache: &TestServer, digest: &str, size: usize) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    signer.url(&cache.base, &digest.parse().unwrap(), size as u64, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_or_truncated_upstream_bytes_are_not_kept_and_the_bound_holds() {
    let mut rng = Rng::seeded();
    let good = rng.bytes(300_000);
    let wrong = rng.bytes(300_000);
    let short = rng.bytes(300_000);
    let small: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(1 << 20)).collect();
    let mut blobs = HashMap::new();
    blobs.insert(sha256_hex(&good), (good.clone(), Fault::None));
    blobs.insert(sha256_hex(&wrong), (wrong.clone(), Fault::WrongBytes));
    blobs.insert(sha256_hex(&short), (short.clone(), Fault::Truncated));
    for b in &small {
        blobs.insert(sha256_hex(b), (b.clone(), Fault::None));
    }
    let up = Arc::new(Upstream {
        signer: signer(),
        blobs,
        fetches: AtomicUsize::new(0),
    });
    let up_url = start_upstream(up.clone()).await;
    // Bound: three of the 1 MiB blobs.
    let cache = start_cache(&[&up_url], "wharf_cache_test", 3 << 20);
    let client = reqwest::Client::new();
    let s = signer();

    for (what, bytes) in [("wrong bytes", &wrong), ("a truncated body", &short)] {
        let url = signed_url(&s, &cache, &sha256_hex(bytes), bytes.len());
        let got = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r
                .bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        assert!(got.is_err(), "{what} was served whole");
        let m = cache_metrics(&cache).await;
        assert_eq!(
            (m["stored_bytes"], m["blobs"]),
            (0, 0),
            "{what} was kept: {m:?}"
        );
    }
    assert_eq!(cache_metrics(&cache).await["rejected_fills_total"], 2);
    // The right bytes are served and kept.
    let url = signed_url(&s, &cache, &sha256_hex(&good), good.len());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), good);
    eventually(
        "the right bytes to be kept",
        Duration::from_secs(10),
        || async { (cache_metrics(&cache).await["blobs"] == 1).then_some(()) },
    )
    .await;

    // A working set of 8 MiB through a 3 MiB cache, three rounds: every body right,
    // the bound never exceeded, least recently used blobs evicted.
    for round in 0..3 {
        for b in &small {
            let url = signed_url(&s, &cache, &sha256_hex(b), b.len());
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "round {round}");
            assert!(r.bytes().await.unwrap() == *b, "round {round}: wrong body");
            let m = cache_metrics(&cache).await;
            assert!(m["stored_bytes"] <= 3 << 20, "over the bound: {m:?}");
        }
    }
    let m = cache_metrics(&cache).await;
    assert!(m["evictions_total"] >= 8 * 3 - 3, "{m:?}");
    // The last three are the ones kept: asking again is a hit.
    let hits = m["hits_total"];
    for b in &small[5..] {
        let url = signed_url(&s, &cache, &sha256_hex(b), b.len());
        assert_eq!(
            client
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len(),
            1 << 20
        );
    }
    assert_eq!(cache_metrics(&cache).await["hits_total"], hits + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_caches_fill_once_and_a_loop_is_refused_at_the_loop() {
    let mut rng = Rng::seeded();
    let blob = rng.bytes(500_000);
    let blob2 = rng.bytes(400_000);
    let (digest, digest2) = (sha256_hex(&blob), sha256_hex(&blob2));
    let up = Arc::new(Upstream {
        signer: signer(),
        blobs: HashMap::from([
            (digest.clone(), (blob.clone(), Fault::None)),
            (digest2.clone(), (blob2.clone(), Fault::None)),
        ]),
        fetches: AtomicUsize::new(0),
    });
    let up_url = start_upstream(up.clone()).await;
    let client = reqwest::Client::new();

    // A chain: the edge A knows only B, B the upstream. A registers through B.
    let b = start_cache(&[&up_url], "wharf_cache_test", 1 << 30);
    let a = start_cache(&[&b.base], "wharf_cache_test", 1 << 30);
    eventually(
        "the edge to be registered through B",
        Duration::from_secs(10),
        || async {
            let r = reqwest::get(a.url("/readyz")).await.ok()?;
            (r.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
    for _ in 0..2 {
        let r = client
            .get(signed_url(&signer(), &a, &digest, blob.len()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.bytes().await.unwrap() == blob);
    }
    let (ma, mb) = (cache_metrics(&a).await, cache_metrics(&b).await);
    assert_eq!(
        (ma["fills_total"], ma["hits_total"]),
        (1, 1),
        "edge: {ma:?}"
    );
    assert_eq!(mb["fills_total"], 1, "B: {mb:?}");
    assert_eq!(
        up.fetches.load(Ordering::SeqCst),
        1,
        "the upstream was asked once"
    );

    // A loop: C fills from D, then the upstream; D from C, then the upstream. C's fill
    // reaches D, D's reaches C again, which refuses (508 Loop Detected), and D goes on
    // to the upstream.
    let (pc, pd) = (free_port(), free_port());
    let c = start_cache_at(
        pc,
        &[&format!("http://127.0.0.1:{pd}"), &up_url],
        "wharf_cache_test",
        1 << 30,
    );
    let d = start_cache_at(
        pd,
        &[&format!("http://127.0.0.1:{pc}"), &up_url],
        "wharf_cache_test",
        1 << 30,
    );
    let r = client
        .get(signed_url(&signer(), &c, &digest2, blob2.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == blob2);
    let (mc, md) = (cache_metrics(&c).await, cache_metrics(&d).await);
    assert_eq!(
        (mc["fills_total"], mc["upstream_errors_total"]),
        (1, 0),
        "C filled from D: {mc:?}"
    );
    assert_eq!(
        (md["fills_total"], md["upstream_errors_total"]),
        (1, 1),
        "D was refused by C, then used the upstream: {md:?}"
    );
    assert_eq!(
        up.fetches.load(Ordering::SeqCst),
        2,
        "the upstream was asked once for the second blob"
    );
    // The refusal as a client would see it.
    let c_instance: Value = reqwest::get(c.url("/api/v0/meta/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = client
        .get(signed_url(&signer(), &c, &digest, blob.len()))
        .header(
            wharf_cache::VIA_HEADER,
            format!("x, {}", c_instance["instance"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::LOOP_DETECTED);
    let text = refused.text().await.unwrap();
    assert!(text.contains("loop"), "{text}");
}

/// A cache whose kept blobs live in an S3 bucket (moto): a fill is uploaded there and
/// served from there; eviction deletes objects; a restarted cache finds what the bucket
/// holds (its spool and registration stay in its directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_keeps_its_blobs_in_s3_and_finds_them_after_a_restart() {
    let Some(s3) = support::S3Server::moto() else {
        return;
    };
    let mut rng = Rng::seeded();
    // One blob over S3's 5 MiB part size (uploaded in parts), three of 1 MiB.
    let blobs: Vec<Vec<u8>> = [6 << 20, 1 << 20, 1 << 20, 1 << 20]
        .iter()
        .map(|n| rng.bytes(*n))
        .collect();
    let up = Arc::new(Upstream {
        signer: signer(),
        blobs: blobs
            .iter()
            .map(|b| (sha256_hex(b), (b.clone(), Fault::None)))
            .collect(),
        fetches: AtomicUsize::new(0),
    });
    let up_url = start_upstream(up.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let prefix = format!("s3://wharf-test/cache-{}", std::process::id());
    let start = || {
        let mut cmd = serve_command();
        cmd.args(["--listen", "127.0.0.1:0", "--heartbeat-interval-secs", "1"])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--blobs", &prefix])
            .args(["--cache-for", &up_url])
            .args(["--cache-max-bytes", &(8u64 << 20).to_string()])
            .env("WHARF_CACHE_TOKEN", "wharf_cache_test");
        s3.configure(&mut cmd);
        TestServer::launch(cmd, &dir)
    };
    let client = reqwest::Client::new();
    let get = |cache: &TestServer, i: usize| {
        let url = signed_url(&signer(), cache, &sha256_hex(&blobs[i]), blobs[i].len());
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "blob {i}");
            r.bytes().await.unwrap()
        }
    };
    let settled = |cache: &TestServer, blobs: u64| {
        let what = format!("{blobs} blob(s) kept in the bucket and no delete pending");
        let cache = cache.url("/metrics");
        async move {
            eventually(&what, Duration::from_secs(30), || async {
                let text = reqwest::get(&cache).await.ok()?.text().await.ok()?;
                let m: HashMap<&str, u64> = text
                    .lines()
                    .filter_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        Some((k.strip_prefix("wharf_cache_")?, v.parse().ok()?))
                    })
                    .collect();
                (m.get("blobs") == Some(&blobs) && m.get("deletes_pending") == Some(&0))
                    .then_some(())
            })
            .await
        }
    };

    let mut cache = start();
    // The large blob: fetched once, uploaded, then served from the bucket.
    assert!(get(&cache, 0).await == blobs[0]);
    settled(&cache, 1).await;
    assert!(get(&cache, 0).await == blobs[0], "a hit from the bucket");
    let m = cache_metrics(&cache).await;
    assert_eq!((m["hits_total"], m["fills_total"]), (1, 1), "{m:?}");
    // Two more fit (8 MiB); the fourth evicts the least recently used, the large one.
    for (i, blob) in blobs.iter().enumerate().skip(1) {
        assert!(get(&cache, i).await == blob);
        settled(&cache, (i as u64 + 1).min(3)).await;
    }
    let m = cache_metrics(&cache).await;
    assert_eq!(m["evictions_total"], 1, "{m:?}");
    assert_eq!(m["stored_bytes"], 3 << 20, "{m:?}");
    assert!(cache.signal_and_wait("TERM").success());

    // Restarted: the bucket's three blobs are found and served as hits.
    cache = start();
    let m = cache_metrics(&cache).await;
    assert_eq!((m["blobs"], m["stored_bytes"]), (3, 3 << 20), "{m:?}");
    for (i, blob) in blobs.iter().enumerate().skip(1) {
        assert!(get(&cache, i).await == blob);
    }
    let m = cache_metrics(&cache).await;
    assert_eq!((m["hits_total"], m["misses_total"]), (3, 0), "{m:?}");
    assert_eq!(
        up.fetches.load(Ordering::SeqCst),
        4,
        "each blob fetched once"
    );
    // The evicted one is a miss again.
    assert!(get(&cache, 0).await == blobs[0]);
    assert_eq!(cache_metrics(&cache).await["misses_total"], 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------
// docker

fn docker_cmd(config: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("docker");
    // Never the host's ~/.docker/config.json.
    cmd.env("DOCKER_CONFIG", config).args(args);
    cmd
}

/// Removes the test's images however the test ends.
struct RemoveImages(std::path::PathBuf, Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.1 {
            let _ = std::process::Command::new("docker")
                .env("DOCKER_CONFIG", &self.0)
                .args(["rmi", "-f", image])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_pulls_of_a_user_who_chose_a_cache_come_from_it() {
    if !support::require_tool("docker") {
        return;
    }
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path();
    let ready = secure::run(
        docker_cmd(config, &["version", "--format", "{{.Server.Version}}"]),
        None,
        Duration::from_secs(60),
    )
    .await;
    if !ready.status.success() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "a running Docker daemon is required under CI=true"
        );
        eprintln!("SKIPPED: no running Docker daemon");
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.is_file() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "/bin/busybox is required under CI=true"
        );
        eprintln!("SKIPPED: no /bin/busybox");
        return;
    }
    let reg = TestServer::start_secure();
    create_user(&reg, "alice", PASSWORD).await;
    let id = Rng::seeded().hex(12);
    let local = format!("wharf-cache-test-{id}:latest");
    let remote = format!("{}/alice/hello-{id}:v1", reg.addr);
    let _cleanup = RemoveImages(config.to_path_buf(), vec![local.clone(), remote.clone()]);
    let message = format!("pulled through a content cache {id}");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(busybox, ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"{message}\"]\n"),
    )
    .unwrap();
    let mut build = docker_cmd(config, &["build", "--no-cache", "--force-rm", "-t", &local]);
    build.arg(ctx.path()).env("DOCKER_BUILDKIT", "0");
    let timeout = Duration::from_secs(180);
    secure::run_ok(build, None, timeout).await;
    secure::run_ok(docker_cmd(config, &["tag", &local, &remote]), None, timeout).await;
    secure::run_ok(
        docker_cmd(
            config,
            &["login", &reg.addr, "-u", "alice", "--password-stdin"],
        ),
        Some(&format!("{PASSWORD}\n")),
        timeout,
    )
    .await;
    secure::run_ok(docker_cmd(config, &["push", &remote]), None, timeout).await;
    secure::run_ok(docker_cmd(config, &["rmi", &remote, &local]), None, timeout).await;

    let token = register_cache(&reg, "eu").await;
    let cache = start_cache(&[&reg.base], &token, 1 << 30);
    set_cache_url(&reg, "eu", &cache.base).await;
    let alice = Cred::basic("alice", PASSWORD);
    let r = request(
        &reg,
        Method::PUT,
        "/api/v0/users/alice/content_cache",
        &alice,
        Some(&json!({"cache": "eu"})),
    )
    .await;
    expect(&r, 204, None, "alice chooses the cache");
    // Wait until this replica redirects alice (a blob GET of her image's config).
    let manifest = secure::get(&reg, &format!("/v2/alice/hello-{id}/manifests/v1"), &alice).await;
    let manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    eventually(
        "a redirect to the cache",
        Duration::from_secs(20),
        || async {
            (blob_get(&reg, &alice, &format!("alice/hello-{id}"), &config_digest)
                .await
                .status
                == StatusCode::TEMPORARY_REDIRECT)
                .then_some(())
        },
    )
    .await;
    let before = cache_metrics(&cache).await;

    secure::run_ok(docker_cmd(config, &["pull", &remote]), None, timeout).await;
    let out = secure::run_ok(
        docker_cmd(config, &["run", "--rm", "--network", "none", &remote]),
        None,
        timeout,
    )
    .await;
    assert_eq!(out.trim(), message);
    let after = cache_metrics(&cache).await;
    let layer_bytes: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(
        after["client_bytes_total"] - before["client_bytes_total"] >= layer_bytes,
        "docker's layer downloads came from the cache: {before:?} → {after:?} ({layer_bytes} bytes of layers)"
    );
}

// ---------------------------------------------------------------------------------
// upgrades in step

/// Removes the test's container and image tags however the test ends.
struct RemoveContainer(String, Vec<String>);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
        for t in &self.1 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", t])
                .output();
        }
    }
}

/// What `wharf upgrade apply --driver docker` does to content caches after the
/// replicas: finds the containers by their label, drains one (SIGTERM: it tells the
/// registry it drains), recreates it from the new image with the same configuration,
/// and waits until it is registered and ready on the target version. Its blobs (a
/// volume) survive: the next download is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_docker_driver_replaces_a_cache_container_under_load_and_no_download_fails() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let image = match std::env::var("WHARF_TEST_IMAGE_DEBUG") {
        Ok(i) if !i.is_empty() => i,
        _ => {
            assert!(
                !ci,
                "WHARF_TEST_IMAGE_DEBUG is required under CI=true (scripts/test.sh)"
            );
            eprintln!("SKIPPED: no WHARF_TEST_IMAGE_DEBUG (run the suite with scripts/test.sh)");
            return;
        }
    };
    let reg = TestServer::start_secure();
    create_user(&reg, "alice", PASSWORD).await;
    let alice = Cred::basic("alice", PASSWORD);
    let blob = Rng::seeded().bytes(2_000_000);
    let digest = sha256_hex(&blob);
    secure::try_push_blob(&reg.base, &alice, "alice/data", &blob)
        .await
        .unwrap_or_else(|r| panic!("push: {}", r.describe()));
    let token = register_cache(&reg, "eu").await;
    let id = Rng::seeded().hex(10);
    let (old_tag, new_tag) = (
        format!("wharf-cache-old-{id}:test"),
        format!("wharf-cache-new-{id}:test"),
    );
    let name = format!("wharf-cache-{id}");
    let label = format!("wharf.cache-test={id}");
    let _cleanup = RemoveContainer(name.clone(), vec![old_tag.clone(), new_tag.clone()]);
    for tag in [&old_tag, &new_tag] {
        let out = StdCommand::new("docker")
            .args(["tag", &image, tag])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker tag: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = StdCommand::new("docker")
        .args([
            "run",
            "--detach",
            "--pull",
            "never",
            "--name",
            &name,
            "--network",
            "host",
        ])
        .args(["--label", &label, "--label", &format!("wharf.url={url}")])
        .args(["--env", &format!("WHARF_CACHE_TOKEN={token}")])
        .args([
            "--volume",
            &format!("{}:/var/lib/wharf", volume.path().display()),
        ])
        .arg(&old_tag)
        .args([
            "serve",
            "--cache-for",
            &reg.base,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--heartbeat-interval-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_cache_url(&reg, "eu", &url).await;
    let r = request(
        &reg,
        Method::PUT,
        "/api/v0/users/alice/content_cache",
        &alice,
        Some(&json!({"cache": "eu"})),
    )
    .await;
    expect(&r, 204, None, "alice chooses the cache");
    let follow = reqwest::Client::new();
    let fetch = || async {
        let r = follow
            .get(reg.url(&format!("/v2/alice/data/blobs/{digest}")))
            .basic_auth("alice", Some(PASSWORD))
            .send()
            .await
            .ok()?;
        let from = r.url().to_string();
        let body = r.bytes().await.ok()?;
        (from.starts_with(&url) && sha256_hex(&body) == digest).then_some(())
    };
    eventually(
        "a download through the cache container",
        Duration::from_secs(60),
        fetch,
    )
    .await;

    // Downloads go on the whole time the cache is replaced: four clients in a loop, each
    // following the registry's redirect wherever it points. None may fail.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, follow) = (stop.clone(), follow.clone());
        let (blob_url, cache_url, digest) = (
            reg.url(&format!("/v2/alice/data/blobs/{digest}")),
            url.clone(),
            digest.clone(),
        );
        load.push(tokio::spawn(async move {
            let (mut via_cache, mut direct, mut failures) = (0u32, 0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let result = async {
                    let r = follow
                        .get(&blob_url)
                        .basic_auth("alice", Some(PASSWORD))
                        .send()
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    let (status, from) = (r.status(), r.url().to_string());
                    let body = r.bytes().await.map_err(|e| format!("{e:#}"))?;
                    if status != StatusCode::OK || sha256_hex(&body) != digest {
                        return Err(format!("{status} from {from}"));
                    }
                    Ok(from.starts_with(&cache_url))
                }
                .await;
                match result {
                    Ok(true) => via_cache += 1,
                    Ok(false) => direct += 1,
                    Err(e) => failures.push(e),
                }
            }
            (via_cache, direct, failures)
        }));
    }

    // The driver, as `upgrade apply` runs it for caches.
    let driver = wharf_rollout::docker::DockerDriver::connect(&label, None)
        .await
        .unwrap()
        .optional();
    let found = wharf_rollout::Driver::discover(&driver).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|r| (r.name.as_str(), r.url.as_str()))
            .collect::<Vec<_>>(),
        [(name.as_str(), url.as_str())]
    );
    let none =
        wharf_rollout::docker::DockerDriver::connect(&format!("wharf.cache-test=none-{id}"), None)
            .await
            .unwrap()
            .optional();
    assert!(
        wharf_rollout::Driver::discover(&none)
            .await
            .unwrap()
            .is_empty(),
        "no cache container is fine"
    );
    let target = wharf_rollout::Target {
        image: new_tag.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        timeout: Duration::from_secs(120),
        drain: Duration::from_secs(30),
    };
    let phases = std::sync::Mutex::new(Vec::new());
    let say = |e: wharf_rollout::Event| phases.lock().unwrap().push(e.phase.to_string());
    wharf_rollout::Driver::converge(&driver, &found[0], &target, &say)
        .await
        .unwrap();
    let phases = phases.into_inner().unwrap();
    for p in ["draining", "created", "started", "ready"] {
        assert!(phases.iter().any(|x| x == p), "no {p} in {phases:?}");
    }
    let out = StdCommand::new("docker")
        .args(["inspect", "--format", "{{.Config.Image}}", &name])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), new_tag);
    // Registered again and routed to; the blob it held is a hit.
    eventually(
        "a download through the replaced cache",
        Duration::from_secs(60),
        fetch,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (mut via_cache, mut direct, mut failures) = (0, 0, Vec::new());
    for l in load {
        let (c, d, f) = l.await.unwrap();
        (via_cache, direct) = (via_cache + c, direct + d);
        failures.extend(f);
    }
    eprintln!("during the replacement: {via_cache} downloads through the cache, {direct} from the registry, {} failed", failures.len());
    assert!(failures.is_empty(), "failed downloads: {failures:#?}");
    assert!(
        via_cache > 0 && direct > 0,
        "the registry served while the cache was away: {via_cache} via the cache, {direct} direct"
    );
    let m = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !m.contains("wharf_cache_hits_total 0") && m.contains("wharf_cache_upstream_bytes_total 0"),
        "the kept blob was served from the volume, nothing fetched again:\n{m}"
    );
}
