//! Rolling upgrades of a running cluster (docs/upgrading.md, "Rolling upgrades"): the
//! docker driver recreates the replica containers from each hop's image, the external
//! driver waits while an orchestrator replaces them. Each hop's steps, journalled when
//! done, so that a rerun continues after any interruption:
//!
//! 1. `checks`: the driver finds the replicas, which run the hop's old or new release;
//!    an earlier hop's background migrations have finished (waited for if not).
//! 2. `backup`: a metadata backup (unless skipped with a recorded reason).
//! 3. `expand`: the hop's schema changes, which the old release ignores; old replicas
//!    keep serving (and can restart) on the expanded data.
//! 4. `replicas`: every replica's configuration, saved in the journal before any is
//!    touched (a resumed run, and a rollback, recreate replicas from it).
//! 5. `replace`: one replica at a time, through the driver: drain, replace, wait until
//!    it answers ready with the hop's version (`replace:NAME` in the journal for each);
//!    then the content caches, in step with the cluster (docs/caches.md): the docker
//!    driver replaces the containers labelled `cache_label` the same way
//!    (`replace-cache:NAME`; their configuration saved as `caches`), the external
//!    driver waits until every registered cache reports the hop's version.
//! 6. `verify`: with a URL, the API, cluster status and a canary push/pull through the
//!    load balancer, and every live replica on the hop's version.
//! 7. `finalise`: the expanded schema becomes the data's and the hop's version the
//!    cluster's; from here on the old release refuses the data, and rollback is refused.
//! 8. `background`: the background migrations queued as jobs, which the replicas run;
//!    before a next hop the engine waits for them to finish.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::MetaStore;
use wharf_rollout::{Driver, Event as ReplicaEvent, Replica, Target};
use wharf_server::config::MetadataLocation;

use crate::apply::Hop;
use crate::verify::Credentials;
use crate::{Engine, Event, HopRun};

pub use wharf_upgrade::status::ROLLING_STEPS as STEPS;

/// The schema level that brought content caches (release 1.2.0).
const CACHES_LEVEL: u32 = 3;

/// How replicas are replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// One stopped node: no replica to replace.
    Local,
    /// Recreates the replica containers on this Docker Engine from each hop's image.
    Docker,
    /// An orchestrator replaces them; wharf waits for each to report the version.
    External,
}

impl DriverKind {
    pub fn parse(name: &str) -> anyhow::Result<DriverKind> {
        Ok(match name {
            "local" => DriverKind::Local,
            "docker" => DriverKind::Docker,
            "external" => DriverKind::External,
            other => bail!("no driver {other:?} (local, docker or external)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Local => "local",
            DriverKind::Docker => "docker",
            DriverKind::External => "external",
        }
    }

    /// The steps of one hop with this driver, in order.
    pub fn steps(self) -> &'static [&'static str] {
        match self {
            DriverKind::Local => &crate::local::STEPS,
            _ => &STEPS,
        }
    }
}

/// docker: the image of each release an upgrade stops at.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// `--image IMAGE`: the image of this binary's release (the last stop).
    pub own: Option<String>,
    /// `--image VERSION=IMAGE`: the image of one release.
    pub by_version: Vec<(Version, String)>,
    /// `--image-template`: the image of any release, `{version}` replaced by it.
    pub template: Option<String>,
}

impl Images {
    /// Parses one `--image` value: `IMAGE`, or `VERSION=IMAGE`.
    pub fn add(&mut self, value: &str) -> anyhow::Result<()> {
        match value.split_once('=') {
            Some((v, image)) if !v.contains('/') && !v.contains(':') => {
                let version = Version::parse(v.trim()).with_context(|| {
                    format!("--image {value:?}: {v:?} is not a version (--image VERSION=IMAGE)")
                })?;
                if image.is_empty() {
                    bail!("--image {value:?}: no image after {v}=");
                }
                self.by_version.push((version, image.to_string()));
            }
            _ if value.is_empty() => bail!("--image needs an image"),
            _ => {
                if self.own.is_some() {
                    bail!("--image IMAGE is given twice; for the other stops of the plan use --image VERSION=IMAGE or --image-template");
                }
                self.own = Some(value.to_string());
            }
        }
        Ok(())
    }

