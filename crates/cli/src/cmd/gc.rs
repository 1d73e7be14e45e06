//! `wharf gc`: online garbage collection. `--dry-run` shows here and now what would
//! go; otherwise a `gc` job is queued for the replicas' workers and followed.

use wharf_jobs::actions::gc::{summary, GarbageCollect, GcParams};
use wharf_metastore::jobs::JobStatus;

use super::jobs::{queue_and_follow, this_command_with, RunIn};
use super::StoreArgs;

/// Collect garbage while the registry serves: blobs and links no manifest refers to,
/// and with --delete-untagged, untagged manifests nothing refers to
///
/// Only what is older than the grace period goes (default: the configured
/// gc_grace_secs, 24 h). The run is a job: a serving replica's worker runs it, and
/// this command prints its log until it is over; with no replica serving it says so at
/// once. With --here this process runs it (a stopped registry needs no replica). With
/// --dry-run nothing is queued or deleted: the command itself reports what a run would
/// remove.
#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Spare what is younger than this many seconds
    #[arg(long, value_name = "SECS")]
    grace_secs: Option<u64>,
    /// Also remove untagged manifests that no tag or other manifest refers to
    #[arg(long)]
    delete_untagged: bool,
    /// The share of wall time the run may spend working (1-100); it pauses between
    /// batches for the rest, leaving the stores and the CPU to clients. 100 = flat out
    /// [default: the configured gc_busy_percent: 5 on SQLite, 10 on PostgreSQL]
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    busy_percent: Option<u8>,
    /// Run the job in this process instead of on a serving replica (the registry may
    /// be stopped); Ctrl-C hands it back to the queue
    #[arg(long, conflicts_with = "dry_run")]
    here: bool,
}

pub fn run(args: GcArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let params = serde_json::json!({
        "grace_secs": args.grace_secs,
        "delete_untagged": args.delete_untagged,
        "dry_run": args.dry_run,
        "busy_percent": args.busy_percent,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let meta = wharf_server::run::open_metastore(&config).await?;
        if args.dry_run {
            let blobs = wharf_server::run::open_blobstore(&config)?;
            let stores = wharf_server::run::job_stores(&config, meta.clone(), blobs);
            let gc = GarbageCollect::new(stores);
            let ctx = wharf_jobs::JobContext::detached("gc", &params.to_string(), meta);
            let p: GcParams = serde_json::from_value(params)?;
            let (report, _) = gc.collect(&ctx, &p).await?;
            println!("{}", summary(&report, true));
            return Ok(());
        }
        let how = if args.here {
            RunIn::ThisProcess
        } else {
            RunIn::Replica
        };
        let end = queue_and_follow(
            &config,
            &meta,
            "gc",
            &params.to_string(),
            how,
            &this_command_with("--here"),
        )
        .await?;
        if end.status != JobStatus::Done {
            anyhow::bail!("gc job {} ended {}", end.id, end.status.as_str());
        }
        Ok(())
    })
}
