//! `wharf-bench`: measures wharf and the reference registry (`docker-registry`) side by
//! side, in one run, on this machine, and prints the figures as Markdown.
//!
//! Both servers are started fresh by the harness (own loopback port, own temporary data
//! directory), measured one at a time with the order alternated between repeats, and
//! stopped by PID at the end — also on error, panic, Ctrl-C or SIGTERM (see
//! [`server::Server`]'s `Drop`).
//!
//! `wharf-bench gc` is a separate benchmark (see [`gc`]): online garbage collection and
//! the `metadatastoremigration` job on large stores, and pushes while a GC job runs.
//! `wharf-bench ui` (see [`ui`]) times the web UI's pages on a large registry and a small
//! one, and weighs them. `wharf-bench scan` (see [`scan`]) measures the vulnerability
//! scanner: scan throughput and memory on a 1 GiB image, advisory import, re-match.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod bench;
mod cache;
mod data;
mod gc;
mod limits;
mod load;
mod registry;
mod report;
mod scan;
mod server;
mod sys;
mod ui;

/// Benchmark wharf against the reference registry (docker-registry), side by side
///
/// Starts both servers, runs every phase against each, and prints a Markdown report
/// (machine, parameters, figures with ratios and targets, raw samples, CPU per phase).
/// With --update-doc, the report replaces the generated section of that file.
#[derive(Parser, Debug, Clone)]
#[command(name = "wharf-bench", version, args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The wharf binary to benchmark
    #[arg(long, default_value = "target/release/wharf", value_name = "PATH")]
    pub wharf: PathBuf,
    /// The reference registry binary (distribution's `registry`, Debian's docker-registry)
    #[arg(long, default_value = "/usr/bin/docker-registry", value_name = "PATH")]
    pub reference: PathBuf,
    /// Where the servers' temporary data directories go [default: the system temp dir]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Size of the large blob pushed and pulled, in MiB
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub blob_mib: usize,
    /// PATCH size of the chunked push, in MiB
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub chunk_mib: usize,
    /// Repeats of each blob push/pull measurement (the median is reported)
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    pub repeats: u32,
    /// Keep the servers' blob files in the page cache between push repeats (by default
    /// they are evicted, so the run stays in memory the VM has already touched)
    #[arg(long)]
    pub keep_page_cache: bool,
    /// Duration of the wrk manifest GET run, in seconds
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub wrk_secs: u64,
    /// wrk threads
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub wrk_threads: u32,
    /// Concurrent connections of wrk and ab
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub connections: u32,
    /// Requests of the ab blob HEAD run
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub ab_requests: u32,
    /// Small images pushed concurrently
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub images: u32,
    /// Concurrent workers pushing small images (and tagging)
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Tags put on one repository before timing tags/list
    #[arg(long, default_value_t = 5_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tags: u32,
    /// Sequential tags/list GETs timed per server
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tag_gets: u32,
    /// Replace the section between the wharf-bench markers of this Markdown file with the report
    #[arg(long, value_name = "FILE")]
    pub update_doc: Option<PathBuf>,
    /// Also write the raw figures as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// How the report names the command that produced it [default: this command line]
    #[arg(long, value_name = "TEXT")]
    pub command_label: Option<String>,
    /// Where both servers keep their data: sqlite-fs (wharf: SQLite + a directory; the
    /// reference: a directory), pg-fs (wharf: PostgreSQL + a directory; the reference: a
    /// directory, as in sqlite-fs) or pg-s3 (wharf: PostgreSQL + S3; the reference: the
    /// same S3 server and bucket, under its own prefix)
    #[arg(long, value_enum, default_value_t = Stores::SqliteFs, value_name = "STORES")]
    pub stores: Stores,
    /// pg-fs, pg-s3: a PostgreSQL URL the harness can run CREATE DATABASE with; each wharf
    /// start gets a fresh database on that server, dropped again when wharf stops
    #[arg(
        long,
        value_name = "URL",
        required_if_eq_any([("stores", "pg-fs"), ("stores", "pg-s3")])
    )]
    pub postgres_url: Option<String>,
    /// pg-s3: endpoint of the S3-compatible server, e.g. http://127.0.0.1:9000
    #[arg(long, value_name = "URL", required_if_eq("stores", "pg-s3"))]
    pub s3_endpoint: Option<String>,
    /// pg-s3: an existing bucket; each server writes under its own fresh prefix in it
    /// (wharf-bench-RUN-wharf/, wharf-bench-RUN-reference/), left in place at the end
    #[arg(long, default_value = "wharf-test", value_name = "BUCKET")]
    pub s3_bucket: String,
    /// pg-s3: S3 region
    #[arg(long, default_value = "us-east-1", value_name = "REGION")]
    pub s3_region: String,
    /// pg-s3: S3 access key, passed to both servers
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true,
        default_value = "test",
        value_name = "KEY"
    )]
    pub s3_access_key: String,
    /// pg-s3: S3 secret key, passed to both servers
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        default_value = "test",
        value_name = "KEY"
    )]
    pub s3_secret_key: String,
    /// pg-s3: how the report names the S3 server [default: its Server header]
    #[arg(long, value_name = "TEXT")]
    pub s3_label: Option<String>,
    /// pg-s3: PID of the S3 server, so the report shows its CPU time per phase
    #[arg(long, value_name = "PID")]
    pub s3_pid: Option<u32>,
    /// pg-fs, pg-s3: PID of the PostgreSQL postmaster, so the report shows the CPU time of
    /// it and its backends per phase
    #[arg(long, value_name = "PID")]
    pub postgres_pid: Option<u32>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    Gc(gc::GcArgs),
    Ui(ui::UiArgs),
    Scan(scan::ScanArgs),
    Cache(cache::CacheArgs),
}

