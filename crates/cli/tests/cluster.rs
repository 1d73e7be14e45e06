//! Three replicas behind a real load balancer (nginx from Debian), sharing PostgreSQL
//! and an S3-compatible store, with authentication on as it ships.
//!
//! What an operator of a scaled-out registry counts on:
//! - a token issued by one replica is honoured by the others;
//! - one upload's requests can land on three different replicas;
//! - pushes and pulls go on while a replica dies (SIGKILL), clients recovering the way
//!   real ones do (retrying, resuming an upload from the range the registry reports);
//! - every push that was acknowledged pulls back byte-identical afterwards;
//! - the dead replica shows up in the cluster's issues.

mod support;

#[path = "support/nginx.rs"]
mod nginx;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nginx::Nginx;
use oci_layout::Rng;
use reqwest::{Client, StatusCode};
use secure::{admin, bearer_at, Cred};
use serde_json::Value;
use support::{serve_command, sha256, S3Server, TestServer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REPO: &str = "cluster/app";
/// Images pushed under load, by all writers together.
const IMAGES: usize = 36;
const WRITERS: usize = 3;
const READERS: usize = 2;
/// Bounds every retry loop of the simulated clients.
const MAX_ATTEMPTS: usize = 8;

fn start_replica(pg: &str, blobs: &str, s3: &S3Server, data_dir: &Path) -> TestServer {
    let mut cmd = serve_command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--metadata",
        pg,
        "--blobs",
        blobs,
    ])
    .args(["--heartbeat-interval-secs", "1"])
    .arg("--data-dir")
    .arg(data_dir)
    .env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
    s3.configure(&mut cmd);
    TestServer::launch(cmd, data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_nginx_survive_a_sigkill_under_load() {
    three_replicas_survive_a_sigkill(S3Server::moto).await;
}

/// The same on Garage, a real S3-compatible store (moto is a mock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_garage_behind_nginx_survive_a_sigkill_under_load() {
    three_replicas_survive_a_sigkill(S3Server::garage).await;
}

