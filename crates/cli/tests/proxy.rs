//! Three replicas behind nginx configured as docs/upgrading.md recommends
//! (`max_fails=1 fail_timeout=2s`, `proxy_next_upstream error timeout non_idempotent`,
//! `proxy_request_buffering off`), and clients as they are, not as they should be:
//! - some send every request without credentials first and repeat it after the 401
//!   challenge, upload chunks included;
//! - the others hold a registry token that lives 2 s, so it expires in the middle of
//!   their uploads and a chunk is refused with 401, then sent again with a new token.
//!
//! Each such 401 is an answer given before the request body is read. If a replica
//! closed the connection while nginx was still streaming the body, nginx would log a
//! broken pipe, count the replica as failed and, with all three marked down, answer
//! 502 to everybody. Asserted: not one request failed, and nginx logged no broken
//! connection.

mod support;

#[path = "support/nginx.rs"]
mod nginx;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nginx::Nginx;
use oci_layout::Rng;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use secure::{admin, token_reply_at};
use support::{serve_command, sha256, TestServer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Chunk sizes, from a small layer's to a large one's.
const CHUNK_SIZES: [usize; 5] = [32 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
/// Each client stops after this many images or this long, whichever comes first.
const IMAGES_PER_CLIENT: usize = 6;
const RUN_FOR: Duration = Duration::from_secs(20);

fn start_replica(pg: &str, blobs: &std::path::Path, data_dir: &std::path::Path) -> TestServer {
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--metadata", pg])
        .arg("--blobs")
        .arg(blobs)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--token-ttl-secs", "2", "--heartbeat-interval-secs", "1"])
        .env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
    TestServer::launch(cmd, data_dir)
}

/// How a client presents credentials.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Habit {
    /// Every request first without credentials, then again after the challenge.
    UnauthenticatedFirst,
    /// A short-lived token until it is refused, then a new one.
    ExpiringToken,
}

/// A request body: the same bytes sent with a Content-Length or chunked.
#[derive(Clone)]
struct Payload {
    bytes: Bytes,
    chunked: bool,
}

impl Payload {
    fn body(&self) -> reqwest::Body {
        if !self.chunked {
            return reqwest::Body::from(self.bytes.clone());
        }
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..self.bytes.len())
            .step_by(64 << 10)
            .map(|i| Ok(self.bytes.slice(i..(i + (64 << 10)).min(self.bytes.len()))))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    }
}

/// What every client saw, for the verdict.
#[derive(Default)]
struct Tally {
    requests: usize,
    /// 401s to requests sent without credentials or with an expired token: expected.
    challenged: usize,
    failures: Vec<String>,
}

struct ClientState {
    http: Client,
    base: String,
    repo: String,
    habit: Habit,
    token: Option<String>,
    tally: std::sync::Arc<Mutex<Tally>>,
}

impl ClientState {
    async fn fresh_token(&mut self) -> Result<String, String> {
        let scope = format!("repository:{}:pull,push", self.repo);
        let r = token_reply_at(&self.base, &admin(), &[&scope]).await;
        self.tally.lock().unwrap().requests += 1;
        if r.status != StatusCode::OK {
            return Err(format!("token request: {}", r.describe()));
        }
        let token = r.json()["token"].as_str().unwrap().to_string();
        self.token = Some(token.clone());
        Ok(token)
    }

