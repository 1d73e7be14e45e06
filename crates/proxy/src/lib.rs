//! Pull-through proxy repositories: a repository-name prefix (`hub/`) whose manifests
//! and blobs are fetched on demand from upstream registries and then served like any
//! pushed content.
//!
//! - A manifest by tag is served from the store while its last revalidation is younger
//!   than the proxy's interval; after that it is revalidated with a `HEAD` upstream and
//!   fetched with a `GET` only when its digest changed.
//! - Content by digest is immutable: once stored it is never asked for again.
//! - A missing blob is fetched once per replica however many clients ask at the same
//!   moment, streamed to the first while it is stored and verified; a wrong digest or a
//!   short body keeps nothing.
//! - With every upstream down or rate-limiting, what is stored is served and marked
//!   possibly stale; with nothing stored, the error names each upstream's failure.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::Method;
use tokio::sync::{mpsc, watch};
use wharf_metastore::{now_ms, ProxyConfig};
use wharf_oci::{media, Digest, Reference, RepoName, Tag};
use wharf_registry::{ByteStream, Registry, RegistryError};

pub mod admin;
pub mod upstream;

use upstream::{Upstream, UpstreamError};

/// Proxies are read from the store again after this long (another replica or the CLI
/// may have changed them); a change through this replica's API applies at once.
const RELOAD: Duration = Duration::from_secs(5);
/// A manifest's last use is written at most this often per replica.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Every manifest type the registry stores, for the upstream's content negotiation.
const MANIFEST_TYPES: [&str; 4] = [
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

/// What each proxy did since this replica started (Prometheus counters).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered from the store without fetching.
    pub hits: AtomicU64,
    /// Requests that fetched a manifest or blob from upstream.
    pub misses: AtomicU64,
    /// Tag revalidations (HEAD requests) sent upstream.
    pub revalidations: AtomicU64,
    /// Blob bytes received from upstream.
    pub upstream_bytes: AtomicU64,
    /// Upstream requests that failed (404s aside).
    pub upstream_errors: AtomicU64,
    /// Manifests served from the store because no upstream answered.
    pub stale_serves: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A proxy as this replica uses it: its settings and one client per upstream.
pub struct Proxy {
    pub config: ProxyConfig,
    upstreams: Vec<Upstream>,
    pub counters: Arc<Counters>,
}

/// Every upstream's failure, in order.
#[derive(Debug)]
struct Failure(Vec<UpstreamError>);

impl Failure {
    fn all_not_found(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(UpstreamError::is_not_found)
    }

    fn any_not_found(&self) -> bool {
        self.0.iter().any(UpstreamError::is_not_found)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&parts.join("; "))
    }
}

impl Proxy {
    /// The repository's name upstream: the prefix taken off.
    fn upstream_repo<'a>(&self, repo: &'a RepoName) -> &'a str {
        &repo.as_str()[self.config.prefix.len()..]
    }

    /// The first upstream's successful answer to `method /v2/{path}`, in order.
    async fn send(
        &self,
        method: Method,
        up_repo: &str,
        path: &str,
        accept: &[&str],
    ) -> Result<reqwest::Response, Failure> {
        let scope = format!("repository:{up_repo}:pull");
        let mut errors = Vec::new();
        for u in &self.upstreams {
            match u
                .send(method.clone(), &format!("{up_repo}/{path}"), accept, &scope)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => {
                    if !e.is_not_found() {
                        add(&self.counters.upstream_errors, 1);
                        tracing::warn!(proxy = %self.config.prefix, error = %e, "upstream request failed");
                    }
                    errors.push(e);
                }
            }
        }
        Err(Failure(errors))
    }

    /// A manifest's digest upstream, by `HEAD` (`None` if the upstream does not say).
    async fn head_manifest(
        &self,
        up_repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, Failure> {
        add(&self.counters.revalidations, 1);
        let resp = self
            .send(
                Method::HEAD,
                up_repo,
                &format!("manifests/{reference}"),
                &MANIFEST_TYPES,
            )
            .await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()))
    }

    async fn get_manifest(
        &self,
        up_repo: &str,
        reference: &str,
    ) -> Result<(Option<String>, Bytes), Failure> {
        let resp = self
            .send(
                Method::GET,
                up_repo,
                &format!("manifests/{reference}"),
                &MANIFEST_TYPES,
            )
            .await?;
        // Only a manifest type is passed on: anything else (`application/json`, a
        // charset) leaves the type to the manifest's own `mediaType`.
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|t| MANIFEST_TYPES.contains(t))
            .map(str::to_string);
        let body = resp.bytes().await.map_err(|e| {
            Failure(vec![UpstreamError::Unreachable {
                url: self
                    .upstreams
                    .first()
                    .map(|u| u.url.clone())
                    .unwrap_or_default(),
                reason: format!("the manifest's body could not be read: {e}"),
            }])
        })?;
        Ok((content_type, body))
    }

    /// The upstreams, for messages.
    pub fn upstream_list(&self) -> String {
        self.config.upstreams.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No upstream could answer and nothing is stored.
    #[error("{repo} is proxied from {prefix} upstreams, and none could answer: {detail}")]
    Upstream {
        prefix: String,
        repo: String,
        detail: String,
    },
}

