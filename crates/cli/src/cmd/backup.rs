//! `wharf backup` and `wharf restore`: see the `wharf-backup` crate for the archive.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use wharf_backup::{BackupRequest, Progress, RestoreRequest};
use wharf_server::SCHEMA_LEVEL;

use super::StoreArgs;

/// Back up the registry while it serves: a consistent copy of the metadata and,
/// with --with-blobs, of the blobs
///
/// The archive is a tar file holding the metadata (one JSON-lines entry per table,
/// from one snapshot of the store), the blobs that snapshot names (with --with-blobs)
/// and SHA256SUMS. It is written to FILE.partial and renamed when complete. The
/// backup's time, scope and checksum are recorded in the metadata store, where the
/// upgrade checks look for them; `wharf backup --list` shows them.
///
/// Without --with-blobs, back up the blob store by its own means (a snapshot of the
/// directory, or versioning/replication of the S3 bucket).
#[derive(clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Where to write the archive
    #[arg(long, value_name = "FILE", required_unless_present = "list")]
    out: Option<PathBuf>,
    /// Include the blobs (every blob the metadata names)
    #[arg(long)]
    with_blobs: bool,
    /// Overwrite FILE if it exists
    #[arg(long)]
    force: bool,
    /// Show the backups recorded in the metadata store, newest first
    #[arg(long, conflicts_with_all = ["out", "with_blobs", "force"])]
    list: bool,
    /// With --list: print JSON
    #[arg(long, requires = "list")]
    json: bool,
}

/// Restore a registry from a `wharf backup` archive
///
/// The whole archive is read and every checksum checked before anything is touched;
/// a truncated or damaged archive is refused. Then the blobs in the archive are copied
/// into the blob store and the metadata is loaded in one transaction (all or nothing).
///
/// Stop every replica first: restore refuses while one is serving from the metadata
/// store. The metadata store must be empty unless --replace is given. A backup from
/// another wharf version is refused unless --allow-version-mismatch is given (same
/// schema level only: restore an older schema with its own version, then upgrade).
#[derive(clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The archive `wharf backup` wrote
    #[arg(value_name = "FILE")]
    archive: PathBuf,
    /// Check the archive and print what it holds; change nothing
    #[arg(long)]
    verify_only: bool,
    /// Replace the metadata that the store holds now
    #[arg(long)]
    replace: bool,
    /// Restore a backup written by another wharf version with the same schema level
    #[arg(long)]
    allow_version_mismatch: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    runtime()?.block_on(async {
        let meta = wharf_server::run::open_metastore(&config).await?;
        if args.list {
            return list(meta.as_ref(), args.json).await;
        }
        let out = args.out.expect("clap requires --out");
        if out.exists() && !args.force {
            anyhow::bail!("{} exists (pass --force to overwrite it)", out.display());
        }
        let blobs = if args.with_blobs {
            Some(wharf_server::run::open_blobstore(&config)?)
        } else {
            None
        };
        let progress = Bars::new();
        let s = wharf_backup::create(BackupRequest {
            meta,
            blobs,
            out: &out,
            wharf_version: crate::VERSION,
            schema_level: SCHEMA_LEVEL,
            source: wharf_server::run::metastore_kind(&config),
            progress: &progress,
        })
        .await
        .context("backup failed")?;
        println!(
            "backup written to {} ({}, {} bytes): {} tables, {} rows, {} blobs ({} bytes); checksum {}",
            s.path.display(),
            s.scope.as_str(),
            s.bytes,
            s.tables,
            s.rows,
            s.blobs,
            s.blob_bytes,
            s.checksum
        );
        Ok(())
    })
}

async fn list(meta: &dyn wharf_metastore::MetaStore, json: bool) -> anyhow::Result<()> {
    let records = meta.backups(50).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("no backup is recorded");
        return Ok(());
    }
    let now = wharf_metastore::now_ms();
    println!(
        "{:<16} {:<15} {:<12} {:>12}  LOCATION",
        "AGE", "SCOPE", "VERSION", "BYTES"
    );
    for r in records {
        let age = (now - r.finished_at_ms).max(0) / 1000;
        println!(
            "{:<16} {:<15} {:<12} {:>12}  {}",
            format!("{}h{:02}m{:02}s ago", age / 3600, age / 60 % 60, age % 60),
            r.scope,
            r.wharf_version,
            r.bytes,
            r.location
        );
    }
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    runtime()?.block_on(async {
        let progress = Bars::new();
        if args.verify_only {
            let v = wharf_backup::verify(&args.archive, &progress).await?;
            let h = &v.header;
            println!(
                "{}: a complete wharf backup ({} entries, {} bytes, checksum {})",
                args.archive.display(),
                v.entries,
                v.bytes,
                v.checksum
            );
            println!(
                "written by wharf {} (schema level {}) from {}, scope {}, {} blobs ({} bytes)",
                h.wharf_version, h.schema_level, h.source, h.scope, v.blobs, v.blob_bytes
            );
            wharf_backup::check_version(h, crate::VERSION, SCHEMA_LEVEL, args.allow_version_mismatch)?;
            return Ok(());
        }
        // Nothing is created before the archive has been checked.
        let v = wharf_backup::verify(&args.archive, &progress).await?;
        wharf_backup::check_version(&v.header, crate::VERSION, SCHEMA_LEVEL, args.allow_version_mismatch)?;
        let meta = wharf_server::run::open_or_create_metastore(&config).await?;
        let blobs = wharf_server::run::open_blobstore(&config)?;
        let s = wharf_backup::restore(RestoreRequest {
            archive: &args.archive,
            meta,
            blobs,
            wharf_version: crate::VERSION,
            schema_level: SCHEMA_LEVEL,
            replace: args.replace,
            allow_version_mismatch: args.allow_version_mismatch,
            progress: &progress,
            verified: Some(v),
        })
        .await
        .context("restore failed")?;
        println!(
            "restored {} rows of metadata and {} blobs ({} already there) from {}",
            s.rows,
            s.blobs_written,
            s.blobs_present,
            args.archive.display()
        );
        if !s.missing_blobs.is_empty() {
            eprintln!(
                "warning: {} blobs named by the metadata are not in the blob store (first: {}); restore the blob store's own backup too",
                s.missing_blobs.len(),
                s.missing_blobs[0]
            );
        }
        Ok(())
    })
}

/// Progress bars on a terminal; one line per finished step otherwise.
pub(crate) struct Bars {
    terminal: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub(crate) fn new() -> Bars {
        Bars {
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn step(&self, name: &str, total_bytes: Option<u64>) {
        if !self.terminal {
            return;
        }
        let bar = match total_bytes {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{prefix:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix:>9} {spinner} {bytes} {bytes_per_sec}")
                    .expect("template"),
            ),
        };
        bar.set_prefix(name.to_string());
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            bar.inc(bytes);
        }
    }

    fn finish(&self, summary: &str) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
        eprintln!("{summary}");
    }
}
