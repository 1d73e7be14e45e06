//! `wharf jobs`: the job queue, on the registry's metadata store directly (the same as
//! `/api/v0/jobs`). Jobs are run by the workers of serving replicas.

use std::time::Duration;

use clap::Subcommand;
use wharf_metastore::jobs::{Job, JobStatus, NewJob};
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
    /// Queue a job; a serving replica's worker runs it
    Run {
        /// gc, metadatastoremigration or purge_uploads
        action: String,
        /// Parameters, a JSON object
        #[arg(long, default_value = "{}")]
        params: String,
        /// Wait for it, printing its log; exit non-zero unless it ends done
        #[arg(long)]
        wait: bool,
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
                follow_log(store.as_ref(), id, follow).await.map(|_| ())
            }
            JobsCommand::Run {
                action,
                params,
                wait,
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
                let job = store
                    .enqueue(&NewJob {
                        action: action.clone(),
                        params: parsed.to_string(),
                        max_attempts: wharf_jobs::DEFAULT_ATTEMPTS,
                        deadline_ms: None,
                        cron: None,
                    })
                    .await?;
                println!("queued job {} ({action})", job.id);
                if wait {
                    let end = follow_log(store.as_ref(), job.id, true).await?;
                    if end.status != JobStatus::Done {
                        anyhow::bail!("job {} ended {}", end.id, end.status.as_str());
                    }
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
fn time(ms: i64) -> String {
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

/// Prints the log from the start; with `follow`, until the job is final (bounded: a
/// day). Returns the job as it ended (or is now).
pub async fn follow_log(store: &dyn MetaStore, id: i64, follow: bool) -> anyhow::Result<Job> {
    let mut after = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        let job = find(store, id).await?;
        for l in store.job_log(id, after, 1000).await? {
            println!("{} [attempt {}] {}", time(l.at_ms), l.attempt, l.line);
            after = l.seq;
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
