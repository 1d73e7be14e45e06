//! A content-cache node: `GET /cache/v1/blobs/<digest>` with a signed query, served
//! from its store or filled from its upstreams; its registration and heartbeats; and
//! the pass-through of a further cache's registration (chains).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::StreamExt;
use wharf_oci::{Digest, Hasher};

use crate::metrics::{prometheus, Metrics};
use crate::report::{CacheReport, CacheState, Registration};
use crate::signed::{SignatureError, SignedQuery, Verifier};
use crate::store::{BlobCache, Fill, Lookup};
use crate::upstream::{Upstreams, HEARTBEAT_PATH, REGISTRATION_PATH};
use crate::{CACHE_BLOB_PATH, VIA_HEADER};

/// How a cache node is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// The registration, and the spool of fills in progress; the kept blobs too unless
    /// `blobs` names a store.
    pub dir: PathBuf,
    /// Where kept blobs live instead of `dir` (an S3 bucket and prefix).
    pub blobs: Option<Arc<dyn wharf_blobstore::BlobStore>>,
    pub max_bytes: u64,
    /// Upstream base URLs, tried in order.
    pub upstreams: Vec<String>,
    /// The token the registry gave when the cache was registered.
    pub token: String,
    pub version: String,
    pub commit: String,
    pub heartbeat_interval: Duration,
}

