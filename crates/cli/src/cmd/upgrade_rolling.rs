//! `wharf upgrade apply --driver docker|external` and `wharf upgrade rollback`: a
//! rolling upgrade of a running cluster (docs/upgrading.md, "Rolling upgrades").
//!
//! The steps, each recorded in the journal when done, so that a rerun continues after
//! any interruption:
//!
//! 1. `checks`: the upgrade is allowed; the driver finds the replicas.
//! 2. `backup`: a metadata backup (unless skipped with a recorded reason).
//! 3. `expand`: this release's schema changes, which the old release ignores; old
//!    replicas keep serving (and can restart) on the expanded data.
//! 4. `replicas`: every replica's configuration, saved in the journal before any is
//!    touched (a resumed run, and a rollback, recreate replicas from it).
//! 5. `replace`: one replica at a time, through the driver: drain, replace, wait until
//!    it answers ready with the new version (`replace:NAME` in the journal for each);
//!    then the content caches, in step with the cluster (docs/caches.md): the docker
//!    driver replaces the containers labelled `--cache-label` the same way
//!    (`replace-cache:NAME`; their configuration saved as `caches` with the replicas'),
//!    the external driver waits until every registered cache reports the new version.
//! 6. `verify`: with `--url`, the API, cluster status and a canary push/pull through the
//!    load balancer, and every live replica on the new version.
//! 7. `finalise`: the expanded schema becomes the data's and this version the cluster's;
//!    from here on the old release refuses the data, and rollback is refused.
//! 8. `background`: background migrations queued as jobs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_rollout::{Driver, Event, Replica, Target};
use wharf_server::config::MetadataLocation;
use wharf_upgrade::events::Event as UpgradeEvent;

use super::upgrade_apply::{background, backup, open_for_upgrade, take_lock, Report};
use super::StoreArgs;

pub use wharf_upgrade::status::ROLLING_STEPS as STEPS;

/// How the replicas are replaced, and how the result is verified.
#[derive(clap::Args, Clone, Debug)]
pub struct RollingArgs {
    /// How replicas are replaced: `local` (one stopped node: no replica to replace),
    /// `docker` (recreates the replica containers on this Docker Engine from --image),
    /// `external` (an orchestrator replaces them; wharf waits for each to report the
    /// new version)
    #[arg(long, default_value = "local", value_parser = ["local", "docker", "external"])]
    pub driver: String,
    /// docker: the image of the new release, e.g. registry.example.com/wharf:1.1.0
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// docker: the label that marks this cluster's replica containers (KEY or
    /// KEY=VALUE); each also needs wharf.url=URL, where it answers
    #[arg(long, default_value = "wharf.replica", value_name = "LABEL")]
    pub label: String,
    /// docker: the label that marks this cluster's content-cache containers (each also
    /// needs wharf.url=URL); they are replaced after the replicas, before finalising
    #[arg(long, default_value = "wharf.cache", value_name = "LABEL")]
    pub cache_label: String,
    /// docker: the replica (container name) on whose node this command runs, replaced
    /// last
    #[arg(long, value_name = "NAME")]
    pub existing_replica_id: Option<String>,
    /// How long a new replica may take to answer ready with the new version
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub replica_timeout_secs: u64,
    /// How long a draining replica may take to finish its requests before it is killed
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_secs: u64,
    /// After a replica is ready on the new version, wait this long before draining the
    /// next: a load balancer that marked the replica down while it was replaced must
    /// have put it back (longer than nginx's fail_timeout, or a balancer's health-check
    /// interval times its healthy threshold)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub settle_secs: u64,
    /// The registry as clients reach it (the load balancer), for the verify step
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// For the verify step: sign in as this user, password (or access token) in the
    /// WHARF_PASSWORD environment variable
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
}

