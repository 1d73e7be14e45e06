//! The cluster-wide job queue: jobs, their logs, the workers that run them, and
//! schedules. Times are the store's clock, so replicas' clocks never decide who is dead.

use async_trait::async_trait;

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Waiting,
    Running,
    Done,
    Error,
    CancelRequest,
    Cancelled,
    WorkerDead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Error => "error",
            JobStatus::CancelRequest => "cancel_request",
            JobStatus::Cancelled => "cancelled",
            JobStatus::WorkerDead => "worker_dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "waiting" => JobStatus::Waiting,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "error" => JobStatus::Error,
            "cancel_request" => JobStatus::CancelRequest,
            "cancelled" => JobStatus::Cancelled,
            "worker_dead" => JobStatus::WorkerDead,
            _ => return None,
        })
    }

    /// No worker will touch the job again (unless someone queues a new one).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Error | JobStatus::Cancelled | JobStatus::WorkerDead
        )
    }
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub action: String,
    /// JSON object with the action's parameters.
    pub params: String,
    /// Attempts in all (the first run and its retries).
    pub max_attempts: u32,
    /// Stop by then (a time-boxed run), store clock, ms.
    pub deadline_ms: Option<i64>,
    /// The schedule that queued it.
    pub cron: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    pub id: i64,
    pub action: String,
    /// JSON object.
    pub params: String,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub worker_id: Option<String>,
    pub cron: Option<String>,
    pub deadline_ms: Option<i64>,
    /// Not claimed before then (retries back off).
    pub not_before_ms: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub heartbeat_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// JSON the action reports (for example done, total, rate, ETA).
    pub progress: Option<String>,
    pub last_error: Option<String>,
}

impl Job {
    /// What the action last reported, as JSON (`None` if nothing, or not JSON).
    pub fn progress_json(&self) -> Option<serde_json::Value> {
        self.progress
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Retried after `retry_after_ms` if attempts remain; otherwise the job is `error`.
    Failed {
        error: String,
        retry_after_ms: i64,
    },
    Cancelled,
    /// The worker is stopping (its replica shuts down) before the job is over: the job
    /// goes back to the queue for another worker, and this attempt does not count.
    Released,
}

/// What the store tells a worker on each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Carry on.
    Held,
    /// Someone asked to cancel: stop, then finish with [`Outcome::Cancelled`].
    CancelRequested,
    /// The job is no longer this worker's (it was declared dead and re-queued): stop at
    /// once and write nothing more.
    Lost,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Increasing within the job; pass the last one seen as `after` to follow.
    pub seq: i64,
    pub at_ms: i64,
    pub attempt: u32,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Worker {
    pub id: String,
    /// The replica it runs in.
    pub address: String,
    pub version: String,
    /// The actions it can run, comma-separated.
    pub actions: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    pub job_id: Option<i64>,
}

/// A job that lost its worker, as the reaper left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub job_id: i64,
    pub worker_id: String,
    pub status: JobStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cron {
    pub name: String,
    pub action: String,
    /// JSON object.
    pub params: String,
    /// A cron expression (minute hour day-of-month month day-of-week).
    pub schedule: String,
    /// `None`: run until done; `Some(n)`: each run stops after n minutes.
    pub run_for_minutes: Option<u32>,
    pub enabled: bool,
    pub next_run_at_ms: i64,
    pub last_job_id: Option<i64>,
}

/// Logs of one job are kept up to this many bytes; then one line says they stop.
pub const JOB_LOG_CAP_BYTES: i64 = 1 << 20;

#[async_trait]
pub trait JobStore: Send + Sync {
    async fn enqueue(&self, job: &NewJob) -> Result<Job>;
    /// Takes the oldest waiting job, due now, of one of `actions` whose action has no
    /// running job (one job per action at a time): it becomes `running` for
    /// `worker_id`, with one more attempt counted.
    async fn claim(&self, worker_id: &str, actions: &[&str]) -> Result<Option<Job>>;
    /// The worker's proof of life for its job, with its progress (JSON).
    async fn job_heartbeat(
        &self,
        job_id: i64,
        worker_id: &str,
        progress: Option<&str>,
    ) -> Result<Lease>;
    /// Ends the worker's attempt. `None` if the job was no longer the worker's.
    async fn finish_job(
        &self,
        job_id: i64,
        worker_id: &str,
        outcome: &Outcome,
    ) -> Result<Option<Job>>;
    /// Waiting → cancelled; running → cancel_request (the worker stops). `None` if there
    /// is no such job; a finished job is returned unchanged.
    async fn cancel_job(&self, job_id: i64) -> Result<Option<Job>>;
    async fn job(&self, job_id: i64) -> Result<Option<Job>>;
    /// Newest first, before `before_id`, filtered by action and status when given.
    async fn jobs(
        &self,
        action: Option<&str>,
        status: Option<JobStatus>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Job>>;
    /// Appends to a job's log, up to [`JOB_LOG_CAP_BYTES`].
    async fn append_job_log(&self, job_id: i64, attempt: u32, lines: &[String]) -> Result<()>;
    /// Log lines after `after_seq`, oldest first.
    async fn job_log(&self, job_id: i64, after_seq: i64, limit: usize) -> Result<Vec<LogLine>>;
    /// Running jobs whose heartbeat is older than `before_ms`: re-queued if attempts
    /// remain (`waiting`), otherwise `worker_dead`; a job being cancelled becomes
    /// `cancelled`. Each gets a log line saying so.
    async fn reap_dead_jobs(&self, before_ms: i64) -> Result<Vec<Reaped>>;

    async fn worker_heartbeat(&self, worker: &Worker) -> Result<()>;
    async fn remove_worker(&self, id: &str) -> Result<()>;
    /// Every worker, and the store's clock now.
    async fn workers(&self) -> Result<(Vec<Worker>, i64)>;
    async fn expire_workers(&self, before_ms: i64) -> Result<u64>;

    /// Creates or replaces a schedule.
    async fn put_cron(&self, cron: &Cron) -> Result<()>;
    async fn delete_cron(&self, name: &str) -> Result<bool>;
    async fn crons(&self) -> Result<Vec<Cron>>;
    /// Queues the job of a due schedule once across the cluster: if `name` is due at
    /// `due_ms` still, moves it to `next_ms` and queues `job`. `None` if another replica
    /// did it first.
    async fn fire_cron(
        &self,
        name: &str,
        due_ms: i64,
        next_ms: i64,
        job: &NewJob,
    ) -> Result<Option<Job>>;
    /// The store's clock.
    async fn store_now(&self) -> Result<i64>;
}