pub struct Node {
    config: NodeConfig,
    pub instance: String,
    pub cache: Arc<BlobCache>,
    upstreams: Upstreams,
    keys: RwLock<Verifier>,
    registration: RwLock<Option<Registration>>,
    draining: AtomicBool,
    started_at_ms: i64,
    /// When the keys were last fetched because a URL named an unknown one (ms).
    last_key_refresh_ms: AtomicI64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Node {
    /// Opens the store and reads the last registration kept on disk (so that a cache
    /// restarted while its upstreams are down still serves what it holds).
    pub async fn open(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        anyhow::ensure!(!config.token.is_empty(), "a cache needs its token (--cache-token or WHARF_CACHE_TOKEN): `wharf cache add` printed it");
        let metrics = Arc::new(Metrics::default());
        let cache = match &config.blobs {
            None => BlobCache::open(&config.dir, config.max_bytes, metrics).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the cache directory {}: {e}",
                    config.dir.display()
                )
            })?,
            Some(store) => {
                BlobCache::open_with_store(&config.dir, store.clone(), config.max_bytes, metrics)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the cache's blob store: {e}"))?
            }
        };
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let upstreams = Upstreams::new(config.upstreams.clone(), instance.clone())?;
        let node = Node {
            instance,
            cache,
            upstreams,
            keys: RwLock::new(Verifier::default()),
            registration: RwLock::new(None),
            draining: AtomicBool::new(false),
            started_at_ms: now_ms(),
            last_key_refresh_ms: AtomicI64::new(0),
            config,
        };
        if let Ok(bytes) = std::fs::read(node.registration_file()) {
            if let Ok(reg) = serde_json::from_slice::<Registration>(&bytes) {
                node.adopt(reg);
            }
        }
        Ok(Arc::new(node))
    }

    fn registration_file(&self) -> PathBuf {
        self.config.dir.join("registration.json")
    }

    fn adopt(&self, reg: Registration) {
        match Verifier::new(&reg.keys) {
            Ok(v) => *self.keys.write().unwrap_or_else(|p| p.into_inner()) = v,
            Err(e) => tracing::warn!(error = %e, "the registry sent a key this cache cannot use"),
        }
        *self.registration.write().unwrap_or_else(|p| p.into_inner()) = Some(reg);
    }

    pub fn registration(&self) -> Option<Registration> {
        self.registration
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers, or heartbeats when `heartbeat`; keeps the answer (keys) on disk.
    pub async fn announce(&self, heartbeat: bool) -> anyhow::Result<Registration> {
        let report = heartbeat.then(|| self.report());
        let reg = self
            .upstreams
            .register(&self.config.token, report.as_ref())
            .await?;
        if self.registration().as_ref() != Some(&reg) {
            let tmp = self.registration_file().with_extension("tmp");
            let written = std::fs::write(&tmp, serde_json::to_vec_pretty(&reg)?)
                .and_then(|_| std::fs::rename(&tmp, self.registration_file()));
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not keep the registration on disk");
            }
            tracing::info!(name = %reg.name, region = %reg.region, keys = reg.keys.len(), registry_version = %reg.registry_version, "registered with the registry");
        }
        self.adopt(reg.clone());
        Ok(reg)
    }

    pub fn report(&self) -> CacheReport {
        let (stored, max, blobs) = self.cache.usage();
        CacheReport {
            instance: self.instance.clone(),
            version: self.config.version.clone(),
            commit: self.config.commit.clone(),
            state: if self.draining.load(Ordering::Relaxed) {
                CacheState::Draining
            } else {
                CacheState::Serving
            },
            started_at_ms: self.started_at_ms,
            clock_ms: now_ms(),
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as i64,
            stored_bytes: stored,
            max_bytes: max,
            blobs,
            counters: self.cache.metrics.snapshot(),
            upstreams: self.upstreams.urls().to_vec(),
        }
    }

    /// Heartbeats until stopped; failures are logged (the registry then shows the cache
    /// as silent and serves its users itself).
    pub async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.announce(true).await {
                Ok(_) if failing => {
                    tracing::info!("heartbeats reach the registry again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %format!("{e:#}"), "heartbeat failed; the registry will stop redirecting here until one arrives");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Tells the registry this cache is going away (no new redirects), best effort.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        if let Err(e) = self.announce(true).await {
            tracing::warn!(error = %format!("{e:#}"), "could not tell the registry that this cache is draining");
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(&format!("{CACHE_BLOB_PATH}/{{digest}}"), any(blob))
            .route(REGISTRATION_PATH, get(pass_registration))
            .route(HEARTBEAT_PATH, axum::routing::post(pass_heartbeat))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/api/v0/meta/version", get(version))
            .with_state(self.clone())
    }

    /// Verifies a URL; an unknown key id makes it fetch the keys again (at most every
    /// 10 s), for a registry whose keys rotated since the last heartbeat.
    async fn verify(&self, digest: &Digest, q: &SignedQuery) -> Result<(), SignatureError> {
        let now = now_ms() / 1000;
        let first = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verify(digest, q, now);
        match first {
            Err(SignatureError::UnknownKey(_)) => {
                let last = self.last_key_refresh_ms.load(Ordering::Relaxed);
                if now_ms() - last > 10_000 {
                    self.last_key_refresh_ms.store(now_ms(), Ordering::Relaxed);
                    if let Err(e) = self.announce(true).await {
                        tracing::warn!(error = %format!("{e:#}"), "could not fetch the registry's keys");
                    }
                }
                self.keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .verify(digest, q, now)
            }
            other => other,
        }
    }
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut m = message.into();
    m.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

/// `GET|HEAD /cache/v1/blobs/<digest>?s&e&k&sig`
async fn blob(
    State(node): State<Arc<Node>>,
    Path(digest): Path<String>,
    query: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only"),
    };
    let Ok(digest) = digest.parse::<Digest>() else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("{digest:?} is not a digest"),
        );
    };
    let Ok(Query(q)) = query else {
        Metrics::add(&node.cache.metrics.refused, 1);
        return plain(StatusCode::FORBIDDEN, SignatureError::Missing.to_string());
    };
    let via = header_str(req.headers(), VIA_HEADER);
    if via.split(',').any(|v| v.trim() == node.instance) {
        return plain(StatusCode::LOOP_DETECTED, format!("this cache ({}) is already on the fill's path ({via}): the caches' upstreams form a loop", node.instance));
    }
    if let Err(e) = node.verify(&digest, &q).await {
        Metrics::add(&node.cache.metrics.refused, 1);
        let status = match e {
            SignatureError::UnknownKey(_)
                if node
                    .keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty() =>
            {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::FORBIDDEN,
        };
        return plain(status, e.to_string());
    }
    let range = match parse_range(header_str(req.headers(), header::RANGE.as_str()), q.s) {
        Ok(r) => r,
        Err(()) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", q.s))
                .body(Body::empty())
                .expect("valid response")
        }
    };
    if head {
        return headers_only(&digest, q.s, range);
    }
    let found = match node.cache.lookup(&digest, q.s) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a fill");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the cache cannot write: {e}"),
            );
        }
    };
    let (start, end) = range.unwrap_or((0, q.s));
    let metrics = node.cache.metrics.clone();
    let body = match found {
        Lookup::Hit(held) => {
            let stream = match held.read(start, end).await {
                Ok(s) => s,
                Err(e) => {
                    return plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot read a kept blob: {e}"),
                    )
                }
            };
            // The hold lives as long as the body: the blob is not evicted under it.
            let stream = stream.map(move |chunk| {
                let _hold = &held;
                chunk
            });
            Body::from_stream(count(stream, metrics))
        }
        Lookup::Join(fill) => {
            if let Err(e) = fill.started().await {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("the cache could not fetch {digest}: {e}"),
                );
            }
            Body::from_stream(count(fill.reader(start, end), metrics))
        }
        Lookup::Start(fill) => {
            tokio::spawn(run_fill(
                node.clone(),
                fill.clone(),
                q.clone(),
                via.to_string(),
            ));
            if let Err(e) = fill.started().await {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("the cache could not fetch {digest}: {e}"),
                );
            }
            Body::from_stream(count(fill.reader(start, end), metrics))
        }
    };
    let mut resp = headers_only(&digest, q.s, range);
    *resp.body_mut() = body;
    resp
}

