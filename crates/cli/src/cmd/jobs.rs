//! `wharf jobs`: the job queue, on the registry's metadata store directly (the same as
//! `/api/v0/jobs`). Jobs are run by the workers of serving replicas.

use std::time::Duration;

use clap::Subcommand;
use wharf_metastore::jobs::{Job, JobStatus};
use wharf_metastore::MetaStore;

use super::StoreArgs;

/// Queue, inspect and cancel jobs (garbage collection, migrations, upload purges)
#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Recent jobs, newest first
    List {
        /// Only this action
        #[arg(long)]
        action: Option<String>,
        /// Only this status (waiting, running, done, error, cancel_request, cancelled, worker_dead)
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// One job: status, attempts, progress (done/total, rate, ETA), last error
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// A job's log
    Logs {
        id: i64,
        /// Keep printing new lines until the job is over
        #[arg(long, short)]
        follow: bool,
    },
    /// Queue a job; a serving replica's worker runs it (or this process, with --here)
    ///
    /// With --wait and no replica serving on this store, it says so at once instead of
    /// waiting for a worker that does not exist.
    Run {
        /// gc, manifestsummaries, metadatastoremigration or purge_uploads
        action: String,
        /// Parameters, a JSON object
        #[arg(long, default_value = "{}")]
        params: String,
        /// Wait for it, printing its log; exit non-zero unless it ends done
        #[arg(long)]
        wait: bool,
        /// Run it in this process, printing its log, instead of on a serving replica
        /// (for a stopped registry, or one with no replica at hand); implies --wait.
        /// Ctrl-C hands the job back to the queue
        #[arg(long)]
        here: bool,
    },
    /// Cancel a waiting job, or ask a running one to stop
    Cancel { id: i64 },
}

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = wharf_server::run::open_metastore(&config).await?;
        match args.command {
            JobsCommand::List {
                action,
                status,
                limit,
                json,
            } => {
                let status = match status.as_deref() {
                    None => None,
                    Some(s) => Some(
                        JobStatus::parse(s)
                            .ok_or_else(|| anyhow::anyhow!("unknown status {s:?}"))?,
                    ),
                };
                let jobs = store.jobs(action.as_deref(), status, None, limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&jobs)?);
                    return Ok(());
                }
                println!(
                    "{:>6}  {:<24} {:<14} {:>8}  {:<19}  PROGRESS",
                    "ID", "ACTION", "STATUS", "ATTEMPTS", "CREATED"
                );
                for j in &jobs {
                    println!(
                        "{:>6}  {:<24} {:<14} {:>8}  {:<19}  {}",
                        j.id,
                        j.action,
                        j.status.as_str(),
                        format!("{}/{}", j.attempts, j.max_attempts),
                        time(j.created_at_ms),
                        progress_text(j)
                    );
                }
                if jobs.is_empty() {
                    println!("(no jobs)");
                }
                Ok(())
            }
            JobsCommand::Show { id, json } => {
                let j = find(store.as_ref(), id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&j)?);
                } else {
                    print_job(&j);
                }
                Ok(())
            }
            JobsCommand::Logs { id, follow } => {
                find(store.as_ref(), id).await?;
                follow_log(store.as_ref(), id, follow, None)
                    .await
                    .map(|_| ())
            }
            JobsCommand::Run {
                action,
                params,
                wait,
                here,
            } => {
                if !wharf_jobs::actions::NAMES.contains(&action.as_str()) {
                    anyhow::bail!(
                        "unknown action {action:?}; this wharf runs: {}",
                        wharf_jobs::actions::NAMES.join(", ")
                    );
                }
                let parsed: serde_json::Value = serde_json::from_str(&params)
                    .map_err(|e| anyhow::anyhow!("--params is not JSON: {e}"))?;
                if !parsed.is_object() {
                    anyhow::bail!("--params must be a JSON object");
                }
                let rerun = this_command_with("--here");
                let how = if here {
                    RunIn::ThisProcess
                } else if wait {
                    RunIn::Replica
                } else {
                    RunIn::QueueOnly
                };
                let end =
                    queue_and_follow(&config, &store, &action, &parsed.to_string(), how, &rerun)
                        .await?;
                if how != RunIn::QueueOnly && end.status != JobStatus::Done {
                    anyhow::bail!("job {} ended {}", end.id, end.status.as_str());
                }
                Ok(())
            }
            JobsCommand::Cancel { id } => {
                let j = store
                    .cancel_job(id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no job {id}"))?;
                match j.status {
                    JobStatus::Cancelled => println!("job {id} cancelled"),
                    JobStatus::CancelRequest => {
                        println!("job {id} is asked to stop; its worker stops at the next step")
                    }
                    s => println!("job {id} is already {}", s.as_str()),
                }
                Ok(())
            }
        }
    })
}

