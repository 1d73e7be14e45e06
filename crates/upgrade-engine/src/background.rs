//! Background migrations: the jobs that fill in, for data older releases wrote, what a
//! schema level's release needs (`wharf_metastore::schema::BACKGROUND`).
//!
//! After a hop is finalised they are queued. Before the next hop may start they must
//! have finished (the guide's rule): with the registry stopped (local driver) this
//! process runs them itself; with replicas serving (docker, external) the replicas of
//! the hop's release run them and the engine waits, reporting progress, retries and an
//! estimate of the time left, bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use wharf_metastore::jobs::Job;
use wharf_metastore::MetaStore;

use crate::{Engine, Event};

/// The background migrations of schema levels up to `level`: what data at that level
/// may still need (one that has nothing left to do is not run).
pub fn actions_up_to(level: u32) -> Vec<&'static str> {
    wharf_metastore::schema::BACKGROUND
        .iter()
        .filter(|(l, _)| *l <= level)
        .map(|(_, name)| *name)
        .collect()
}

/// How many rows the background migration `action` has left to do; zero means it is
/// not needed (or has finished).
pub async fn pending(meta: &dyn MetaStore, action: &str) -> anyhow::Result<u64> {
    match wharf_metastore::schema::background_pending(meta, action).await? {
        Some((rows, _)) => Ok(rows),
        None => bail!("no background migration {action:?} in this build"),
    }
}

/// What the rows of background migration `action` are.
fn what(action: &str) -> &'static str {
    match action {
        "metadatastoremigration" | "manifestsummaries" => "manifests",
        _ => "rows",
    }
}

/// The background migrations up to `level` with rows left, and how many.
pub async fn unfinished(
    meta: &dyn MetaStore,
    level: u32,
) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut left = Vec::new();
    for action in actions_up_to(level) {
        let rows = pending(meta, action).await?;
        if rows > 0 {
            left.push((action, rows));
        }
    }
    Ok(left)
}

/// The job `action` waiting or running already, else a new one.
pub(crate) async fn queue_once(meta: &dyn MetaStore, action: &str) -> anyhow::Result<Job> {
    let active = meta
        .jobs(Some(action), None, None, 20)
        .await?
        .into_iter()
        .find(|j| !j.status.is_final());
    Ok(match active {
        Some(j) => j,
        None => wharf_jobs::enqueue(meta, action, "{}").await?,
    })
}

/// Who runs a background migration's job, and so what the engine says of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// The replicas of the hop's release; the engine waits.
    Replicas,
    /// A worker of this process; `report` says whether progress events are sent (a
    /// rehearsal measures, it does not report).
    Here { report: bool },
}

/// `d` as a person reads it: "12 h", "90 min", "45 s".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

impl Engine {
    /// Queues the background migrations of `level` that the data needs, as jobs for
    /// the replicas, and refreshes the vulnerability database; returns the jobs queued
    /// and what to tell the user.
    pub(crate) async fn queue_background(&self, level: u32) -> anyhow::Result<(Vec<Job>, String)> {
        // Opened afresh: the schema has just moved under the store the steps use.
        let meta = crate::store::open_for_upgrade(&self.config).await?;
        let mut jobs = Vec::new();
        let mut said = Vec::new();
        for (l, action) in wharf_metastore::schema::BACKGROUND {
            if *l > level {
                continue;
            }
            let rows = pending(meta.as_ref(), action).await?;
            if rows == 0 {
                // This level's own migration, finished already (by the replicas while
                // an interrupted run waited, say): said as done, not as not needed.
                let last = meta.jobs(Some(action), None, None, 1).await?.pop();
                if let Some(j) = last.filter(|j| *l == level && j.status.as_str() == "done") {
                    said.push(format!(
                        "{action} done (job {}, {} attempt(s))",
                        j.id, j.attempts
                    ));
                }
                continue;
            }
            let job = queue_once(meta.as_ref(), action).await?;
            said.push(format!(
                "{action} queued as job {} for {rows} {} ({}follow it with `wharf jobs logs {} --follow`)",
                job.id,
                what(action),
                if *action == "metadatastoremigration" {
                    "garbage collection waits for it; "
                } else {
                    ""
                },
                job.id
            ));
            jobs.push(job);
        }
        if said.is_empty() {
            said.push("no background migration needed".into());
        }
        if let Some(refresh) = self.refresh_vulndb(meta.as_ref()).await? {
            said.push(refresh);
        }
        Ok((jobs, said.join("; ")))
    }

    /// After an upgrade the vulnerability database is refreshed (the guide's "download
    /// the vulnerability database again"; the new release may match differently): with
    /// `vulndb_url` set, a `vulndb_update` job; otherwise, with a database imported, a
    /// `vulndb_rematch` job; neither without a database. Nothing below schema level 3
    /// (no scanning data).
    async fn refresh_vulndb(&self, meta: &dyn MetaStore) -> anyhow::Result<Option<String>> {
        if meta.schema_level().await? < 3 {
            return Ok(None);
        }
        let action = if self.config.vulndb_url.is_some() {
            "vulndb_update"
        } else if meta.current_vulndb().await?.is_some() {
            "vulndb_rematch"
        } else {
            // Nothing imported, nothing to refresh (the cluster status says so).
            return Ok(None);
        };
        let job = queue_once(meta, action).await?;
        Ok(Some(format!(
            "{action} queued as job {} to refresh the vulnerability database",
            job.id
        )))
    }