    /// The image of release `version`, of which `own` is this binary's.
    pub fn image_for(&self, version: &Version, own: &Version) -> Option<String> {
        if let Some((_, image)) = self.by_version.iter().find(|(v, _)| v == version) {
            return Some(image.clone());
        }
        if version == own {
            if let Some(image) = &self.own {
                return Some(image.clone());
            }
        }
        self.template
            .as_ref()
            .map(|t| t.replace("{version}", &version.to_string()))
    }
}

/// How the replicas are replaced, and how the result is verified.
#[derive(Clone, Debug)]
pub struct RollingOptions {
    pub driver: DriverKind,
    pub images: Images,
    /// docker: the label of this cluster's replica containers (KEY or KEY=VALUE).
    pub label: String,
    /// docker: the label of its content-cache containers.
    pub cache_label: String,
    /// docker: the replica on whose node this command runs, replaced last.
    pub existing_replica_id: Option<String>,
    /// How long a new replica may take to answer ready with the new version.
    pub replica_timeout: Duration,
    /// How long a draining replica may take to finish its requests.
    pub drain: Duration,
    /// After a replica is ready, how long before the next is drained (the load
    /// balancer must route to it again).
    pub settle: Duration,
    /// The registry as clients reach it, for the verify step.
    pub url: Option<String>,
    /// Who signs in for the verify step.
    pub creds: Option<Credentials>,
}

/// The drivers of a rolling upgrade: the replicas', and (docker) the content caches'.
pub(crate) struct Drivers {
    replicas: Box<dyn Driver>,
    caches: Option<wharf_rollout::docker::DockerDriver>,
}

impl RollingOptions {
    fn target(&self, image: &str, version: &Version) -> Target {
        Target {
            image: image.to_string(),
            version: version.to_string(),
            timeout: self.replica_timeout,
            drain: self.drain,
        }
    }

    async fn drivers(&self, meta: Arc<dyn MetaStore>) -> anyhow::Result<Drivers> {
        Ok(match self.driver {
            DriverKind::Docker => Drivers {
                replicas: Box::new(
                    wharf_rollout::docker::DockerDriver::connect(
                        &self.label,
                        self.existing_replica_id.clone(),
                    )
                    .await?,
                ),
                // None found is fine.
                caches: Some(
                    wharf_rollout::docker::DockerDriver::connect(&self.cache_label, None)
                        .await?
                        .optional(),
                ),
            },
            DriverKind::External => Drivers {
                replicas: Box::new(wharf_rollout::external::ExternalDriver::new(meta)),
                caches: None,
            },
            DriverKind::Local => bail!("the local driver replaces no replica"),
        })
    }
}