/// Which stores the servers under test use.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stores {
    /// wharf: SQLite metadata and blobs in its data directory; the reference: filesystem
    SqliteFs,
    /// wharf: PostgreSQL metadata and blobs in a directory; the reference: filesystem
    PgFs,
    /// wharf: PostgreSQL metadata and S3 blobs; the reference: the same S3 server
    PgS3,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let command = args.command.take();
    if command.is_none() && (args.chunk_mib == 0 || args.blob_mib == 0) {
        eprintln!("wharf-bench: error: --blob-mib and --chunk-mib must be positive");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf-bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a signal the benchmark future is dropped, which drops the servers, which kills
    // them by PID: no registry is left running behind us.
    let result = runtime.block_on(async {
        tokio::select! {
            r = async {
                match command {
                    Some(Command::Gc(gc_args)) => gc::run(gc_args).await,
                    Some(Command::Ui(ui_args)) => ui::run(ui_args).await,
                    Some(Command::Scan(scan_args)) => scan::run(scan_args).await,
                    Some(Command::Cache(cache_args)) => cache::run(cache_args).await,
                    None => bench::run(args).await,
                }
            } => r,
            s = stop_signal() => Err(anyhow::anyhow!("interrupted by {s}; servers stopped")),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("wharf-bench: some measurements failed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wharf-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers we can only rely on Drop; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_stores_need_a_postgres_url() {
        let parse =
            |extra: &[&str]| Args::try_parse_from(["wharf-bench"].iter().chain(extra).copied());
        assert!(parse(&["--stores", "pg-fs"]).is_err());
        let a = parse(&["--stores", "pg-fs", "--postgres-url", "postgres://h/db"]).unwrap();
        assert_eq!(a.stores, Stores::PgFs);
        assert!(a.s3_endpoint.is_none());
        assert!(parse(&["--stores", "pg-s3", "--s3-endpoint", "http://h"]).is_err());
        assert_eq!(parse(&[]).unwrap().stores, Stores::SqliteFs);
    }
}