async fn find(store: &dyn MetaStore, id: i64) -> anyhow::Result<Job> {
    store
        .job(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no job {id}"))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub(crate) fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn progress_text(j: &Job) -> String {
    let Some(p) = j
        .progress
        .as_deref()
        .and_then(|p| serde_json::from_str::<wharf_jobs::Progress>(p).ok())
    else {
        return String::new();
    };
    let pct = if p.total > 0 {
        p.done as f64 * 100.0 / p.total as f64
    } else {
        100.0
    };
    let eta = p
        .eta_secs
        .map(|s| format!(", ETA {s} s"))
        .unwrap_or_default();
    format!(
        "{} {}/{} ({pct:.0}%), {:.1}/s{eta}",
        p.phase, p.done, p.total, p.rate
    )
}

fn print_job(j: &Job) {
    println!("job {}: {} — {}", j.id, j.action, j.status.as_str());
    println!("  attempts:  {} of {}", j.attempts, j.max_attempts);
    println!("  params:    {}", j.params);
    println!("  created:   {} UTC", time(j.created_at_ms));
    if let Some(t) = j.started_at_ms {
        println!("  started:   {} UTC", time(t));
    }
    if let Some(t) = j.finished_at_ms {
        println!("  finished:  {} UTC", time(t));
    }
    if let Some(w) = &j.worker_id {
        println!("  worker:    {w}");
    }
    if let Some(c) = &j.cron {
        println!("  schedule:  {c}");
    }
    let p = progress_text(j);
    if !p.is_empty() {
        println!("  progress:  {p}");
    }
    if let Some(e) = &j.last_error {
        println!("  last error: {e}");
    }
}

/// Who runs a job a command queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunIn {
    /// A serving replica's worker; the command follows the log.
    Replica,
    /// A worker in this process, for this job's action only; the command follows the log.
    ThisProcess,
    /// Whoever comes: the command only queues.
    QueueOnly,
}

/// A worker silent for this long (three heartbeats) is not serving.
fn silent_after(config: &wharf_server::Config) -> Duration {
    Duration::from_secs(config.job_heartbeat_secs.max(1) * 3)
}

/// Whether any worker that runs `action` has reported within [`silent_after`], by the
/// store's clock.
async fn any_live_worker(
    config: &wharf_server::Config,
    store: &dyn MetaStore,
    action: &str,
) -> anyhow::Result<bool> {
    let (workers, now) = store.workers().await?;
    let dead_after_ms = silent_after(config).as_millis() as i64;
    Ok(workers.iter().any(|w| {
        now - w.heartbeat_at_ms <= dead_after_ms && w.actions.split(',').any(|a| a == action)
    }))
}