    fn request(&self, method: &Method, url: &str, payload: Option<&Payload>) -> RequestBuilder {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_string()
        };
        let mut rb = self.http.request(method.clone(), url);
        if let Some(p) = payload {
            rb = rb
                .header("content-type", "application/octet-stream")
                .body(p.body());
        }
        rb
    }

    /// Sends a request the way this client's habit has it; the final answer must be
    /// `expected`, and every 401 on the way must be one the habit explains.
    async fn send(
        &mut self,
        what: &str,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        payload: Option<&Payload>,
        expected: StatusCode,
    ) -> Result<Response, String> {
        let with = |rb: RequestBuilder| {
            headers
                .iter()
                .fold(rb, |rb, (k, v)| rb.header(*k, v.as_str()))
        };
        let mut attempts = 0;
        // Bounded: without credentials, with the held token, with a fresh one.
        let mut presented: Option<String> = match self.habit {
            Habit::UnauthenticatedFirst => None,
            Habit::ExpiringToken => match &self.token {
                Some(t) => Some(t.clone()),
                None => Some(self.fresh_token().await?),
            },
        };
        loop {
            attempts += 1;
            let mut rb = with(self.request(&method, url, payload));
            if let Some(t) = &presented {
                rb = rb.bearer_auth(t);
            }
            self.tally.lock().unwrap().requests += 1;
            let r = rb
                .send()
                .await
                .map_err(|e| format!("{what}: {method} {url}: {e}"))?;
            if r.status() == expected {
                return Ok(r);
            }
            if r.status() == StatusCode::UNAUTHORIZED && attempts < 3 {
                self.tally.lock().unwrap().challenged += 1;
                presented = Some(match (&presented, &self.token) {
                    // Challenged without credentials: the held token, if any.
                    (None, Some(t)) => t.clone(),
                    // Challenged with the held token (it expired): a new one.
                    _ => self.fresh_token().await?,
                });
                continue;
            }
            let status = r.status();
            let upstream = r
                .headers()
                .get("x-upstream")
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .unwrap_or_default();
            let body = r.text().await.unwrap_or_default();
            return Err(format!(
                "{what}: {method} {url} answered {status} (attempt {attempts}, upstream {upstream}), expected {expected}: {body}"
            ));
        }
    }
}

