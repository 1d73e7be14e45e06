//! The job system at work (design: docs/jobs.md): every replica runs a [`Worker`] that
//! claims jobs from the queue in the metadata store, runs the action, proves it is alive
//! with heartbeats, and records the outcome. A worker that stops heartbeating is
//! declared dead by the others and its job re-queued. Failed attempts are retried with
//! back-off up to the job's attempt limit.
//!
//! Actions are small: they get a [`JobContext`] to log, report progress and learn when
//! to stop (cancellation, a time box, a lost lease, a replica shutting down), and work
//! in resumable steps so that stopping at any point loses nothing.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use wharf_metastore::jobs::{Job, Lease, NewJob, Outcome};
use wharf_metastore::MetaStore;

pub mod actions;
pub mod sbom;
pub mod scan_image;
pub mod schedule;
pub mod vulndb;
pub mod vulndb_fetch;
pub mod vulndb_update;

/// Attempts in all for a job queued without saying otherwise (the first and two retries).
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// Why an action should stop before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Someone cancelled the job.
    Cancelled,
    /// The job's time box is over; it resumes on its next run.
    Deadline,
    /// The replica is shutting down; another worker will take the job.
    Shutdown,
    /// Another worker has the job now; write nothing more.
    Lost,
}

/// What an action reports when it returns without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// All done; the summary goes to the log.
    Done(String),
    /// It stopped early for `Stop`; the summary says how far it got.
    Stopped(Stop, String),
}

/// Progress of a long action, shown by `wharf jobs show` and the API.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// Items per second since the attempt started.
    pub rate: f64,
    /// Seconds left at that rate.
    pub eta_secs: Option<u64>,
    pub phase: String,
}

pub struct JobContext {
    pub job: Job,
    store: Arc<dyn MetaStore>,
    started: Instant,
    stop: AtomicU8,
    progress: Mutex<Option<String>>,
    /// Outside the queue: the log goes to stdout, not to a job's log.
    detached: bool,
}

const STOP_NONE: u8 = 0;

fn stop_code(s: Stop) -> u8 {
    match s {
        Stop::Cancelled => 1,
        Stop::Deadline => 2,
        Stop::Shutdown => 3,
        Stop::Lost => 4,
    }
}

impl JobContext {
    fn new(job: Job, store: Arc<dyn MetaStore>) -> JobContext {
        JobContext {
            job,
            store,
            started: Instant::now(),
            stop: AtomicU8::new(STOP_NONE),
            progress: Mutex::new(None),
            detached: false,
        }
    }