fn count<S>(
    stream: S,
    metrics: Arc<Metrics>,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    stream.map(move |chunk| {
        if let Ok(c) = &chunk {
            Metrics::add(&metrics.bytes_to_clients, c.len() as u64);
        }
        chunk
    })
}

fn headers_only(digest: &Digest, size: u64, range: Option<(u64, u64)>) -> Response {
    let mut resp = Response::new(Body::empty());
    let len = match range {
        Some((s, e)) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {s}-{}/{size}", e - 1)).expect("ascii"),
            );
            e - s
        }
        None => size,
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{digest}\"")).expect("ascii"),
    );
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("ascii"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000, immutable"),
    );
    resp
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`, as `start..end`.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    if value.is_empty() {
        return Ok(None);
    }
    let spec = value.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(()); // one range only, as registries serve
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| ())?, size),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, (b + 1).min(size))
        }
    };
    if start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// How much of a fill is gathered before one positioned write.
const WRITE_BATCH: usize = 1 << 20;

/// Fetches `fill` from the upstreams in turn. One that fails part-way is followed by
/// the next from where it stopped (a range request); the bytes are kept only if they
/// hash to the digest and have the signed length.
async fn run_fill(node: Arc<Node>, fill: Arc<Fill>, q: SignedQuery, via: String) {
    let outcome = fill_from_upstreams(&node, &fill, &q, &via).await;
    if let Err(e) = &outcome {
        tracing::warn!(digest = %fill.digest, error = %e, "fill failed; nothing kept");
    }
    // The kept blob is synced to disk or uploaded (readers were told before).
    node.cache.finish(&fill, outcome).await;
}

async fn fill_from_upstreams(
    node: &Node,
    fill: &Fill,
    q: &SignedQuery,
    via: &str,
) -> Result<(), String> {
    let metrics = &node.cache.metrics;
    let mut hasher = Hasher::new(fill.digest.algorithm());
    let mut written = 0u64;
    let mut errors = Vec::new();
    for upstream in node.upstreams.urls() {
        let resp = match node
            .upstreams
            .fetch_blob(upstream, &fill.digest, q, written, via)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                Metrics::add(&metrics.upstream_errors, 1);
                errors.push(e);
                continue;
            }
        };
        let mut body = resp.bytes_stream();
        let mut failed = None;
        // Written in pieces of about WRITE_BATCH: one blocking write per piece, not per
        // network read.
        let mut pending = bytes::BytesMut::new();
        let mut flushed = written;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failed = Some(format!(
                        "{upstream}: the body broke off after {written} bytes: {e}"
                    ));
                    break;
                }
            };
            if written + chunk.len() as u64 > fill.size {
                Metrics::add(&metrics.rejected_fills, 1);
                return Err(format!(
                    "{upstream} sent more than the blob's {} bytes",
                    fill.size
                ));
            }
            hasher.update(&chunk);
            Metrics::add(&metrics.bytes_from_upstream, chunk.len() as u64);
            written += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            if pending.len() >= WRITE_BATCH {
                let piece = pending.split().freeze();
                let len = piece.len() as u64;
                fill.write_at(flushed, piece)
                    .await
                    .map_err(|e| format!("the cache cannot write: {e}"))?;
                flushed += len;
            }
        }
        if !pending.is_empty() {
            fill.write_at(flushed, pending.split().freeze())
                .await
                .map_err(|e| format!("the cache cannot write: {e}"))?;
        }
        if failed.is_none() && written < fill.size {
            failed = Some(format!(
                "{upstream}: the body ended after {written} of {} bytes",
                fill.size
            ));
        }
        match failed {
            Some(e) => {
                Metrics::add(&metrics.upstream_errors, 1);
                errors.push(e);
            }
            None => break,
        }
    }
    if written < fill.size {
        if written > 0 {
            Metrics::add(&metrics.rejected_fills, 1);
        }
        return Err(if errors.is_empty() {
            "no upstream to fetch from".to_string()
        } else {
            errors.join("; ")
        });
    }
    let got = hasher.finish();
    if got != fill.digest {
        Metrics::add(&metrics.rejected_fills, 1);
        return Err(format!(
            "the upstream's bytes hash to {got}, not {}",
            fill.digest
        ));
    }
    Ok(())
}

/// A further cache's registration, passed on to this cache's upstreams.
async fn pass_registration(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    pass_on(&node, &headers, None).await
}

async fn pass_heartbeat(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let report: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("not a heartbeat: {e}")),
    };
    pass_on(&node, &headers, Some(&report)).await
}

async fn pass_on(node: &Node, headers: &HeaderMap, report: Option<&serde_json::Value>) -> Response {
    let via = header_str(headers, VIA_HEADER);
    if via.split(',').any(|v| v.trim() == node.instance) {
        return plain(StatusCode::LOOP_DETECTED, format!("this cache ({}) is already on the registration's path ({via}): the caches' upstreams form a loop", node.instance));
    }
    let auth = header_str(headers, header::AUTHORIZATION.as_str());
    match node.upstreams.announce(auth, report, via).await {
        Ok((status, body)) => {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("no upstream answered: {e}"),
        ),
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.is_draining() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if node
        .keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
    {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not registered with the registry yet",
        )
    } else {
        plain(StatusCode::OK, "ready")
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    let (stored, max, blobs) = node.cache.usage();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus(
            &node.cache.metrics.snapshot(),
            stored,
            max,
            blobs,
            node.cache
                .metrics
                .deletes_pending
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    )
        .into_response()
}

async fn version(State(node): State<Arc<Node>>) -> Response {
    let reg = node.registration();
    axum::Json(serde_json::json!({
        "version": node.config.version,
        "commit": node.config.commit,
        "role": "content-cache",
        "name": reg.as_ref().map(|r| r.name.clone()),
        "instance": node.instance,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("", 10), Ok(None));
        assert_eq!(parse_range("bytes=0-4", 10), Ok(Some((0, 5))));
        assert_eq!(parse_range("bytes=5-", 10), Ok(Some((5, 10))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 10))));
        assert_eq!(parse_range("bytes=8-100", 10), Ok(Some((8, 10))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Err(()));
        assert_eq!(parse_range("items=0-1", 10), Err(()));
    }
}
