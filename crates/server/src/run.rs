//! The composition root: turns a [`Config`] into a serving registry, and stops it
//! gracefully.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use wharf_blobstore::{BlobStore, FsBlobStore, S3BlobStore, S3Config};
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_registry::{Limits, Registry};

use wharf_auth::{AuthConfig, Authenticator};
use wharf_metastore::accounts::Level;

use crate::config::{BlobLocation, DeleteLevel, MetadataLocation};
use crate::{router, AppState, Config, ServerInfo, Settings};

/// Opens the metadata store the configuration names (for the admin commands).
pub async fn open_metastore(config: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    open_meta(config, false).await
}

/// Opens the metadata store; `create` allows starting an empty one (only `serve`
/// does that: an admin command pointed at the wrong place should say so).
async fn open_meta(config: &Config, create: bool) -> anyhow::Result<Arc<dyn MetaStore>> {
    match config.metadata_location().map_err(anyhow::Error::msg)? {
        MetadataLocation::Sqlite(path) => {
            if !create && !path.exists() {
                anyhow::bail!(
                    "no registry data at {} (start `wharf serve` there first, or pass --data-dir / --metadata)",
                    path.display()
                );
            }
            let meta = SqliteMetaStore::open(&path)
                .await
                .with_context(|| format!("cannot open metadata store {}", path.display()))?;
            Ok(Arc::new(meta))
        }
        MetadataLocation::Postgres(url) => {
            let meta = PgMetaStore::open(&url.0)
                .await
                .with_context(|| format!("cannot open metadata store {url:?}"))?;
            Ok(Arc::new(meta))
        }
    }
}

/// Opens the metadata store the configuration names, creating an empty one if there
/// is none (for `wharf restore`).
pub async fn open_or_create_metastore(config: &Config) -> anyhow::Result<Arc<dyn MetaStore>> {
    if let MetadataLocation::Sqlite(path) =
        config.metadata_location().map_err(anyhow::Error::msg)?
    {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    open_meta(config, true).await
}

/// The kind of metadata store the configuration names: `sqlite` or `postgres`.
pub fn metastore_kind(config: &Config) -> &'static str {
    match config.metadata_location() {
        Ok(MetadataLocation::Postgres(_)) => "postgres",
        _ => "sqlite",
    }
}

/// Opens the blob store the configuration names.
pub fn open_blobstore(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match config.blob_location().map_err(anyhow::Error::msg)? {
        BlobLocation::Dir(dir) => Arc::new(
            FsBlobStore::open(&dir)
                .with_context(|| format!("cannot open blob store in {}", dir.display()))?,
        ),
        BlobLocation::S3 { bucket, prefix } => {
            let s3 = S3Config {
                bucket: bucket.clone(),
                prefix,
                endpoint: config.s3_endpoint.clone(),
                region: config.s3_region.clone(),
                ..S3Config::default()
            };
            Arc::new(
                S3BlobStore::open(&s3)
                    .with_context(|| format!("cannot open the S3 bucket {bucket}"))?,
            )
        }
    })
}

/// What the job actions work on, as the configuration says.
pub fn job_stores(
    config: &Config,
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
) -> wharf_jobs::actions::Stores {
    wharf_jobs::actions::Stores {
        meta,
        blobs,
        upload_expiry: Duration::from_secs(config.upload_expiry_secs),
        gc_grace: Duration::from_secs(config.gc_grace_secs),
        gc_busy_percent: config.gc_busy_percent.unwrap_or_else(|| {
            let on_postgres = matches!(
                config.metadata_location(),
                Ok(MetadataLocation::Postgres(_))
            );
            wharf_jobs::actions::gc::default_busy_percent(on_postgres)
        }),
        vulndb: config.vulndb_settings(),
        registry_address: config.registry_address(),
    }
}

/// The name of the schedule `serve` keeps for the online database update.
pub const VULNDB_SCHEDULE: &str = "vulndb_update";