impl From<wharf_metastore::MetaError> for ProxyError {
    fn from(e: wharf_metastore::MetaError) -> Self {
        ProxyError::Registry(e.into())
    }
}

/// How a manifest about to be served through a proxy stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Served from the store because no upstream could revalidate it: why.
    pub stale: Option<String>,
}

/// What a blob request through a proxy gets.
pub enum BlobFill {
    /// The blob is in the repository: serve it as any other.
    Stored,
    /// Fetched for this request: its bytes as they arrive, while they are stored.
    Streaming { size: Option<u64>, body: ByteStream },
}

type FillResult = Option<Result<(), String>>;

struct Loaded {
    at: Instant,
    proxies: Vec<Arc<Proxy>>,
}

/// The proxies of this replica: shared by every request.
pub struct Proxies {
    registry: Registry,
    http: reqwest::Client,
    loaded: tokio::sync::Mutex<Option<Loaded>>,
    /// Blob fills under way: one per (repository, digest).
    fills: Mutex<HashMap<(RepoName, Digest), watch::Receiver<FillResult>>>,
    touched: Mutex<HashMap<(RepoName, Digest), Instant>>,
    counters: Mutex<BTreeMap<String, Arc<Counters>>>,
}

impl Proxies {
    pub fn new(registry: Registry) -> Arc<Proxies> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("wharf-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        Arc::new(Proxies {
            registry,
            http,
            loaded: tokio::sync::Mutex::new(None),
            fills: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
        })
    }

    /// Makes the next request read the proxies from the store (after a change).
    pub async fn invalidate(&self) {
        *self.loaded.lock().await = None;
    }

    /// Every proxy's counters, by prefix (proxies since removed included).
    pub fn counters(&self) -> Vec<(String, Arc<Counters>)> {
        let c = self.counters.lock().expect("counters lock");
        c.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    async fn proxies(&self) -> Result<Vec<Arc<Proxy>>, ProxyError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(l) = loaded.as_ref().filter(|l| l.at.elapsed() < RELOAD) {
            return Ok(l.proxies.clone());
        }
        let configs = match self.registry.meta().proxies().await {
            Ok(c) => c,
            // An older schema (a rollback under way) has no proxies.
            Err(e)
                if e.to_string().contains("no such table")
                    || e.to_string().contains("does not exist") =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let previous = loaded.take().map(|l| l.proxies).unwrap_or_default();
        let proxies = configs
            .into_iter()
            .map(|config| {
                // Unchanged proxies keep their clients, and so their cached tokens.
                if let Some(p) = previous.iter().find(|p| p.config == config) {
                    return p.clone();
                }
                let counters = self
                    .counters
                    .lock()
                    .expect("counters lock")
                    .entry(config.prefix.clone())
                    .or_default()
                    .clone();
                let upstreams = config
                    .upstreams
                    .iter()
                    .map(|u| {
                        Upstream::new(
                            self.http.clone(),
                            u,
                            config.username.clone(),
                            config.password.clone(),
                        )
                    })
                    .collect();
                Arc::new(Proxy {
                    config,
                    upstreams,
                    counters,
                })
            })
            .collect::<Vec<_>>();
        *loaded = Some(Loaded {
            at: Instant::now(),
            proxies: proxies.clone(),
        });
        Ok(proxies)
    }

    /// The proxy whose prefix `repo` is under, if any.
    pub async fn proxy_for(&self, repo: &RepoName) -> Result<Option<Arc<Proxy>>, ProxyError> {
        Ok(self
            .proxies()
            .await?
            .into_iter()
            .find(|p| repo.as_str().starts_with(&p.config.prefix)))
    }

    /// Records a use of a proxied manifest: always when it was just stored (`bytes`
    /// given), otherwise at most once a minute. A failure only costs retention accuracy.
    async fn touch(&self, p: &Proxy, repo: &RepoName, digest: &Digest, bytes: Option<u64>) {
        let key = (repo.clone(), digest.clone());
        {
            let mut touched = self.touched.lock().expect("touch lock");
            let recent = touched.get(&key).is_some_and(|t| t.elapsed() < TOUCH_EVERY);
            if recent && bytes.is_none() {
                return;
            }
            if touched.len() > 100_000 {
                touched.clear();
            }
            touched.insert(key, Instant::now());
        }
        if let Err(e) = self
            .registry
            .meta()
            .touch_proxied_manifest(&p.config.prefix, repo, digest, bytes.unwrap_or(0), now_ms())
            .await
        {
            tracing::warn!(error = %e, %repo, %digest, "could not record a proxied manifest's use");
        }
    }

    /// Makes sure the manifest `repo:reference` is stored, fetching or revalidating it
    /// upstream as the proxy's rules say, before it is served as any other manifest.
    /// `None` if `repo` is not under a proxy.
    pub async fn prepare_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Freshness>, ProxyError> {
        let Some(p) = self.proxy_for(repo).await? else {
            return Ok(None);
        };
        let fresh = Freshness { stale: None };
        let meta = self.registry.meta();
        let up_repo = p.upstream_repo(repo);
        let tag = match reference {
            Reference::Digest(d) => {
                if meta.get_manifest(repo, reference, false).await?.is_some() {
                    add(&p.counters.hits, 1);
                    self.touch(&p, repo, d, None).await;
                    return Ok(Some(fresh));
                }
                add(&p.counters.misses, 1);
                let (content_type, body) = p
                    .get_manifest(up_repo, &d.to_string())
                    .await
                    .map_err(|f| self.failure(&p, repo, reference, f))?;
                let (digest, bytes) = self
                    .registry
                    .put_proxied_manifest(repo, None, Some(d), content_type.as_deref(), body)
                    .await?;
                self.touch(&p, repo, &digest, Some(bytes)).await;
                return Ok(Some(fresh));
            }
            Reference::Tag(t) => t,
        };
        let local = meta.get_manifest(repo, reference, false).await?;
        let now = now_ms();
        if let Some(l) = &local {
            if let Some((d, at)) = meta.proxy_tag(repo, tag).await? {
                let interval_ms = p.config.revalidate_secs.saturating_mul(1000) as i64;
                if d == l.digest && now - at < interval_ms {
                    add(&p.counters.hits, 1);
                    self.touch(&p, repo, &l.digest, None).await;
                    return Ok(Some(fresh));
                }
            }
        }
        let head = match p.head_manifest(up_repo, tag.as_str()).await {
            Ok(h) => h,
            Err(f) => {
                return self
                    .fallback(&p, repo, reference, local.map(|l| l.digest), f)
                    .await
            }
        };
        if let (Some(l), Some(d)) = (&local, &head) {
            if &l.digest == d {
                add(&p.counters.hits, 1);
                meta.set_proxy_tag(repo, tag, d, now).await?;
                self.touch(&p, repo, d, None).await;
                return Ok(Some(fresh));
            }
        }
        add(&p.counters.misses, 1);
        // By the digest the HEAD named, so what is stored is what was revalidated.
        let wanted = head
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| tag.to_string());
        let (content_type, body) = match p.get_manifest(up_repo, &wanted).await {
            Ok(m) => m,
            Err(f) => {
                return self
                    .fallback(&p, repo, reference, local.map(|l| l.digest), f)
                    .await
            }
        };
        let (digest, bytes) = self
            .registry
            .put_proxied_manifest(
                repo,
                Some(tag),
                head.as_ref(),
                content_type.as_deref(),
                body,
            )
            .await?;
        meta.set_proxy_tag(repo, tag, &digest, now).await?;
        self.touch(&p, repo, &digest, Some(bytes)).await;
        tracing::info!(proxy = %p.config.prefix, %repo, %tag, %digest, "proxied manifest stored");
        Ok(Some(fresh))
    }

    /// No upstream answered a revalidation: the stored manifest, marked stale, if any.
    async fn fallback(
        &self,
        p: &Proxy,
        repo: &RepoName,
        reference: &Reference,
        local: Option<Digest>,
        f: Failure,
    ) -> Result<Option<Freshness>, ProxyError> {
        match local {
            // The upstream says the tag is gone: so it is here.
            _ if f.all_not_found() => Err(self.failure(p, repo, reference, f)),
            Some(d) => {
                add(&p.counters.stale_serves, 1);
                self.touch(p, repo, &d, None).await;
                tracing::warn!(proxy = %p.config.prefix, %repo, %reference, reason = %f, "serving a possibly stale manifest");
                Ok(Some(Freshness {
                    stale: Some(f.to_string()),
                }))
            }
            None => Err(self.failure(p, repo, reference, f)),
        }
    }

    fn failure(&self, p: &Proxy, repo: &RepoName, reference: &Reference, f: Failure) -> ProxyError {
        if f.all_not_found() {
            return ProxyError::Registry(RegistryError::ManifestUnknown(format!(
                "{repo}:{reference} (not found upstream: {f})"
            )));
        }
        ProxyError::Upstream {
            prefix: p.config.prefix.clone(),
            repo: repo.to_string(),
            detail: f.to_string(),
        }
    }

    /// Makes sure blob `digest` is in `repo`, fetching it upstream if it is under a
    /// proxy and missing. With `stream`, a fetch this request starts is answered as it
    /// arrives ([`BlobFill::Streaming`]); otherwise (HEAD, ranges, and requests that
    /// find a fetch under way) it is waited for and then served from the store.
    pub async fn prepare_blob(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
        stream: bool,
    ) -> Result<BlobFill, ProxyError> {
        let Some(p) = self.proxy_for(repo).await? else {
            return Ok(BlobFill::Stored);
        };
        let meta = self.registry.meta();
        let by_digest = Reference::Digest(digest.clone());
        if meta.repo_blob(repo, digest).await?.is_some()
            || meta.get_manifest(repo, &by_digest, false).await?.is_some()
        {
            add(&p.counters.hits, 1);
            return Ok(BlobFill::Stored);
        }
        // Stored for another repository already: content by digest is the same bytes.
        if meta.blob_size(digest).await?.is_some() && meta.link_blob(repo, digest).await? {
            add(&p.counters.hits, 1);
            return Ok(BlobFill::Stored);
        }
        let key = (repo.clone(), digest.clone());
        // Bounded: a fill that ends without a result (its task died) is retried twice.
        for _ in 0..3 {
            let waiting = {
                let mut fills = self.fills.lock().expect("fills lock");
                match fills.get(&key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        fills.insert(key.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            let mut rx = match waiting {
                Err(rx) => rx,
                Ok(tx) => {
                    let guard = FillGuard {
                        proxies: self.clone(),
                        key: key.clone(),
                        tx,
                    };
                    let started = self.start_fill(&p, repo, digest, stream, guard).await?;
                    match started {
                        Started::Streaming(fill) => return Ok(fill),
                        Started::Waiting(rx) => rx,
                    }
                }
            };
            let result = rx.wait_for(Option::is_some).await.map(|r| r.clone());
            match result {
                Ok(Some(Ok(()))) => return Ok(BlobFill::Stored),
                Ok(Some(Err(detail))) => {
                    return Err(ProxyError::Upstream {
                        prefix: p.config.prefix.clone(),
                        repo: repo.to_string(),
                        detail,
                    })
                }
                _ => continue,
            }
        }
        Err(ProxyError::Registry(RegistryError::Storage(format!(
            "the fetch of {digest} for {repo} kept ending without a result"
        ))))
    }

    /// Fetches the blob upstream in a task of its own (it goes on if the client leaves).
    async fn start_fill(
        self: &Arc<Self>,
        p: &Arc<Proxy>,
        repo: &RepoName,
        digest: &Digest,
        stream: bool,
        guard: FillGuard,
    ) -> Result<Started, ProxyError> {
        add(&p.counters.misses, 1);
        let resp = match p
            .send(
                Method::GET,
                p.upstream_repo(repo),
                &format!("blobs/{digest}"),
                &[],
            )
            .await
        {
            Ok(r) => r,
            Err(f) => {
                // Content by digest: an upstream that answers "not there" is believed
                // (clients probe blobs with HEAD before pushing or mounting).
                let err = if f.any_not_found() {
                    ProxyError::Registry(RegistryError::BlobUnknown(digest.clone()))
                } else {
                    ProxyError::Upstream {
                        prefix: p.config.prefix.clone(),
                        repo: repo.to_string(),
                        detail: f.to_string(),
                    }
                };
                guard.finish(Err(err.to_string()));
                return Err(err);
            }
        };
        let size = resp.content_length();
        let (client_tx, client_rx) = if stream {
            let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let counters = p.counters.clone();
        let tee_tx = client_tx.clone();
        let body: ByteStream = Box::pin(resp.bytes_stream().then(move |r| {
            let tx = tee_tx.clone();
            let counters = counters.clone();
            async move {
                let r = r.map_err(io::Error::other);
                if let Ok(b) = &r {
                    add(&counters.upstream_bytes, b.len() as u64);
                    if let Some(tx) = tx {
                        // A client that went away does not stop the fill.
                        let _ = tx.send(Ok(b.clone())).await;
                    }
                }
                r
            }
        }));
        let rx = guard.tx.subscribe();
        let (registry, repo, digest, prefix) = (
            self.registry.clone(),
            repo.clone(),
            digest.clone(),
            p.config.prefix.clone(),
        );
        tokio::spawn(async move {
            let result = registry.upload_whole(&repo, &digest, body, size).await;
            let result = match result {
                Ok(_) => {
                    tracing::info!(proxy = %prefix, %repo, %digest, "proxied blob stored");
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(proxy = %prefix, %repo, %digest, error = %e, "proxied blob not stored");
                    Err(format!("the upstream's blob {digest} was not stored: {e}"))
                }
            };
            // Published before the client hears of it: whoever asks next starts anew.
            guard.finish(result.clone());
            if let (Err(e), Some(tx)) = (result, &client_tx) {
                let _ = tx.send(Err(io::Error::other(e))).await;
            }
        });
        Ok(match client_rx {
            Some(rx) => Started::Streaming(BlobFill::Streaming {
                size,
                body: Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                })),
            }),
            None => Started::Waiting(rx),
        })
    }

    /// The proxies as stored, with what each holds, for status pages.
    pub async fn list(&self) -> Result<Vec<ProxyConfig>, ProxyError> {
        Ok(self.registry.meta().proxies().await?)
    }

    /// The message for a push refused because `repo` is under a proxy.
    pub fn push_refusal(p: &Proxy) -> String {
        format!(
            "{} is a pull-through proxy of {}; push to another repository",
            p.config.prefix,
            p.upstream_list()
        )
    }

    /// Tags of the proxy's tag state, for tests and status.
    pub async fn tag_state(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<Option<(Digest, i64)>, ProxyError> {
        Ok(self.registry.meta().proxy_tag(repo, tag).await?)
    }
}

enum Started {
    Streaming(BlobFill),
    Waiting(watch::Receiver<FillResult>),
}

/// Ends a fill: publishes its result and lets the next request start another.
struct FillGuard {
    proxies: Arc<Proxies>,
    key: (RepoName, Digest),
    tx: watch::Sender<FillResult>,
}

impl FillGuard {
    fn finish(self, result: Result<(), String>) {
        self.tx.send_replace(Some(result));
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.proxies
            .fills
            .lock()
            .expect("fills lock")
            .remove(&self.key);
    }
}