    /// A context for running an action outside the queue (`wharf gc --dry-run`): its
    /// log lines are printed.
    pub fn detached(action: &str, params: &str, store: Arc<dyn MetaStore>) -> JobContext {
        let job = Job {
            id: 0,
            action: action.into(),
            params: params.into(),
            status: wharf_metastore::jobs::JobStatus::Running,
            attempts: 1,
            max_attempts: 1,
            worker_id: None,
            cron: None,
            deadline_ms: None,
            not_before_ms: 0,
            created_at_ms: 0,
            started_at_ms: None,
            heartbeat_at_ms: None,
            finished_at_ms: None,
            progress: None,
            last_error: None,
        };
        JobContext {
            detached: true,
            ..Self::new(job, store)
        }
    }

    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The job's parameters (a JSON object; `{}` gives every default).
    pub fn params<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.job.params).map_err(|e| {
            anyhow::anyhow!(
                "the job's parameters are not valid for {}: {e}",
                self.job.action
            )
        })
    }

    /// Appends to the job's log (and the replica's log). A lost log line is not worth
    /// failing the job for: it is reported and dropped.
    pub async fn log(&self, line: impl Into<String>) {
        let line = line.into();
        if self.detached {
            println!("{line}");
            return;
        }
        tracing::info!(job = self.job.id, action = %self.job.action, "{line}");
        if self.stop.load(Ordering::SeqCst) == stop_code(Stop::Lost) {
            return;
        }
        if let Err(e) = self
            .store
            .append_job_log(self.job.id, self.job.attempts, &[line])
            .await
        {
            tracing::warn!(job = self.job.id, error = %e, "could not write to the job's log");
        }
    }

    /// Records a final report (any JSON object) as the job's progress, where the API,
    /// `wharf jobs show` and `/metrics` find it.
    pub fn report(&self, report: &impl serde::Serialize) {
        *self.progress.lock().unwrap() = serde_json::to_string(report).ok();
    }

    /// Records progress; the next heartbeat stores it.
    pub fn progress(&self, done: u64, total: u64, phase: &str) -> Progress {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta_secs =
            (rate > 0.0 && total >= done).then(|| ((total - done) as f64 / rate).ceil() as u64);
        let p = Progress {
            done,
            total,
            rate: (rate * 10.0).round() / 10.0,
            eta_secs,
            phase: phase.into(),
        };
        *self.progress.lock().unwrap() = serde_json::to_string(&p).ok();
        p
    }

    /// After a batch of a batched action: records progress and, for the first batch,
    /// every twentieth, and the last one (`last`), logs it: "VERB DONE of TOTAL WHAT
    /// (RATE/s, ETA N s)".
    pub async fn batch_done(
        &self,
        batch: u64,
        last: bool,
        done: u64,
        total: u64,
        verb: &str,
        what: &str,
    ) {
        let p = self.progress(done, total.max(done), what);
        if batch % 20 == 1 || last {
            let eta = p
                .eta_secs
                .map(|s| format!(", ETA {s} s"))
                .unwrap_or_default();
            self.log(format!(
                "{verb} {done} of {} {what} ({:.0}/s{eta})",
                p.total, p.rate
            ))
            .await;
        }
    }

    /// Whether the action should stop now, and why. Checked between steps.
    pub fn should_stop(&self) -> Option<Stop> {
        match self.stop.load(Ordering::SeqCst) {
            1 => Some(Stop::Cancelled),
            2 => Some(Stop::Deadline),
            3 => Some(Stop::Shutdown),
            4 => Some(Stop::Lost),
            _ => match self.job.deadline_ms {
                Some(d) if wharf_metastore::now_ms() >= d => Some(Stop::Deadline),
                _ => None,
            },
        }
    }

    fn request_stop(&self, why: Stop) {
        // The first reason wins, except that a lost lease overrides everything.
        let code = stop_code(why);
        if why == Stop::Lost {
            self.stop.store(code, Ordering::SeqCst);
        } else {
            let _ = self
                .stop
                .compare_exchange(STOP_NONE, code, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

#[async_trait]
pub trait Action: Send + Sync {
    fn name(&self) -> &'static str;
    /// Runs one attempt. An error fails the attempt (retried while attempts remain).
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished>;
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How often a worker reports its job and itself.
    pub heartbeat: Duration,
    /// A job whose heartbeat is older than this is its worker's no more.
    pub dead_after: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// Back-off before retry n is `retry_backoff * 2^(n-1)`.
    pub retry_backoff: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let heartbeat = Duration::from_secs(5);
        WorkerConfig {
            heartbeat,
            dead_after: heartbeat * 3,
            poll: Duration::from_secs(2),
            retry_backoff: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    /// Everything scaled from one heartbeat interval.
    pub fn with_heartbeat(heartbeat: Duration, retry_backoff: Duration) -> Self {
        WorkerConfig {
            heartbeat,
            dead_after: heartbeat * 3,
            poll: heartbeat.min(Duration::from_secs(2)),
            retry_backoff,
        }
    }
}

pub struct Worker {
    pub id: String,
    address: String,
    version: String,
    store: Arc<dyn MetaStore>,
    actions: Vec<Arc<dyn Action>>,
    config: WorkerConfig,
    started_at_ms: i64,
    current: Mutex<Option<i64>>,
}

/// Queues a job for `action` with default attempts.
pub async fn enqueue(store: &dyn MetaStore, action: &str, params: &str) -> anyhow::Result<Job> {
    Ok(store
        .enqueue(&NewJob {
            action: action.into(),
            params: params.into(),
            max_attempts: DEFAULT_ATTEMPTS,
            deadline_ms: None,
            cron: None,
        })
        .await?)
}

impl Worker {
    pub fn new(
        address: &str,
        version: &str,
        store: Arc<dyn MetaStore>,
        actions: Vec<Arc<dyn Action>>,
        config: WorkerConfig,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            id: format!("worker-{}", uuid::Uuid::new_v4()),
            address: address.into(),
            version: version.into(),
            store,
            actions,
            config,
            started_at_ms: wharf_metastore::now_ms(),
            current: Mutex::new(None),
        })
    }

    pub fn action_names(&self) -> Vec<&'static str> {
        self.actions.iter().map(|a| a.name()).collect()
    }

    async fn report(&self) {
        let w = wharf_metastore::jobs::Worker {
            id: self.id.clone(),
            address: self.address.clone(),
            version: self.version.clone(),
            actions: self.action_names().join(","),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: 0,
            job_id: *self.current.lock().unwrap(),
        };
        if let Err(e) = self.store.worker_heartbeat(&w).await {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
    }

    /// Declares jobs of silent workers dead, forgets long-gone workers, fires due
    /// schedules. Every worker does it; the store makes each step happen once.
    async fn housekeeping(&self) {
        let now = match self.store.store_now().await {
            Ok(n) => n,
            Err(e) => return tracing::warn!(error = %e, "cannot read the store's clock"),
        };
        let dead_ms = self.config.dead_after.as_millis() as i64;
        match self.store.reap_dead_jobs(now - dead_ms).await {
            Ok(reaped) => {
                for r in reaped {
                    tracing::warn!(job = r.job_id, worker = %r.worker_id, status = r.status.as_str(), "job's worker stopped reporting");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check for dead workers"),
        }
        if let Err(e) = self.store.expire_workers(now - dead_ms * 20).await {
            tracing::warn!(error = %e, "cannot expire old workers");
        }
        schedule::fire_due(self.store.as_ref(), now).await;
    }

    /// Runs until `stop` turns true: claims and runs jobs one at a time. On stop, a
    /// running job is asked to stop and handed back to the queue.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let names = self.action_names();
        tracing::info!(worker = %self.id, actions = ?names, "job worker started");
        // Bounded by the stop signal; each pass either runs a job or waits one poll.
        while !*stop.borrow() {
            self.report().await;
            self.housekeeping().await;
            let claimed = match self.store.claim(&self.id, &names).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a job");
                    None
                }
            };
            match claimed {
                Some(job) => self.run_job(job, &mut stop).await,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        if let Err(e) = self.store.remove_worker(&self.id).await {
            tracing::warn!(error = %e, "could not deregister the worker");
        }
        tracing::info!(worker = %self.id, "job worker stopped");
    }

    async fn run_job(&self, job: Job, stop: &mut watch::Receiver<bool>) {
        let Some(action) = self
            .actions
            .iter()
            .find(|a| a.name() == job.action)
            .cloned()
        else {
            return; // claim only hands out our actions
        };
        *self.current.lock().unwrap() = Some(job.id);
        let ctx = Arc::new(JobContext::new(job.clone(), self.store.clone()));
        ctx.log(format!(
            "attempt {} of {} started on {} ({})",
            job.attempts, job.max_attempts, self.id, self.address
        ))
        .await;
        // Heartbeats run beside the action and turn the store's answers into stops.
        let beating = Arc::new(AtomicBool::new(true));
        let heart = {
            let (ctx, store, id, every, beating) = (
                ctx.clone(),
                self.store.clone(),
                self.id.clone(),
                self.config.heartbeat,
                beating.clone(),
            );
            let mut stop = stop.clone();
            tokio::spawn(async move {
                while beating.load(Ordering::SeqCst) {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        ctx.request_stop(Stop::Shutdown);
                    }
                    let progress = ctx.progress.lock().unwrap().clone();
                    match store
                        .job_heartbeat(ctx.job.id, &id, progress.as_deref())
                        .await
                    {
                        Ok(Lease::Held) => {}
                        Ok(Lease::CancelRequested) => ctx.request_stop(Stop::Cancelled),
                        Ok(Lease::Lost) => ctx.request_stop(Stop::Lost),
                        Err(e) => {
                            tracing::warn!(job = ctx.job.id, error = %e, "job heartbeat failed")
                        }
                    }
                }
            })
        };
        let result = action.run(&ctx).await;
        beating.store(false, Ordering::SeqCst);
        heart.abort();
        // The final progress is kept with the job.
        let progress = ctx.progress.lock().unwrap().clone();
        if progress.is_some() {
            let _ = self
                .store
                .job_heartbeat(job.id, &self.id, progress.as_deref())
                .await;
        }
        let outcome = match result {
            Ok(Finished::Done(summary)) => {
                ctx.log(format!("done: {summary}")).await;
                Outcome::Done
            }
            Ok(Finished::Stopped(Stop::Lost, _)) => {
                tracing::warn!(job = job.id, "another worker has the job now; stopped");
                *self.current.lock().unwrap() = None;
                return;
            }
            Ok(Finished::Stopped(Stop::Cancelled, summary)) => {
                ctx.log(format!("cancelled: {summary}")).await;
                Outcome::Cancelled
            }
            Ok(Finished::Stopped(Stop::Deadline, summary)) => {
                ctx.log(format!(
                    "time box reached: {summary}; the next run continues from here"
                ))
                .await;
                Outcome::Done
            }
            Ok(Finished::Stopped(Stop::Shutdown, summary)) => {
                ctx.log(format!(
                    "replica shutting down: {summary}; handed back to the queue"
                ))
                .await;
                Outcome::Released
            }
            Err(e) => {
                let backoff =
                    self.config.retry_backoff * 2u32.saturating_pow(job.attempts.saturating_sub(1));
                let error = format!("{e:#}");
                if job.attempts < job.max_attempts {
                    ctx.log(format!(
                        "attempt {} failed: {error}; retrying in {} s",
                        job.attempts,
                        backoff.as_secs()
                    ))
                    .await;
                } else {
                    ctx.log(format!(
                        "attempt {} failed: {error}; no attempts left",
                        job.attempts
                    ))
                    .await;
                }
                Outcome::Failed {
                    error,
                    retry_after_ms: backoff.as_millis() as i64,
                }
            }
        };
        if let Err(e) = self.store.finish_job(job.id, &self.id, &outcome).await {
            tracing::error!(job = job.id, error = %e, "could not record the job's outcome; it will be re-run");
        }
        *self.current.lock().unwrap() = None;
    }
}