/// With `vulndb_url` set, makes sure the schedule [`VULNDB_SCHEDULE`] exists and runs
/// as often as configured; with no database imported yet, it is made due now, so the
/// first update runs soon after the start. Replicas starting together may all do this:
/// the schedule is one row by name (written whole, with the same values), and a due
/// schedule queues its job once across the cluster. An operator's `enabled` switch and
/// parameters are kept.
pub async fn ensure_vulndb_schedule(meta: &dyn MetaStore, config: &Config) -> anyhow::Result<()> {
    if config.vulndb_url.is_none() {
        return Ok(());
    }
    let schedule = config.vulndb_schedule();
    let now = meta.store_now().await?;
    let existing = meta
        .crons()
        .await?
        .into_iter()
        .find(|c| c.name == VULNDB_SCHEDULE);
    let never_imported = meta.vulndb_versions(1).await?.is_empty();
    let next = if never_imported {
        now
    } else {
        wharf_jobs::schedule::next_after(&schedule, now)?
    };
    let cron = match existing {
        // As configured already, and nothing to run now: leave it (its next run too).
        Some(c) if c.schedule == schedule && c.action == VULNDB_SCHEDULE && !never_imported => {
            return Ok(())
        }
        Some(c) => wharf_metastore::jobs::Cron {
            schedule: schedule.clone(),
            action: VULNDB_SCHEDULE.into(),
            next_run_at_ms: next,
            ..c
        },
        None => wharf_metastore::jobs::Cron {
            name: VULNDB_SCHEDULE.into(),
            action: VULNDB_SCHEDULE.into(),
            params: "{}".into(),
            schedule: schedule.clone(),
            run_for_minutes: None,
            enabled: true,
            next_run_at_ms: next,
            last_job_id: None,
        },
    };
    meta.put_cron(&cron).await?;
    tracing::info!(schedule = %schedule, first_run_now = never_imported, "vulndb_update is scheduled");
    Ok(())
}

/// Opens the stores the configuration names and builds the shared state; the caller
/// has validated the configuration.
async fn open(config: &Config, version: &str, commit: &str) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let blobs = open_blobstore(config)?;
    let meta = open_meta(config, true).await?;
    let schema_level = meta.schema_level().await?;
    let limits = Limits {
        max_manifest_bytes: config.max_manifest_bytes,
        upload_expiry: Duration::from_secs(config.upload_expiry_secs),
        ..Limits::default()
    };
    let auth_config = AuthConfig {
        token_ttl: Duration::from_secs(config.token_ttl_secs),
        delete_level: match config.delete_requires {
            DeleteLevel::Write => Level::Write,
            DeleteLevel::Admin => Level::Admin,
        },
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(meta.clone(), auth_config).await?;
    let caches = Arc::new(crate::content_cache::CacheRouting::new(
        &crate::content_cache::seeds(&auth),
        Duration::from_secs(config.cache_redirect_ttl_secs),
    ));
    let registry = Registry::new(meta, blobs, limits);
    Ok(AppState {
        proxies: wharf_proxy::Proxies::new(registry.clone()),
        registry,
        auth: Arc::new(auth),
        settings: Arc::new(Settings {
            auth_enabled: !config.insecure_no_auth,
            tls: config.tls_cert.is_some() || config.tls_self_signed,
            token_realm: config.token_realm.clone(),
            heartbeat_interval: Duration::from_secs(config.heartbeat_interval_secs),
            job_heartbeat: Duration::from_secs(config.job_heartbeat_secs),
            vulndb_stale_after: Duration::from_secs(config.vulndb_stale_after_secs),
            config: Arc::new(config.clone()),
        }),
        info: Arc::new(ServerInfo {
            version: version.into(),
            commit: commit.into(),
            schema_level,
        }),
        ready: Arc::new(AtomicBool::new(false)),
        caches,
    })
}