    /// Waits until the replicas have run every job in `jobs` to its end (they were
    /// queued by this hop, or found running by a resumed run), reporting progress
    /// every 2 s; fails when one ends failed, or after `timeout`.
    pub(crate) async fn wait_for_background(
        &self,
        meta: &dyn MetaStore,
        jobs: &[Job],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut said = Vec::new();
        for job in jobs {
            let j = self.watch(meta, job, timeout, Runner::Replicas).await?;
            said.push(format!(
                "{} done (job {}, {} attempt(s))",
                j.action, j.id, j.attempts
            ));
        }
        Ok(said.join("; "))
    }

    /// Runs the background migrations of `level` here, each to its end: with the
    /// registry stopped nothing else would run them. Reports progress as
    /// `waiting_for_migration` events.
    pub(crate) async fn run_background_here(
        &self,
        meta: Arc<dyn MetaStore>,
        level: u32,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut said = Vec::new();
        for (action, _) in unfinished(meta.as_ref(), level).await? {
            let j = self
                .run_job_here(&self.config, meta.clone(), action, timeout, true)
                .await?;
            said.push(format!("{action} done (job {})", j.id));
        }
        if said.is_empty() {
            said.push("no background migration needed".into());
        }
        Ok(said.join("; "))
    }

    /// Runs the job `action` with a worker of this process until it ends; `report`
    /// says whether its progress is reported (a rehearsal measures, it does not report).
    pub(crate) async fn run_job_here(
        &self,
        config: &wharf_server::Config,
        meta: Arc<dyn MetaStore>,
        action: &str,
        timeout: Duration,
        report: bool,
    ) -> anyhow::Result<Job> {
        let blobs = wharf_server::run::open_blobstore(config)?;
        let stores = wharf_server::run::job_stores(config, meta.clone(), blobs);
        let job = queue_once(meta.as_ref(), action).await?;
        let worker = wharf_jobs::Worker::new(
            "wharf-upgrade",
            &self.own.to_string(),
            meta.clone(),
            wharf_jobs::actions::all(&stores)
                .into_iter()
                .filter(|a| a.name() == action)
                .collect(),
            wharf_jobs::WorkerConfig::with_heartbeat(
                Duration::from_secs(1),
                Duration::from_secs(2),
            ),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(worker.run(stopped));
        let outcome = self
            .watch(meta.as_ref(), &job, timeout, Runner::Here { report })
            .await;
        let _ = stop.send(true);
        let _ = running.await;
        outcome
    }

    /// Looks at `job` every half second until it ends (bounded by `timeout`),
    /// reporting it every 2 s unless `runner` says not to.
    async fn watch(
        &self,
        meta: &dyn MetaStore,
        job: &Job,
        timeout: Duration,
        runner: Runner,
    ) -> anyhow::Result<Job> {
        let started = Instant::now();
        let mut last_report = None::<Instant>;
        let (by, goes_on) = match runner {
            Runner::Replicas => ("the replicas", "it goes on on the replicas"),
            Runner::Here { .. } => (
                "this process",
                "it stops with this command and goes on when a replica of the new release runs it",
            ),
        };
        let j = loop {
            let j = meta
                .job(job.id)
                .await?
                .with_context(|| format!("job {} disappeared", job.id))?;
            if j.status.is_final() {
                break j;
            }
            if started.elapsed() > timeout {
                bail!(
                    "{} (job {}) did not finish within {} ({}, attempt {}); {goes_on}: follow it with `wharf jobs logs {} --follow`, then rerun `wharf upgrade apply`, which resumes here",
                    j.action,
                    j.id,
                    human(timeout),
                    j.status.as_str(),
                    j.attempts,
                    j.id
                );
            }
            if runner != (Runner::Here { report: false })
                && last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
            {
                last_report = Some(Instant::now());
                self.emit(Event::WaitingForMigration {
                    action: j.action.clone(),
                    job: j.id,
                    status: j.status.as_str().to_string(),
                    attempts: j.attempts,
                    progress: j.progress_json(),
                    error: j.last_error.clone(),
                    by: Some(by.into()),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if j.status.as_str() != "done" {
            bail!(
                "{} (job {}) ended {} after {} attempt(s): {}; see `wharf jobs logs {}`; rerun `wharf upgrade apply` to try again",
                j.action,
                j.id,
                j.status.as_str(),
                j.attempts,
                j.last_error.as_deref().unwrap_or("no error recorded"),
                j.id
            );
        }
        Ok(j)
    }
}