async fn three_replicas_survive_a_sigkill(s3: fn() -> Option<S3Server>) {
    if !support::require_tool("nginx") || !support::require_tool("psql") {
        return;
    }
    let (Some(pg_url), Some(s3)) = (support::env_or_skip("WHARF_TEST_POSTGRES_URL"), s3()) else {
        return;
    };
    let pg = support::create_database(&pg_url, "cluster_nginx");
    let blobs = format!("s3://wharf-test/cluster-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    // Replicas start one after another: the first creates the schema and the admin.
    let mut replicas: Vec<TestServer> = (0..3)
        .map(|i| start_replica(&pg, &blobs, &s3, &tmp.path().join(format!("r{i}"))))
        .collect();
    let upstreams: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let lb = Nginx::start(&upstreams, "max_fails=1 fail_timeout=60s", "error timeout");
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // A token from whichever replica answers, for all of them.
    let token = bearer_at(
        &lb.base,
        &admin(),
        &[&format!("repository:{REPO}:pull,push")],
    )
    .await;
    let cred = Cred::Bearer(token);

    // One upload's three requests on three different replicas, then its digest
    // checked over all of the data.
    let chunks: [&[u8]; 3] = [b"first chunk|", b"second chunk|", b"third"];
    let whole = chunks.concat();
    let digest = sha256(&whole);
    let r = cred
        .apply(http.post(format!("{}/v2/{REPO}/blobs/uploads/", lb.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut served_by = vec![upstream(&r)];
    let mut location = location_of(&r);
    let mut offset = 0;
    for chunk in &chunks[..2] {
        let r = cred
            .apply(http.patch(format!("{}{location}", lb.base)))
            .header(
                "content-range",
                format!("{offset}-{}", offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        served_by.push(upstream(&r));
        location = location_of(&r);
        offset += chunk.len();
    }
    let distinct: BTreeSet<&String> = served_by.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "the upload's requests should land on three replicas: {served_by:?}"
    );
    let r = cred
        .apply(http.put(format!("{}{}", lb.base, with_digest(&location, &digest))))
        .body(chunks[2].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = cred
        .apply(http.get(format!("{}/v2/{REPO}/blobs/{digest}", lb.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), whole);

    // Load: writers push images (a chunked layer each), readers pull what has been
    // acknowledged, and one replica is killed once a third of the pushes are in.
    let state = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (http, cred, base, state) =
            (http.clone(), cred.clone(), lb.base.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            for n in (w..IMAGES).step_by(WRITERS) {
                push_image_with_retries(&http, &cred, &base, &state, n).await;
            }
        }));
    }
    let writers_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..READERS {
        let (http, cred, base, state, done) = (
            http.clone(),
            cred.clone(),
            lb.base.clone(),
            state.clone(),
            writers_done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::seeded();
            // Bounded: the writers finish long before this many pulls.
            for _ in 0..100_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let image = {
                    let pushed = state.acknowledged.lock().unwrap();
                    (!pushed.is_empty())
                        .then(|| pushed[rng.next_u64() as usize % pushed.len()].clone())
                };
                match image {
                    Some(image) => pull_and_compare(&http, &cred, &base, &state, &image).await,
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // Kill replica 1 once a third of the images are acknowledged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(300);
    while state.acknowledged.lock().unwrap().len() < IMAGES / 3 {
        assert!(
            Instant::now() < deadline,
            "pushes made no progress in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acknowledged_before_kill = state.acknowledged.lock().unwrap().len();
    let killed = replicas.remove(1);
    let killed_id_addr = killed.addr.clone();
    let mut killed = killed;
    let status = killed.signal_and_wait("KILL");
    assert!(!status.success());
    // Writers first (they are bounded), then stop the readers.
    let readers = tasks.split_off(WRITERS);
    for t in tasks {
        t.await.expect("writer task");
    }
    writers_done.store(true, Ordering::SeqCst);
    for t in readers {
        t.await.expect("reader task");
    }

    let acknowledged = state.acknowledged.lock().unwrap().clone();
    eprintln!(
        "cluster load: {} images acknowledged ({} before the kill), {} pulls compared, \
         {} failed requests recovered by retrying",
        acknowledged.len(),
        acknowledged_before_kill,
        state.pulls.load(Ordering::SeqCst),
        state.failed_requests.load(Ordering::SeqCst)
    );
    assert_eq!(
        acknowledged.len(),
        IMAGES,
        "every push completes, recovering from the dead replica"
    );
    assert!(state.pulls.load(Ordering::SeqCst) > 0, "readers pulled");

    // Every acknowledged push, byte-identical, through the balancer and from each
    // surviving replica directly.
    let mut bases = vec![lb.base.clone()];
    bases.extend(replicas.iter().map(|r| r.base.clone()));
    for base in &bases {
        for image in &acknowledged {
            let r = cred
                .apply(http.get(format!("{base}/v2/{REPO}/manifests/{}", image.tag)))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{base} {}", image.tag);
            assert_eq!(
                r.bytes().await.unwrap(),
                image.manifest,
                "{base} {}",
                image.tag
            );
            for (digest, bytes) in &image.blobs {
                let r = cred
                    .apply(http.get(format!("{base}/v2/{REPO}/blobs/{digest}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{base} {digest}");
                assert_eq!(&r.bytes().await.unwrap(), bytes, "{base} {digest}");
            }
        }
    }

    // The dead replica becomes a critical issue once it misses three heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin()
            .apply(http.get(format!("{}/api/v0/meta/cluster_status", lb.base)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let status: Value = r.json().await.unwrap();
        let dead = status["issues"].as_array().unwrap().iter().any(|i| {
            i["critical"] == true
                && i["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&killed_id_addr) && d.contains("has not reported"))
        });
        if dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed replica is not reported dead: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Default)]
struct Load {
    acknowledged: Mutex<Vec<Arc<PushedImage>>>,
    pulls: AtomicUsize,
    failed_requests: AtomicUsize,
}

struct PushedImage {
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

fn upstream(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-upstream")
        .expect("nginx names the upstream")
        .to_str()
        .unwrap()
        .to_string()
}

fn location_of(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Pushes image `n` the way a client would, retrying what failed: blobs are checked
/// with HEAD first, uploads resume from the range the registry reports.
async fn push_image_with_retries(http: &Client, cred: &Cred, base: &str, state: &Load, n: usize) {
    let mut rng = Rng::seeded();
    let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{n}}}"#).into_bytes();
    // Random content behind a unique prefix: no two images share a layer.
    let mut layer = format!("layer {n}\n").into_bytes();
    layer.extend(rng.bytes(96 * 1024 + n * 512));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let tag = format!("img-{n}");
    for blob in [&config, &layer] {
        ensure_blob(http, cred, base, state, blob).await;
    }
    for attempt in 0..MAX_ATTEMPTS {
        let r = cred
            .apply(http.put(format!("{base}/v2/{REPO}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => {
                state
                    .acknowledged
                    .lock()
                    .unwrap()
                    .push(Arc::new(PushedImage {
                        tag,
                        manifest,
                        blobs: vec![(sha256(&config), config), (sha256(&layer), layer)],
                    }));
                return;
            }
            other => note_failure(state, "manifest PUT", attempt, other).await,
        }
    }
    panic!("manifest {tag} not accepted after {MAX_ATTEMPTS} attempts");
}

async fn note_failure(
    state: &Load,
    what: &str,
    attempt: usize,
    r: Result<reqwest::Response, reqwest::Error>,
) {
    state.failed_requests.fetch_add(1, Ordering::SeqCst);
    let detail = match r {
        Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
        Err(e) => e.to_string(),
    };
    eprintln!("{what} failed (attempt {}): {detail}", attempt + 1);
    // A balancer needs a moment to notice a dead upstream; back off a little.
    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
}

/// Uploads `data` in three chunks unless the registry already has it; on a failed
/// chunk, asks the registry how much it holds and continues from there.
async fn ensure_blob(http: &Client, cred: &Cred, base: &str, state: &Load, data: &[u8]) {
    let digest = sha256(data);
    let chunk = data.len().div_ceil(3);
    for attempt in 0..MAX_ATTEMPTS {
        let head = cred
            .apply(http.head(format!("{base}/v2/{REPO}/blobs/{digest}")))
            .send()
            .await;
        match head {
            Ok(r) if r.status() == StatusCode::OK => return,
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {}
            other => {
                note_failure(state, "blob HEAD", attempt, other).await;
                continue;
            }
        }
        let r = cred
            .apply(http.post(format!("{base}/v2/{REPO}/blobs/uploads/")))
            .send()
            .await;
        let mut location = match r {
            Ok(r) if r.status() == StatusCode::ACCEPTED => location_of(&r),
            other => {
                note_failure(state, "upload POST", attempt, other).await;
                continue;
            }
        };
        let mut offset = 0;
        let mut stalls = 0;
        while offset < data.len() && stalls < MAX_ATTEMPTS {
            let end = (offset + chunk).min(data.len());
            let r = cred
                .apply(http.patch(format!("{base}{location}")))
                .header("content-range", format!("{offset}-{}", end - 1))
                .body(data[offset..end].to_vec())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    location = location_of(&r);
                    offset = end;
                }
                other => {
                    note_failure(state, "chunk PATCH", stalls, other).await;
                    stalls += 1;
                    // Resume from what the registry holds (any replica can tell).
                    let status = cred
                        .apply(http.get(format!("{base}{location}")))
                        .send()
                        .await;
                    if let Ok(s) = status {
                        if s.status() == StatusCode::NO_CONTENT {
                            let range = s.headers().get("range").map(|v| v.to_str().unwrap());
                            offset = range
                                .and_then(|r| r.split_once('-'))
                                .map_or(0, |(_, last)| last.parse::<usize>().unwrap());
                            // "0-0" is how the protocol reports an empty upload (a
                            // one-byte one looks the same, but our chunks are larger).
                            if offset > 0 {
                                offset += 1;
                            }
                            location = location_of(&s);
                        }
                    }
                }
            }
        }
        if offset < data.len() {
            continue;
        }
        let r = cred
            .apply(http.put(format!("{base}{}", with_digest(&location, &digest))))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::CREATED => return,
            // The next round's HEAD tells whether a lost answer hid a success.
            other => note_failure(state, "upload PUT", attempt, other).await,
        }
    }
    panic!("blob {digest} not stored after {MAX_ATTEMPTS} attempts");
}

/// Pulls an acknowledged image and insists on the exact bytes; a failed request is
/// counted (the balancer may route one to the dying replica) but wrong bytes are not
/// tolerated.
async fn pull_and_compare(
    http: &Client,
    cred: &Cred,
    base: &str,
    state: &Load,
    image: &PushedImage,
) {
    let r = cred
        .apply(http.get(format!("{base}/v2/{REPO}/manifests/{}", image.tag)))
        .header("accept", OCI_MANIFEST)
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::OK => {
            assert_eq!(r.bytes().await.unwrap(), image.manifest, "{}", image.tag);
        }
        other => return note_failure(state, "manifest GET", 0, other).await,
    }
    let (digest, bytes) = &image.blobs[1];
    let r = cred
        .apply(http.get(format!("{base}/v2/{REPO}/blobs/{digest}")))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == StatusCode::OK => {
            let body = r.bytes().await;
            match body {
                Ok(body) => assert_eq!(&body, bytes, "{digest}"),
                Err(e) => return note_failure(state, "blob GET body", 0, Err(e)).await,
            }
        }
        other => return note_failure(state, "blob GET", 0, other).await,
    }
    state.pulls.fetch_add(1, Ordering::SeqCst);
}