/// Serves until SIGTERM or SIGINT, then stops accepting connections, lets in-flight
/// requests finish for at most `shutdown_timeout_secs`, and returns.
/// `admin_password` (from `WHARF_ADMIN_PASSWORD`) is used if this start creates the
/// initial administrator; otherwise one is generated and printed once.
pub async fn serve(
    config: Config,
    version: &str,
    commit: &str,
    admin_password: Option<String>,
) -> anyhow::Result<()> {
    // Whatever can fail without touching the data comes first: the settings, the
    // address and the TLS material. A busy port must not leave behind a new store
    // whose one-time admin password was printed and lost.
    config.validate().map_err(anyhow::Error::msg)?;
    let tcp = bind(config.listen).await?;
    let tls = tls_config(&config)?;
    let state = open(&config, version, commit).await?;

    // Handlers installed now, before anyone can learn our address: a SIGTERM that came
    // before the waiting task first ran would otherwise kill the process undrained.
    let mut signals = StopSignals::install()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signals.recv().await;
        let _ = stop_tx.send(true);
    });
    let ready = state.ready.clone();
    let mut graceful_rx = stop_rx.clone();
    let graceful = async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
        ready.store(false, Ordering::Relaxed);
        tracing::info!("signal received: no new connections; finishing in-flight requests");
    };

    let (server, url) = server_future(tcp, tls, router(state.clone()), graceful)?;
    // Registered before serving, so the cluster never sees an unregistered replica.
    let membership = Arc::new(crate::cluster::Membership::new(
        url.clone(),
        &state.info.version,
        state.info.schema_level,
        &config.data_dir,
        Duration::from_secs(config.heartbeat_interval_secs),
    ));
    membership
        .register(state.registry.meta().as_ref())
        .await
        .context("cannot register this replica")?;
    let heartbeats = tokio::spawn(membership.clone().run(state.registry.meta().clone()));
    // Content caches: loaded once before serving, then kept fresh.
    if let Err(e) = state.caches.refresh(state.registry.meta().as_ref()).await {
        tracing::warn!(error = %e, "could not load the content caches; blobs are served here until they load");
    }
    let cache_routing = tokio::spawn(state.caches.clone().run(state.registry.meta().clone()));
    // The job worker: stops claiming on the stop signal and hands its job back.
    let stores = job_stores(
        &config,
        state.registry.meta().clone(),
        state.registry.blobs().clone(),
    );
    let worker = wharf_jobs::Worker::new(
        &url,
        &state.info.version,
        state.registry.meta().clone(),
        wharf_jobs::actions::all(&stores),
        wharf_jobs::WorkerConfig::with_heartbeat(
            Duration::from_secs(config.job_heartbeat_secs),
            Duration::from_secs(config.job_retry_backoff_secs),
        ),
    );
    let worker = tokio::spawn(worker.run(stop_rx.clone()));
    // With proxies, their retention is scheduled (also made when the first is added).
    match state.registry.meta().proxies().await {
        Ok(p) if !p.is_empty() => {
            if let Err(e) =
                wharf_proxy::admin::ensure_retention_schedule(state.registry.meta().as_ref()).await
            {
                tracing::warn!(error = %e, "could not schedule proxy_retention");
            }
        }
        _ => {}
    }
    // A failure here is logged, not fatal: the registry serves without the update.
    if let Err(e) = ensure_vulndb_schedule(state.registry.meta().as_ref(), &config).await {
        tracing::warn!(error = %format!("{e:#}"), "could not schedule vulndb_update");
    }
    // The last step before serving, so nothing after it can fail and lose the password.
    if config.insecure_no_auth {
        tracing::warn!("authentication is OFF (insecure_no_auth): anyone who can connect may push, pull and delete");
    } else if let Some(generated) = state
        .auth
        .ensure_initial_admin(admin_password.as_deref())
        .await?
    {
        // Shown once, on stdout only: never logged.
        println!("Created the initial administrator. User: admin  Password: {generated}");
        println!(
            "Store it now: it is not shown again (change it with `wharf user set-password admin`)."
        );
    }
    state.ready.store(true, Ordering::Relaxed);
    let mut server = tokio::spawn(server);

    let info = &state.info;
    tracing::info!(url, data_dir = %config.data_dir.display(), version = %info.version, commit = %info.commit, schema_level = info.schema_level, "wharf is serving");
    // One plain line on stdout, for people and scripts (the port when listening on :0).
    println!("wharf {} listening on {url}", info.version);

    let timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let mut deadline_rx = stop_rx;
    tokio::select! {
        result = &mut server => {
            result.context("server task failed")?.context("server failed")?;
            tracing::info!("stopped cleanly");
        }
        _ = async {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        } => {
            tracing::warn!(timeout_secs = timeout.as_secs(), "in-flight requests did not finish in time; stopping anyway");
        }
    }
    heartbeats.abort();
    cache_routing.abort();
    // The worker saw the stop signal too; give its job a moment to be handed back.
    if tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .is_err()
    {
        tracing::warn!("the job worker did not stop in time; its job will be taken over when its heartbeat lapses");
    }
    if let Err(e) = state.registry.meta().remove_replica(&membership.id).await {
        tracing::warn!(error = %e, "could not deregister; the replica will expire");
    }
    Ok(())
}

type ServerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Serves `app` on `tcp`, over TLS when given, until `graceful` completes; returns the
/// server's future and the URL it answers at. Shared by replicas and content caches.
fn server_future(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    graceful: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(ServerFuture, String)> {
    let addr = tcp.local_addr()?;
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // After the stop signal and before the listener closes: no new connections, and
    // those the kernel already queued are accepted and served, not reset.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let graceful = async move {
        graceful.await;
        crate::listener_close::stop_accepting(fd).await;
    };
    Ok(match tls {
        Some(tls) => {
            // tap_io gives the listener axum's ConnectInfo support (client addresses).
            let listener = crate::tls::TlsListener::new(tcp, tls)?.tap_io(|_| {});
            let fut = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .into_future();
            (Box::pin(fut), format!("https://{addr}"))
        }
        None => {
            let listener = tcp.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let fut = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .into_future();
            (Box::pin(fut), format!("http://{addr}"))
        }
    })
}