/// This very command line with `flag` added, quoted for a POSIX shell: what to offer
/// the user to run next.
pub fn this_command_with(flag: &str) -> String {
    let quote = |a: &str| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
        if plain {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    let mut words = vec!["wharf".to_string()];
    words.extend(std::env::args().skip(1).map(|a| quote(&a)));
    words.push(flag.to_string());
    words.join(" ")
}

/// What to say when no replica would run a job: the store knows none is serving.
fn no_replica_message(action: &str, config: &wharf_server::Config, rerun: &str) -> String {
    format!(
        "no replica is serving on this registry's store (no job worker for {action} has \
         reported in the last {} s), so a queued {action} job would wait until one starts.\n  \
         run it in this process:  {rerun}\n  \
         or start a replica:      wharf serve (on the same --data-dir / --metadata)",
        silent_after(config).as_secs()
    )
}

/// Queues a job and, unless `how` is [`RunIn::QueueOnly`], follows its log until it
/// ends. Refuses at once to wait for a replica when none is serving; `rerun` is the
/// command that would run it here instead.
pub async fn queue_and_follow(
    config: &wharf_server::Config,
    store: &std::sync::Arc<dyn MetaStore>,
    action: &str,
    params: &str,
    how: RunIn,
    rerun: &str,
) -> anyhow::Result<Job> {
    let serving = any_live_worker(config, store.as_ref(), action).await?;
    if how == RunIn::Replica && !serving {
        anyhow::bail!("{}", no_replica_message(action, config, rerun));
    }
    let job = wharf_jobs::enqueue(store.as_ref(), action, params).await?;
    match how {
        RunIn::QueueOnly => {
            println!("queued job {} ({action})", job.id);
            if !serving {
                println!(
                    "no replica is serving on this store: the job waits until one starts (or run it here: {rerun})"
                );
            }
            Ok(job)
        }
        RunIn::Replica => {
            println!(
                "queued job {} ({action}); a serving replica runs it",
                job.id
            );
            follow_log(store.as_ref(), job.id, true, Some((config, action))).await
        }
        RunIn::ThisProcess => {
            println!(
                "queued job {} ({action}); running it in this process",
                job.id
            );
            run_here(config, store, job.id, action).await
        }
    }
}

/// Runs the job in this process: a worker for its action only (so it takes no other
/// kind of work), stopped once the job is final. Ctrl-C stops the worker, which hands
/// the job back to the queue.
async fn run_here(
    config: &wharf_server::Config,
    store: &std::sync::Arc<dyn MetaStore>,
    id: i64,
    action: &str,
) -> anyhow::Result<Job> {
    let blobs = wharf_server::run::open_blobstore(config)?;
    let stores = wharf_server::run::job_stores(config, store.clone(), blobs);
    let actions: Vec<_> = wharf_jobs::actions::all(&stores)
        .into_iter()
        .filter(|a| a.name() == action)
        .collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let address = format!("cli:{}:{}", host.trim(), std::process::id());
    let worker = wharf_jobs::Worker::new(
        &address,
        crate::VERSION,
        store.clone(),
        actions,
        wharf_jobs::WorkerConfig::with_heartbeat(
            Duration::from_secs(config.job_heartbeat_secs.max(1)),
            Duration::from_secs(config.job_retry_backoff_secs),
        ),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stop_rx));
    let outcome = tokio::select! {
        end = follow_log(store.as_ref(), id, true, None) => end,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!(
            "interrupted: job {id} is handed back to the queue (a serving replica, or a rerun with --here, continues it)"
        )),
    };
    let _ = stop_tx.send(true);
    let _ = running.await;
    outcome
}

/// Prints the log from the start; with `follow`, until the job is final (bounded: a
/// day). With `replica_for`, gives up with a clear message when the job is still
/// waiting and no worker for its action has been serving for [`silent_after`]. Returns
/// the job as it ended (or is now).
async fn follow_log(
    store: &dyn MetaStore,
    id: i64,
    follow: bool,
    replica_for: Option<(&wharf_server::Config, &str)>,
) -> anyhow::Result<Job> {
    let mut after = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(24 * 3600);
    let mut unserved_since: Option<std::time::Instant> = None;
    loop {
        let job = find(store, id).await?;
        for l in store.job_log(id, after, 1000).await? {
            println!("{} [attempt {}] {}", time(l.at_ms), l.attempt, l.line);
            after = l.seq;
        }
        if let (Some((config, action)), JobStatus::Waiting) = (replica_for, job.status) {
            if !any_live_worker(config, store, action).await? {
                let since = *unserved_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > silent_after(config) {
                    anyhow::bail!(
                        "job {id} is still waiting and no replica serves this store any more, so it \
                         stays queued for the next one that starts; to run it now instead, cancel it \
                         (`wharf jobs cancel {id}`) and run the command again with --here"
                    );
                }
            } else {
                unserved_since = None;
            }
        }
        if !follow || job.status.is_final() || std::time::Instant::now() > deadline {
            // One more read: lines written just before the final status.
            for l in store.job_log(id, after, 1000).await? {
                println!("{} [attempt {}] {}", time(l.at_ms), l.attempt, l.line);
            }
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