fn location(r: &Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Pushes one image whose layer goes up in chunks, then pulls its manifest and layer
/// back and compares them.
async fn push_and_pull(c: &mut ClientState, rng: &mut Rng, n: usize) -> Result<(), String> {
    let chunks: Vec<Payload> = (0..1 + rng.next_u64() as usize % 3)
        .map(|i| {
            let size = CHUNK_SIZES[rng.next_u64() as usize % CHUNK_SIZES.len()];
            Payload {
                bytes: Bytes::from(rng.bytes(size)),
                chunked: (n + i) % 2 == 1,
            }
        })
        .collect();
    let layer: Vec<u8> = chunks
        .iter()
        .flat_map(|p| p.bytes.iter().copied())
        .collect();
    let layer_digest = sha256(&layer);
    let repo = c.repo.clone();
    let r = c
        .send(
            "start the upload",
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            None,
            StatusCode::ACCEPTED,
        )
        .await?;
    let mut at = location(&r);
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let range = format!("{offset}-{}", offset + chunk.bytes.len() - 1);
        let r = c
            .send(
                &format!("chunk {i} ({} bytes)", chunk.bytes.len()),
                Method::PATCH,
                &at,
                &[("content-range", range)],
                Some(chunk),
                StatusCode::ACCEPTED,
            )
            .await?;
        at = location(&r);
        offset += chunk.bytes.len();
    }
    c.send(
        "commit the layer",
        Method::PUT,
        &with_digest(&at, &layer_digest),
        &[],
        None,
        StatusCode::CREATED,
    )
    .await?;
    let config = Payload {
        bytes: Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{n},\"repo\":\"{repo}\"}}"
        )),
        chunked: false,
    };
    let config_digest = sha256(&config.bytes);
    c.send(
        "the config, in one request",
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"),
        &[],
        Some(&config),
        StatusCode::CREATED,
    )
    .await?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = Payload {
        bytes: Bytes::from(serde_json::to_vec(&manifest).unwrap()),
        chunked: false,
    };
    c.send(
        "the manifest",
        Method::PUT,
        &format!("/v2/{repo}/manifests/v{n}"),
        &[("content-type", OCI_MANIFEST.to_string())],
        Some(&manifest),
        StatusCode::CREATED,
    )
    .await?;
    let r = c
        .send(
            "pull the manifest",
            Method::GET,
            &format!("/v2/{repo}/manifests/v{n}"),
            &[("accept", OCI_MANIFEST.to_string())],
            None,
            StatusCode::OK,
        )
        .await?;
    let pulled = r.bytes().await.map_err(|e| format!("manifest body: {e}"))?;
    if pulled != manifest.bytes {
        return Err(format!("{repo}:v{n}: the manifest pulled back differs"));
    }
    let r = c
        .send(
            "pull the layer",
            Method::GET,
            &format!("/v2/{repo}/blobs/{layer_digest}"),
            &[],
            None,
            StatusCode::OK,
        )
        .await?;
    let pulled = r.bytes().await.map_err(|e| format!("layer body: {e}"))?;
    if sha256(&pulled) != layer_digest {
        return Err(format!("{repo}:v{n}: the layer pulled back differs"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_start_unauthenticated_never_take_replicas_down_behind_nginx() {
    if !support::require_tool("nginx") {
        return;
    }
    let Some(pg_url) = support::env_or_skip("WHARF_TEST_POSTGRES_URL") else {
        return;
    };
    let pg = support::create_database(&pg_url, "proxy_early_answers");
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("shared-blobs");
    // One after another: the first creates the schema and the administrator.
    let replicas: Vec<TestServer> = (0..3)
        .map(|i| start_replica(&pg, &blobs, &tmp.path().join(format!("r{i}"))))
        .collect();
    let upstreams: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let lb = Nginx::start(
        &upstreams,
        "max_fails=1 fail_timeout=2s",
        "error timeout non_idempotent",
    );
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let tally = std::sync::Arc::new(Mutex::new(Tally::default()));
    let deadline = Instant::now() + RUN_FOR;
    let habits = [
        Habit::UnauthenticatedFirst,
        Habit::UnauthenticatedFirst,
        Habit::ExpiringToken,
        Habit::ExpiringToken,
    ];
    let mut clients = Vec::new();
    for (i, habit) in habits.into_iter().enumerate() {
        let mut state = ClientState {
            http: http.clone(),
            base: lb.base.clone(),
            repo: format!("proxy/client-{i}"),
            habit,
            token: None,
            tally: tally.clone(),
        };
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::seeded();
            for _ in 0..i {
                rng.next_u64();
            }
            let mut pushed = 0;
            for n in 0..IMAGES_PER_CLIENT {
                if Instant::now() > deadline {
                    break;
                }
                if let Err(e) = push_and_pull(&mut state, &mut rng, n).await {
                    state.tally.lock().unwrap().failures.push(e);
                }
                pushed += 1;
            }
            pushed
        }));
    }
    let mut images = 0;
    for c in clients {
        images += c.await.expect("a client panicked");
    }
    let tally = tally.lock().unwrap();
    let errors = std::fs::read_to_string(lb.error_log()).unwrap_or_default();
    let broken: Vec<&str> = errors
        .lines()
        .filter(|l| {
            l.contains("Broken pipe")
                || l.contains("reset by peer")
                || l.contains("no live upstreams")
                || l.contains("prematurely closed")
        })
        .collect();
    eprintln!(
        "{images} images pushed and pulled by 4 clients; {} requests, {} answered 401 first (expected), {} failed; nginx error log: {} lines",
        tally.requests,
        tally.challenged,
        tally.failures.len(),
        errors.lines().count()
    );
    assert!(images >= 8, "too little work to judge: {images} images");
    assert!(
        tally.challenged >= images,
        "the clients were not challenged as intended: {} 401s for {images} images",
        tally.challenged
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed:\n{}",
        tally.failures.len(),
        tally.requests,
        tally.failures.join("\n")
    );
    assert!(
        broken.is_empty(),
        "nginx logged {} broken upstream connections:\n{}",
        broken.len(),
        broken.join("\n")
    );
}