/// Binds the listening socket, saying plainly what to do when the address is taken.
async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process listens there: pick another address with --listen or WHARF_LISTEN (e.g. --listen 127.0.0.1:5001)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "; ports below 1024 need privileges: pick a higher port with --listen or WHARF_LISTEN"
            }
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {listen}: {e}{hint}")
    })
}

/// The TLS configuration the settings ask for, if any.
fn tls_config(config: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key, config.tls_self_signed) {
        (Some(c), Some(k), false) => (c.clone(), k.clone()),
        (None, None, true) => {
            let mut names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if !config.listen.ip().is_unspecified() {
                names.push(config.listen.ip().to_string());
            }
            names.dedup();
            crate::tls::self_signed(&config.data_dir.join("tls"), &names)?
        }
        (None, None, false) => return Ok(None),
        _ => unreachable!("validated: tls_cert and tls_key together, or tls_self_signed alone"),
    };
    Ok(Some(crate::tls::server_config(&cert, &key)?))
}

/// SIGTERM and SIGINT, listened for from the moment they are installed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// How long a content cache keeps serving after telling the registry it drains: the
/// replicas stop redirecting to it within one routing refresh, and the clients they
/// already redirected still arrive.
const CACHE_DRAIN_GRACE: Duration = Duration::from_secs(3);

/// Runs a content cache (`cache_for` set) until SIGTERM or SIGINT: registers with the
/// upstreams, heartbeats, serves the redirected downloads; on the signal tells the
/// registry it drains, keeps serving for a moment, then finishes in-flight downloads.
pub async fn serve_cache(config: Config, version: &str, commit: &str) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let tcp = bind(config.listen).await?;
    let tls = tls_config(&config)?;
    // Kept blobs in a bucket when `blobs` names one; a directory setting is the data
    // directory's own `blobs/`.
    let blobs = match config.blob_location().map_err(anyhow::Error::msg)? {
        BlobLocation::S3 { .. } => Some(open_blobstore(&config)?),
        BlobLocation::Dir(_) => None,
    };
    let node = wharf_cache::node::Node::open(wharf_cache::node::NodeConfig {
        dir: config.data_dir.clone(),
        blobs,
        max_bytes: config.cache_max_bytes,
        upstreams: config.cache_for.clone(),
        token: config
            .cache_token
            .as_ref()
            .map(|t| t.0.clone())
            .unwrap_or_default(),
        version: version.into(),
        commit: commit.into(),
        heartbeat_interval: Duration::from_secs(config.heartbeat_interval_secs),
    })
    .await?;
    match node.announce(false).await {
        Ok(reg) => tracing::info!(name = %reg.name, "registered"),
        // Not fatal: it serves what it holds with the keys it kept, and registers
        // with the next heartbeat that gets through.
        Err(e) => match node.registration() {
            Some(reg) => {
                tracing::warn!(name = %reg.name, error = %format!("{e:#}"), "cannot reach the registry; serving with the keys kept from the last registration")
            }
            None => {
                tracing::warn!(error = %format!("{e:#}"), "cannot register with the registry yet; retrying with every heartbeat")
            }
        },
    }
    let mut signals = StopSignals::install()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let draining = node.clone();
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("signal received: draining (the registry stops redirecting here)");
        draining.drain().await;
        tokio::time::sleep(CACHE_DRAIN_GRACE).await;
        let _ = stop_tx.send(true);
    });
    let mut graceful_rx = stop_rx.clone();
    let graceful = async move {
        let _ = graceful_rx.wait_for(|stop| *stop).await;
        tracing::info!("no new connections; finishing in-flight downloads");
    };
    let (server, url) = server_future(tcp, tls, node.router(), graceful)?;
    let heartbeats = tokio::spawn(node.clone().heartbeats());
    let mut server = tokio::spawn(server);
    let (stored, max, blobs) = node.cache.usage();
    tracing::info!(url, data_dir = %config.data_dir.display(), upstreams = ?config.cache_for, stored_bytes = stored, max_bytes = max, blobs, version, "wharf content cache is serving");
    println!("wharf {version} content cache listening on {url}");
    let timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let mut deadline_rx = stop_rx;
    tokio::select! {
        result = &mut server => {
            result.context("server task failed")?.context("server failed")?;
            tracing::info!("stopped cleanly");
        }
        _ = async {
            let _ = deadline_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(timeout).await;
        } => {
            tracing::warn!(timeout_secs = timeout.as_secs(), "in-flight downloads did not finish in time; stopping anyway");
        }
    }
    heartbeats.abort();
    Ok(())
}