impl Engine {
    fn replica_event(&self) -> impl Fn(ReplicaEvent) + Send + Sync + '_ {
        move |e: ReplicaEvent| {
            self.emit(Event::Replica {
                replica: e.replica,
                phase: e.phase.to_string(),
                detail: e.detail,
            })
        }
    }

    /// The image of `version` for the docker driver (the version itself for the
    /// external one, which brings its own).
    fn image_of(&self, options: &RollingOptions, version: &Version) -> anyhow::Result<String> {
        if options.driver != DriverKind::Docker {
            return Ok(version.to_string());
        }
        options.images.image_for(version, &self.own).with_context(|| {
            format!(
                "--driver docker needs the image of {version}: --image {}IMAGE, or --image-template REGISTRY/wharf:{{version}}",
                if *version == self.own { String::new() } else { format!("{version}=") }
            )
        })
    }

    /// Connects the drivers, and checks before anything changes that the image of
    /// every hop still to replace its replicas is there (a resumed run needs none for a
    /// hop whose replicas were replaced).
    pub(crate) async fn rolling_drivers(
        &self,
        options: &RollingOptions,
        meta: Arc<dyn MetaStore>,
        hops: &[Hop],
    ) -> anyhow::Result<Drivers> {
        let drivers = options.drivers(meta.clone()).await?;
        for hop in hops {
            let replaced = meta
                .journal(&hop.to.to_string())
                .await?
                .iter()
                .any(|e| e.from_version == hop.from.to_string() && e.step == "replace");
            if replaced {
                continue;
            }
            let image = self.image_of(options, &hop.to)?;
            drivers
                .replicas
                .check_target(&options.target(&image, &hop.to))
                .await?;
        }
        Ok(drivers)
    }

    /// Gives the load balancer time to route to a replacement again before the next
    /// replica is drained: otherwise, for a moment, it may count every replica down.
    async fn settle(&self, options: &RollingOptions, r: &Replica) {
        if options.settle.is_zero() {
            return;
        }
        self.replica_event()(ReplicaEvent {
            replica: r.name.clone(),
            phase: "settling",
            detail: format!(
                "{} s for the load balancer to route to it again",
                options.settle.as_secs()
            ),
        });
        tokio::time::sleep(options.settle).await;
    }

    pub(crate) async fn rolling_hop(
        &self,
        location: &MetadataLocation,
        meta: Arc<dyn MetaStore>,
        drivers: &Drivers,
        run: &HopRun<'_>,
    ) -> anyhow::Result<()> {
        let options = &run.options.rolling;
        let (from, to) = (&run.hop.from, &run.hop.to);
        let total = STEPS.len();
        // After finalisation the entry holds only names (see the finalise step).
        let mut saved: Option<Vec<Replica>> = run
            .done
            .iter()
            .find(|e| e.step == "replicas")
            .and_then(|e| serde_json::from_str(&e.detail).ok());
        let mut saved_caches: Vec<Replica> = run
            .done
            .iter()
            .find(|e| e.step == "caches")
            .and_then(|e| serde_json::from_str(&e.detail).ok())
            .unwrap_or_default();
        for (i, step) in STEPS.iter().enumerate() {
            let n = i + 1;
            if run.is_done(step) {
                self.step(n, total, step, "done_before", None);
                continue;
            }
            crate::lock::renew(meta.as_ref(), run.holder).await?;
            let (status, detail): (&str, String) = match *step {
                "checks" => (
                    "done",
                    self.rolling_checks(meta.as_ref(), drivers, run).await?,
                ),
                "backup" => match &run.options.skip_backup {
                    Some(reason) => ("skipped", format!("skipped by {}: {reason}", run.holder)),
                    None => ("done", self.backup(meta.clone(), run).await?),
                },
                "expand" => (
                    "done",
                    format!(
                        "schema levels applied: {:?} (the {from} replicas keep serving)",
                        crate::store::expand(location, run.hop.level).await?
                    ),
                ),
                "replicas" => {
                    let caches = match &drivers.caches {
                        Some(caches) => caches.discover().await?,
                        None => Vec::new(),
                    };
                    if !caches.is_empty() {
                        saved_caches = caches;
                        // Recorded before the step itself: a run that resumes after
                        // `replicas` finds both.
                        run.record(
                            meta.as_ref(),
                            "caches",
                            "done",
                            serde_json::to_string(&saved_caches)?,
                        )
                        .await?;
                    }
                    let found = drivers.replicas.discover().await?;
                    let text = serde_json::to_string(&found)?;
                    let names: Vec<String> = found
                        .iter()
                        .map(|r| format!("{} ({})", r.name, r.image))
                        .collect();
                    saved = Some(found);
                    // The configuration itself is the journal entry's detail.
                    run.record(meta.as_ref(), "replicas", "done", text).await?;
                    self.step(
                        n,
                        total,
                        step,
                        "done",
                        Some(format!("saved {}", names.join(", "))),
                    );
                    continue;
                }
                "replace" => {
                    let target = options.target(&self.image_of(options, to)?, to);
                    let replicas = saved.clone().context("no replicas saved")?;
                    let cache_count = self
                        .replace(
                            meta.as_ref(),
                            drivers,
                            run,
                            &target,
                            &replicas,
                            &saved_caches,
                        )
                        .await?;
                    (
                        "done",
                        format!(
                            "{} replica(s) and {cache_count} content cache(s) on {to}",
                            replicas.len()
                        ),
                    )
                }
                "verify" => self.verify_step(meta.as_ref(), options, to).await?,
                "finalise" => {
                    let others = replicas_not_on(meta.as_ref(), to).await?;
                    if !others.is_empty() {
                        bail!(
                            "cannot finalise: live replicas not on {to}: {}",
                            others.join("; ")
                        );
                    }
                    let levels =
                        crate::store::finalise(location, run.hop.level, &to.to_string()).await?;
                    self.forget_saved(meta.as_ref(), run, &saved, &saved_caches)
                        .await?;
                    (
                        "done",
                        format!("the cluster is at {to} (schema levels finalised: {levels:?}); rollback is no longer possible"),
                    )
                }
                "background" => {
                    let (jobs, queued) = self.queue_background(run.hop.level).await?;
                    if run.last || jobs.is_empty() {
                        ("done", queued)
                    } else {
                        // The next hop may not start before they have finished.
                        let done = self
                            .wait_for_background(
                                meta.as_ref(),
                                &jobs,
                                run.options.migration_timeout,
                            )
                            .await?;
                        ("done", done)
                    }
                }
                other => unreachable!("no rolling step {other:?}"),
            };
            run.record(meta.as_ref(), step, status, detail.clone())
                .await?;
            self.step(n, total, step, status, Some(detail));
        }
        Ok(())
    }

    async fn rolling_checks(
        &self,
        meta: &dyn MetaStore,
        drivers: &Drivers,
        run: &HopRun<'_>,
    ) -> anyhow::Result<String> {
        let (from, to) = (&run.hop.from, &run.hop.to);
        let found = drivers.replicas.discover().await?;
        let others = replicas_not_on(meta, from).await?;
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
        // An earlier upgrade's background migrations finish before this one starts
        // (the guide's rule): the replicas run them, this waits.
        let mut earlier = String::new();
        let before = crate::background::unfinished(meta, self.level_of(from)?).await?;
        if !before.is_empty() {
            let mut jobs = Vec::new();
            for (action, _) in &before {
                jobs.push(crate::background::queue_once(meta, action).await?);
            }
            let done = self
                .wait_for_background(meta, &jobs, run.options.migration_timeout)
                .await?;
            earlier = format!("; an earlier upgrade's background migrations: {done}");
        }
        Ok(format!(
            "{} replica(s) found by the {} driver: {}{earlier}",
            found.len(),
            drivers.replicas.name(),
            found
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The `replace` step: every replica, then the content caches; returns how many
    /// caches are on the hop's version.
    async fn replace(
        &self,
        meta: &dyn MetaStore,
        drivers: &Drivers,
        run: &HopRun<'_>,
        target: &Target,
        replicas: &[Replica],
        saved_caches: &[Replica],
    ) -> anyhow::Result<usize> {
        let options = &run.options.rolling;
        let say = self.replica_event();
        for r in replicas {
            let key = format!("replace:{}", r.name);
            if run.is_done(&key) {
                say(ReplicaEvent {
                    replica: r.name.clone(),
                    phase: "done_before",
                    detail: format!("replaced before with {}", target.image),
                });
                continue;
            }
            crate::lock::renew(meta, run.holder).await?;
            drivers.replicas.converge(r, target, &say).await?;
            self.settle(options, r).await;
            // Killed while settling? Then it is waited for before the next one.
            drivers.replicas.confirm(r, target, &say).await?;
            run.record(
                meta,
                &key,
                "done",
                format!("{} runs {} ({})", r.name, target.version, target.image),
            )
            .await?;
        }
        // The content caches, after the replicas and before finalising.
        match &drivers.caches {
            Some(cache_driver) => {
                for c in saved_caches {
                    let key = format!("replace-cache:{}", c.name);
                    if run.is_done(&key) {
                        continue;
                    }
                    crate::lock::renew(meta, run.holder).await?;
                    cache_driver.converge(c, target, &say).await?;
                    cache_driver.confirm(c, target, &say).await?;
                    run.record(
                        meta,
                        &key,
                        "done",
                        format!(
                            "content cache {} runs {} ({})",
                            c.name, target.version, target.image
                        ),
                    )
                    .await?;
                }
                Ok(saved_caches.len())
            }
            // Releases before the content caches' level have none to wait for.
            None if run.hop.level < CACHES_LEVEL => Ok(0),
            None => wait_for_caches(meta, &run.hop.to, target.timeout, &say).await,
        }
    }

    async fn verify_step(
        &self,
        meta: &dyn MetaStore,
        options: &RollingOptions,
        to: &Version,
    ) -> anyhow::Result<(&'static str, String)> {
        let others = replicas_not_on(meta, to).await?;
        if !others.is_empty() {
            bail!(
                "check `versions`: live replicas not on {to}: {}",
                others.join("; ")
            );
        }
        let Some(url) = &options.url else {
            return Ok((
                "skipped",
                "no --url: the registry was not verified through its load balancer".into(),
            ));
        };
        let checks = crate::verify::verify_through(url, options.creds.clone(), to).await?;
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| c.status == wharf_server::upgrade_checks::FAIL)
            .map(|c| format!("{}: {}", c.name, c.measured))
            .collect();
        if !failed.is_empty() {
            bail!("verification through {url} failed: {}", failed.join("; "));
        }
        Ok((
            "done",
            checks
                .iter()
                .map(|c| format!("{} {}", c.name, c.status))
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }

    /// At finalisation rollback is over: the saved configurations (secrets in their
    /// environment) leave the store; their names and images stay.
    async fn forget_saved(
        &self,
        meta: &dyn MetaStore,
        run: &HopRun<'_>,
        saved: &Option<Vec<Replica>>,
        saved_caches: &[Replica],
    ) -> anyhow::Result<()> {
        let names = |rs: &[Replica]| {
            rs.iter()
                .map(|r| format!("{} ({})", r.name, r.image))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (step, found) in [
            ("caches", saved_caches),
            ("replicas", saved.as_deref().unwrap_or_default()),
        ] {
            match run.done.iter().find(|e| e.step == step) {
                Some(e) => {
                    meta.record_step(&wharf_upgrade::status::redact(e.clone()))
                        .await?
                }
                None if !found.is_empty() => {
                    run.record(
                        meta,
                        step,
                        "done",
                        format!("saved the configuration of {}", names(found)),
                    )
                    .await?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// `wharf upgrade rollback`: before finalisation, puts every replica back on the
    /// release it ran (from the journal's saved configuration) and undoes the expand
    /// steps; refused once the upgrade is finalised. With a multi-hop upgrade, the hop
    /// under way is rolled back: the data stays at the last finalised stop.
    pub async fn rollback(&self, options: &RollingOptions) -> anyhow::Result<()> {
        let location = self
            .config
            .metadata_location()
            .map_err(anyhow::Error::msg)?;
        let meta = crate::store::open_for_upgrade(&self.config).await?;
        let data = crate::store::data_version(&self.config).await?;
        // The hop under way starts at the data's version: the journal of a later
        // release with steps from it and no finalisation.
        let catalog = wharf_upgrade::Catalog::embedded();
        let mut later: Vec<Version> = catalog
            .versions()
            .into_iter()
            .filter(|v| *v > data)
            .collect();
        if !later.contains(&self.own) && self.own > data {
            later.push(self.own.clone());
        }
        let mut under_way = None;
        for v in &later {
            let journal = meta.journal(&v.to_string()).await?;
            let from_data: Vec<_> = journal
                .into_iter()
                .filter(|e| e.from_version == data.to_string())
                .collect();
            if !from_data.is_empty() && !from_data.iter().any(|e| e.step == "finalise") {
                under_way = Some((v.clone(), from_data));
                break;
            }
        }
        let Some((to, journal)) = under_way else {
            let own = &self.own;
            let journal = meta.journal(&data.to_string()).await?;
            if let Some(fin) = journal.iter().find(|e| e.step == "finalise") {
                bail!(
                    "the upgrade {} → {data} was finalised: rollback is refused (the data now belongs to {data} \
                     and older releases refuse it); only restoring a backup goes back (`wharf restore`, {})",
                    fin.from_version,
                    "see docs/backup.md"
                );
            }
            bail!("no upgrade to {own} is in progress: nothing to roll back");
        };
        let from = data;
        self.emit(Event::Start {
            from: to.to_string(),
            to: from.to_string(),
            resuming: false,
            driver: Some(options.driver.name().into()),
            steps: Vec::new(),
            warnings: Vec::new(),
            rollback: true,
        });
        let (from, to, journal, location) = (&from, &to, &journal, &location);
        self.with_lock(meta.clone(), |_holder| async move {
            let saved: Option<Vec<Replica>> = journal
                .iter()
                .find(|e| e.step == "replicas")
                .map(|e| serde_json::from_str(&e.detail))
                .transpose()?;
            let undone = crate::store::undo_expand(location, self.level_of(from)?).await?;
            self.emit(Event::Step {
                n: None,
                of: None,
                step: "expand".into(),
                status: "undone".into(),
                detail: Some(format!("schema levels undone: {undone:?}")),
            });
            let saved_caches: Vec<Replica> = journal
                .iter()
                .find(|e| e.step == "caches")
                .and_then(|e| serde_json::from_str(&e.detail).ok())
                .unwrap_or_default();
            if options.driver != DriverKind::Local {
                let drivers = options.drivers(meta.clone()).await?;
                let say = self.replica_event();
                if let (Some(cache_driver), false) = (&drivers.caches, saved_caches.is_empty()) {
                    for c in saved_caches.iter().rev() {
                        cache_driver
                            .converge(c, &options.target(&c.image, from), &say)
                            .await?;
                    }
                    self.emit(Event::Step {
                        n: None,
                        of: None,
                        step: "caches".into(),
                        status: "done".into(),
                        detail: Some(format!(
                            "{} content cache(s) back on {from}",
                            saved_caches.len()
                        )),
                    });
                }
                if let Some(replicas) = &saved {
                    // Newest replaced first: the reverse of the upgrade's order.
                    for r in replicas.iter().rev() {
                        let t = options.target(&r.image, from);
                        drivers.replicas.converge(r, &t, &say).await?;
                        self.settle(options, r).await;
                        drivers.replicas.confirm(r, &t, &say).await?;
                    }
                    self.emit(Event::Step {
                        n: None,
                        of: None,
                        step: "replicas".into(),
                        status: "done".into(),
                        detail: Some(format!("{} replica(s) back on {from}", replicas.len())),
                    });
                }
            }
            meta.forget_upgrade(&from.to_string(), &to.to_string())
                .await?;
            anyhow::Ok(())
        })
        .await?;
        self.emit(Event::Finished {
            version: from.to_string(),
            changed: None,
            rolled_back: true,
        });
        Ok(())
    }
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

/// external: waits until every content cache that has reported serves `to` (an
/// orchestrator replaces them); fails after `timeout` naming those that do not.
async fn wait_for_caches(
    meta: &dyn MetaStore,
    to: &Version,
    timeout: Duration,
    say: &(dyn Fn(ReplicaEvent) + Send + Sync),
) -> anyhow::Result<usize> {
    let deadline = std::time::Instant::now() + timeout;
    let mut announced = false;
    loop {
        let views = wharf_server::content_cache::cache_views(meta).await?;
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
            say(ReplicaEvent {
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