async fn driver(args: &RollingArgs, meta: Arc<dyn MetaStore>) -> anyhow::Result<Box<dyn Driver>> {
    Ok(match args.driver.as_str() {
        "docker" => Box::new(
            wharf_rollout::docker::DockerDriver::connect(
                &args.label,
                args.existing_replica_id.clone(),
            )
            .await?,
        ),
        "external" => Box::new(wharf_rollout::external::ExternalDriver::new(meta)),
        other => bail!("no rolling driver {other:?}"),
    })
}

/// docker: the content-cache containers' driver (none found is fine).
async fn cache_driver(
    args: &RollingArgs,
) -> anyhow::Result<Option<wharf_rollout::docker::DockerDriver>> {
    if args.driver != "docker" {
        return Ok(None);
    }
    Ok(Some(
        wharf_rollout::docker::DockerDriver::connect(&args.cache_label, None)
            .await?
            .optional(),
    ))
}

/// external: waits until every content cache that has reported serves `to` (an
/// orchestrator replaces them); fails after `timeout` naming those that do not.
async fn wait_for_caches(
    meta: &dyn MetaStore,
    to: &Version,
    timeout: Duration,
    say: &(dyn Fn(Event) + Send + Sync),
) -> anyhow::Result<usize> {
    let deadline = std::time::Instant::now() + timeout;
    let mut announced = false;
    loop {
        let views = wharf_server::content_cache::cache_views(meta)
            .await
            .unwrap_or_default();
        let behind: Vec<String> = views
            .iter()
            .filter(|v| v.state != "unseen")
            .filter(|v| v.state != "serving" || v.version.as_deref() != Some(&to.to_string()))
            .map(|v| {
                format!(
                    "{} ({}, {})",
                    v.name,
                    v.version.as_deref().unwrap_or("version unknown"),
                    v.state
                )
            })
            .collect();
        if behind.is_empty() {
            return Ok(views.len());
        }
        if !announced {
            say(Event {
                replica: "content caches".into(),
                phase: "waiting",
                detail: format!("for {} to report {to}", behind.join(", ")),
            });
            announced = true;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "content caches not on {to} after {} s: {}; replace them with the new release (or `wharf cache remove` one that is gone), then run the upgrade again",
                timeout.as_secs(),
                behind.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn target(args: &RollingArgs, image: &str, version: &Version) -> Target {
    Target {
        image: image.to_string(),
        version: version.to_string(),
        timeout: Duration::from_secs(args.replica_timeout_secs),
        drain: Duration::from_secs(args.drain_secs),
    }
}

fn replica_event(report: Report) -> impl Fn(Event) + Send + Sync {
    move |e: Event| {
        report.emit(UpgradeEvent::Replica {
            replica: e.replica,
            phase: e.phase.to_string(),
            detail: e.detail,
        })
    }
}

/// Gives the load balancer time to route to a replacement again before the next
/// replica is drained: otherwise, for a moment, it may count every replica down.
async fn settle(args: &RollingArgs, r: &Replica, say: &(dyn Fn(Event) + Send + Sync)) {
    if args.settle_secs == 0 {
        return;
    }
    say(Event {
        replica: r.name.clone(),
        phase: "settling",
        detail: format!(
            "{} s for the load balancer to route to it again",
            args.settle_secs
        ),
    });
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
}

/// The releases' schema level, from the catalog (or this build's own).
fn level_of(v: &Version) -> anyhow::Result<u32> {
    if v.to_string() == crate::VERSION {
        return Ok(wharf_server::SCHEMA_LEVEL);
    }
    wharf_upgrade::Catalog::embedded()
        .release(v)
        .map(|r| r.schema_level)
        .with_context(|| format!("release {v} is not in this build's catalog"))
}

async fn expand(location: &MetadataLocation) -> anyhow::Result<Vec<u32>> {
    Ok(match location {
        MetadataLocation::Sqlite(p) => {
            SqliteMetaStore::expand(p, wharf_server::SCHEMA_LEVEL).await?
        }
        MetadataLocation::Postgres(u) => {
            PgMetaStore::expand(&u.0, wharf_server::SCHEMA_LEVEL).await?
        }
    })
}

async fn finalise(location: &MetadataLocation, to: &Version) -> anyhow::Result<Vec<u32>> {
    let v = to.to_string();
    Ok(match location {
        MetadataLocation::Sqlite(p) => {
            SqliteMetaStore::finalise(p, wharf_server::SCHEMA_LEVEL, &v).await?
        }
        MetadataLocation::Postgres(u) => {
            PgMetaStore::finalise(&u.0, wharf_server::SCHEMA_LEVEL, &v).await?
        }
    })
}

/// Live replicas (by heartbeat) that do not report `version`.
async fn replicas_not_on(meta: &dyn MetaStore, version: &Version) -> anyhow::Result<Vec<String>> {
    let (rows, now) = meta.replicas().await?;
    Ok(rows
        .iter()
        .filter(|r| now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000))
        .filter(|r| r.report.version != version.to_string())
        .map(|r| {
            format!(
                "{} at {} runs {}",
                r.report.id, r.report.address, r.report.version
            )
        })
        .collect())
}

/// The rolling upgrade of the cluster whose store `store` names, to this binary's
/// version. `from` is the data's version (the cluster's, until finalised).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    store: &StoreArgs,
    args: &RollingArgs,
    from: &Version,
    own: &Version,
    plan_warnings: &[String],
    yes: bool,
    backup_dir: Option<std::path::PathBuf>,
    skip_backup: Option<String>,
    report: Report,
) -> anyhow::Result<std::process::ExitCode> {
    let config = store.to_config()?;
    let location = config.metadata_location().map_err(anyhow::Error::msg)?;
    let image = match (args.driver.as_str(), &args.image) {
        ("docker", Some(i)) => i.clone(),
        ("docker", None) => bail!("--driver docker needs --image: the new release's image"),
        _ => own.to_string(),
    };
    let meta = open_for_upgrade(&config).await?;
    let journal = meta.journal(&own.to_string()).await?;
    let done: Vec<JournalEntry> = journal
        .into_iter()
        .filter(|e| e.from_version == from.to_string())
        .collect();
    let resuming = !done.is_empty();
    report.emit(UpgradeEvent::Start {
        from: from.to_string(),
        to: own.to_string(),
        resuming,
        driver: Some(args.driver.clone()),
        steps: STEPS.iter().map(|s| s.to_string()).collect(),
        warnings: plan_warnings.to_vec(),
        rollback: false,
    });
    if !yes {
        bail!("a rolling upgrade needs --yes (it replaces serving replicas)");
    }
    let holder = take_lock(meta.as_ref(), report).await?;
    let result = steps(
        &config,
        &location,
        meta.clone(),
        args,
        &image,
        from,
        own,
        &done,
        &holder,
        backup_dir,
        skip_backup,
        report,
    )
    .await;
    meta.release_upgrade_lock(&holder).await?;
    result?;
    report.emit(UpgradeEvent::Finished {
        version: own.to_string(),
        changed: Some(true),
        rolled_back: false,
    });
    Ok(std::process::ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    config: &wharf_server::Config,
    location: &MetadataLocation,
    meta: Arc<dyn MetaStore>,
    args: &RollingArgs,
    image: &str,
    from: &Version,
    to: &Version,
    done: &[JournalEntry],
    holder: &str,
    backup_dir: Option<std::path::PathBuf>,
    skip_backup: Option<String>,
    report: Report,
) -> anyhow::Result<()> {
    let total = STEPS.len();
    let record = |step: String, status: &'static str, detail: String| {
        let meta = meta.clone();
        let entry = JournalEntry {
            from_version: from.to_string(),
            to_version: to.to_string(),
            step,
            status: status.into(),
            at_ms: 0,
            detail,
        };
        async move { meta.record_step(&entry).await }
    };
    let driver = driver(args, meta.clone()).await?;
    let caches = cache_driver(args).await?;
    // The new release's image must be there before anything changes.
    driver.check_target(&target(args, image, to)).await?;
    // After finalisation the entry holds only names (see the finalise step).
    let mut saved: Option<Vec<Replica>> = done
        .iter()
        .find(|e| e.step == "replicas")
        .and_then(|e| serde_json::from_str(&e.detail).ok());
    let mut saved_caches: Vec<Replica> = done
        .iter()
        .find(|e| e.step == "caches")
        .and_then(|e| serde_json::from_str(&e.detail).ok())
        .unwrap_or_default();
    for (i, step) in STEPS.iter().enumerate() {
        let n = i + 1;
        if done.iter().any(|e| e.step == *step) {
            report.emit(UpgradeEvent::Step {
                n: Some(n),
                of: Some(total),
                step: step.to_string(),
                status: "done_before".into(),
                detail: None,
            });
            continue;
        }
        if let Err(other) = meta.take_upgrade_lock(holder, 5 * 60_000).await? {
            bail!("the upgrade lock was taken over by {other}");
        }
        let (status, detail): (&'static str, String) = match *step {
            "checks" => {
                let found = driver.discover().await?;
                let others = replicas_not_on(meta.as_ref(), from).await?;
                let strangers: Vec<&String> = others
                    .iter()
                    .filter(|r| !r.ends_with(&format!("runs {to}")))
                    .collect();
                if !strangers.is_empty() {
                    bail!(
                        "check `replicas`: replicas run neither {from} nor {to}: {}",
                        strangers
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                }
                (
                    "done",
                    format!(
                        "{} replica(s) found by the {} driver: {}",
                        found.len(),
                        driver.name(),
                        found
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }
            "backup" => match &skip_backup {
                Some(reason) => ("skipped", format!("skipped by {holder}: {reason}")),
                None => (
                    "done",
                    backup(config, meta.clone(), from, to, backup_dir.clone(), report).await?,
                ),
            },
            "expand" => (
                "done",
                format!(
                    "schema levels applied: {:?} (the {from} replicas keep serving)",
                    expand(location).await?
                ),
            ),
            "replicas" => {
                if let Some(caches) = &caches {
                    saved_caches = caches.discover().await?;
                    // Recorded before the step itself: a run that resumes after
                    // `replicas` finds both.
                    record(
                        "caches".into(),
                        "done",
                        serde_json::to_string(&saved_caches)?,
                    )
                    .await?;
                }
                let found = driver.discover().await?;
                let text = serde_json::to_string(&found)?;
                let names: Vec<String> = found
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.image))
                    .collect();
                saved = Some(found);
                // The configuration itself is the journal entry's detail.
                record("replicas".into(), "done", text).await?;
                report.emit(UpgradeEvent::Step {
                    n: Some(n),
                    of: Some(total),
                    step: step.to_string(),
                    status: "done".into(),
                    detail: Some(format!("saved {}", names.join(", "))),
                });
                continue;
            }
            "replace" => {
                let replicas = saved.clone().context("no replicas saved")?;
                let t = target(args, image, to);
                let say = replica_event(report);
                for r in &replicas {
                    let key = format!("replace:{}", r.name);
                    if done.iter().any(|e| e.step == key) {
                        say(Event {
                            replica: r.name.clone(),
                            phase: "done_before",
                            detail: format!("replaced before with {}", t.image),
                        });
                        continue;
                    }
                    if let Err(other) = meta.take_upgrade_lock(holder, 5 * 60_000).await? {
                        bail!("the upgrade lock was taken over by {other}");
                    }
                    driver.converge(r, &t, &say).await?;
                    settle(args, r, &say).await;
                    // Killed while settling? Then it is waited for before the next one.
                    driver.confirm(r, &t, &say).await?;
                    record(key, "done", format!("{} runs {} ({})", r.name, to, t.image)).await?;
                }
                // The content caches, after the replicas and before finalising.
                let cache_count = match &caches {
                    Some(cache_driver) => {
                        for c in &saved_caches {
                            let key = format!("replace-cache:{}", c.name);
                            if done.iter().any(|e| e.step == key) {
                                continue;
                            }
                            if let Err(other) = meta.take_upgrade_lock(holder, 5 * 60_000).await? {
                                bail!("the upgrade lock was taken over by {other}");
                            }
                            cache_driver.converge(c, &t, &say).await?;
                            cache_driver.confirm(c, &t, &say).await?;
                            record(
                                key,
                                "done",
                                format!("content cache {} runs {} ({})", c.name, to, t.image),
                            )
                            .await?;
                        }
                        saved_caches.len()
                    }
                    None => wait_for_caches(meta.as_ref(), to, t.timeout, &say).await?,
                };
                (
                    "done",
                    format!(
                        "{} replica(s) and {cache_count} content cache(s) on {to}",
                        replicas.len()
                    ),
                )
            }
            "verify" => {
                let others = replicas_not_on(meta.as_ref(), to).await?;
                if !others.is_empty() {
                    bail!(
                        "check `versions`: live replicas not on {to}: {}",
                        others.join("; ")
                    );
                }
                match &args.url {
                    None => (
                        "skipped",
                        "no --url: the registry was not verified through its load balancer".into(),
                    ),
                    Some(url) => {
                        let checks = super::upgrade_verify::verify_through(
                            url,
                            args.username.as_deref(),
                            to,
                        )
                        .await?;
                        let failed: Vec<String> = checks
                            .iter()
                            .filter(|c| c.status == "fail")
                            .map(|c| format!("{}: {}", c.name, c.measured))
                            .collect();
                        if !failed.is_empty() {
                            bail!("verification through {url} failed: {}", failed.join("; "));
                        }
                        (
                            "done",
                            checks
                                .iter()
                                .map(|c| format!("{} {}", c.name, c.status))
                                .collect::<Vec<_>>()
                                .join(", "),
                        )
                    }
                }
            }
            "finalise" => {
                let others = replicas_not_on(meta.as_ref(), to).await?;
                if !others.is_empty() {
                    bail!(
                        "cannot finalise: live replicas not on {to}: {}",
                        others.join("; ")
                    );
                }
                let levels = finalise(location, to).await?;
                // Rollback is over: the saved configurations (secrets in their
                // environment) leave the store; their names and images stay.
                for e in done.iter().filter(|e| e.step == "caches") {
                    meta.record_step(&wharf_upgrade::status::redact(e.clone()))
                        .await?;
                }
                if !done.iter().any(|e| e.step == "caches") && !saved_caches.is_empty() {
                    record(
                        "caches".into(),
                        "done",
                        format!(
                            "saved the configuration of {}",
                            saved_caches
                                .iter()
                                .map(|r| format!("{} ({})", r.name, r.image))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .await?;
                }
                if let Some(e) = done.iter().find(|e| e.step == "replicas") {
                    meta.record_step(&wharf_upgrade::status::redact(e.clone()))
                        .await?;
                } else if let Some(saved) = &saved {
                    let names: Vec<String> = saved
                        .iter()
                        .map(|r| format!("{} ({})", r.name, r.image))
                        .collect();
                    record(
                        "replicas".into(),
                        "done",
                        format!("saved the configuration of {}", names.join(", ")),
                    )
                    .await?;
                }
                (
                    "done",
                    format!("the cluster is at {to} (schema levels finalised: {levels:?}); rollback is no longer possible"),
                )
            }
            _ => ("done", background(config, location).await?),
        };
        record(step.to_string(), status, detail.clone()).await?;
        report.emit(UpgradeEvent::Step {
            n: Some(n),
            of: Some(total),
            step: step.to_string(),
            status: status.to_string(),
            detail: Some(detail.clone()),
        });
    }
    Ok(())
}

/// `wharf upgrade rollback`: before finalisation, puts every replica back on the
/// release it ran (from the journal's saved configuration) and undoes the expand
/// steps; refused once the upgrade is finalised.
pub fn rollback(
    store: &StoreArgs,
    args: &RollingArgs,
    yes: bool,
    report: Report,
) -> anyhow::Result<std::process::ExitCode> {
    let config = store.to_config()?;
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let location = config.metadata_location().map_err(anyhow::Error::msg)?;
        let meta = open_for_upgrade(&config).await?;
        let journal = meta.journal(&own.to_string()).await?;
        let Some(from) = journal
            .iter()
            .map(|e| e.from_version.clone())
            .find(|f| !journal.iter().any(|e| &e.from_version == f && e.step == "finalise"))
        else {
            if let Some(fin) = journal.iter().find(|e| e.step == "finalise") {
                bail!(
                    "the upgrade {} → {own} was finalised: rollback is refused (the data now belongs to {own} \
                     and older releases refuse it); only restoring a backup goes back (`wharf restore`, {})",
                    fin.from_version,
                    "see docs/backup.md"
                );
            }
            bail!("no upgrade to {own} is in progress: nothing to roll back");
        };
        let from_v = Version::parse(&from)?;
        report.emit(UpgradeEvent::Start {
            from: own.to_string(),
            to: from.to_string(),
            resuming: false,
            driver: Some(args.driver.clone()),
            steps: Vec::new(),
            warnings: Vec::new(),
            rollback: true,
        });
        if !yes {
            bail!("a rollback needs --yes (it replaces serving replicas)");
        }
        let holder = take_lock(meta.as_ref(), report).await?;
        let result = async {
            let saved: Option<Vec<Replica>> = journal
                .iter()
                .find(|e| e.from_version == from && e.step == "replicas")
                .map(|e| serde_json::from_str(&e.detail))
                .transpose()?;
            let level = level_of(&from_v)?;
            let undone = match &location {
                MetadataLocation::Sqlite(p) => SqliteMetaStore::undo_expand(p, level).await?,
                MetadataLocation::Postgres(u) => PgMetaStore::undo_expand(&u.0, level).await?,
            };
            report.emit(UpgradeEvent::Step {
                n: None,
                of: None,
                step: "expand".into(),
                status: "undone".into(),
                detail: Some(format!("schema levels undone: {undone:?}")),
            });
            let saved_caches: Vec<Replica> = journal
                .iter()
                .find(|e| e.from_version == from && e.step == "caches")
                .and_then(|e| serde_json::from_str(&e.detail).ok())
                .unwrap_or_default();
            if let (Some(cache_driver), false) = (cache_driver(args).await?, saved_caches.is_empty()) {
                let say = replica_event(report);
                for c in saved_caches.iter().rev() {
                    let t = target(args, &c.image, &from_v);
                    cache_driver.converge(c, &t, &say).await?;
                }
                report.emit(UpgradeEvent::Step {
                    n: None,
                    of: None,
                    step: "caches".into(),
                    status: "done".into(),
                    detail: Some(format!("{} content cache(s) back on {from}", saved_caches.len())),
                });
            }
            if let (Some(replicas), false) = (&saved, args.driver == "local") {
                let driver = driver(args, meta.clone()).await?;
                let say = replica_event(report);
                // Newest replaced first: the reverse of the upgrade's order.
                for r in replicas.iter().rev() {
                    let t = target(args, &r.image, &from_v);
                    driver.converge(r, &t, &say).await?;
                    settle(args, r, &say).await;
                    driver.confirm(r, &t, &say).await?;
                }
                report.emit(UpgradeEvent::Step {
                    n: None,
                    of: None,
                    step: "replicas".into(),
                    status: "done".into(),
                    detail: Some(format!("{} replica(s) back on {from}", replicas.len())),
                });
            }
            meta.forget_upgrade(&from, &own.to_string()).await?;
            anyhow::Ok(())
        }
        .await;
        meta.release_upgrade_lock(&holder).await?;
        result?;
        report.emit(UpgradeEvent::Finished {
            version: from.to_string(),
            changed: None,
            rolled_back: true,
        });
        Ok(std::process::ExitCode::SUCCESS)
    })
}
