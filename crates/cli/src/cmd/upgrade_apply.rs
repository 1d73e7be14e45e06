//! `wharf upgrade apply` with the local driver: the registry is stopped, this command
//! moves its data to this binary's version. The steps, each recorded in the journal
//! in the metadata store when done, so that a rerun continues after any interruption:
//!
//! 1. `checks`: the upgrade is allowed by the rules; no replica is serving; the data
//!    directory takes a write and an fsync.
//! 2. `backup`: a metadata backup (unless skipped with a recorded reason).
//! 3. `expand`: the schema migrations, in one transaction (all or nothing).
//! 4. `background`: background migrations queued as jobs (metadatastoremigration).
//! 5. `finalise`: the data now belongs to this version.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

use super::StoreArgs;

const STEPS: [&str; 5] = ["checks", "backup", "expand", "background", "finalise"];

pub fn run(
    store: &StoreArgs,
    yes: bool,
    backup_dir: Option<PathBuf>,
    skip_backup: Option<String>,
) -> anyhow::Result<std::process::ExitCode> {
    let config = store.to_config()?;
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    let data = super::upgrade::data_version(store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let location = config.metadata_location().map_err(anyhow::Error::msg)?;
        let meta: std::sync::Arc<dyn MetaStore> = match &location {
            MetadataLocation::Sqlite(p) => std::sync::Arc::new(SqliteMetaStore::open_for_upgrade(p).await?),
            MetadataLocation::Postgres(u) => std::sync::Arc::new(PgMetaStore::open_for_upgrade(&u.0).await?),
        };
        let journal = meta.journal(&own.to_string()).await?;
        // Resuming: the data may already be at this version with steps left.
        let from = if data == own {
            match journal.iter().map(|e| e.from_version.clone()).find(|f| {
                !journal.iter().any(|e| &e.from_version == f && e.step == "finalise")
            }) {
                Some(f) => Version::parse(&f)?,
                None => {
                    println!("the data is at {own} already: nothing to do");
                    return Ok(std::process::ExitCode::SUCCESS);
                }
            }
        } else {
            data.clone()
        };
        let mut versions = wharf_upgrade::Catalog::embedded().versions();
        versions.push(own.clone());
        let plan = wharf_upgrade::plan(&from, &own, &versions, false);
        if !plan.allowed || plan.path.len() != 1 {
            println!("upgrade {from} → {own}: refused");
            if let Some(r) = &plan.reason {
                println!("  {r}");
            }
            if plan.path.len() > 1 {
                println!("  install these in order, running `wharf upgrade apply` with each: {}", plan.path.join(" → "));
            }
            return Ok(std::process::ExitCode::FAILURE);
        }
        let done: Vec<&str> = journal
            .iter()
            .filter(|e| e.from_version == from.to_string())
            .map(|e| e.step.as_str())
            .collect();
        println!("upgrade {from} → {own} ({})", if done.is_empty() { "starting" } else { "resuming" });
        for w in &plan.warnings {
            println!("{w}");
        }
        if !yes {
            if !std::io::stdin().is_terminal() {
                bail!("not on a terminal: pass --yes to upgrade without confirmation");
            }
            print!("Upgrade the data to {own}? A backup comes first. [y/N] ");
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!("not confirmed; nothing changed");
            }
        }
        let holder = format!("{}:{}", hostname(), std::process::id());
        if let Err(other) = meta.take_upgrade_lock(&holder, 5 * 60_000).await? {
            // A holder on this host whose process is gone (killed, crashed) is taken
            // over at once; elsewhere, when it has not renewed the lock for 5 minutes.
            if holder_is_gone(&other) {
                println!("taking over the upgrade lock from {other}, which is no longer running");
                if let Err(again) = meta.take_upgrade_lock(&holder, 0).await? {
                    bail!("could not take over the upgrade lock from {again}");
                }
            } else {
                bail!("another upgrade holds the lock ({other}); it is taken over when it has not renewed it for 5 minutes");
            }
        }

        let result = steps(&config, &location, meta.clone(), &from, &own, &done, &holder, backup_dir, skip_backup).await;
        meta.release_upgrade_lock(&holder).await?;
        result?;
        println!("upgraded to {own}");
        Ok(std::process::ExitCode::SUCCESS)
    })
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    config: &wharf_server::Config,
    location: &MetadataLocation,
    meta: std::sync::Arc<dyn MetaStore>,
    from: &Version,
    to: &Version,
    done: &[&str],
    holder: &str,
    backup_dir: Option<PathBuf>,
    skip_backup: Option<String>,
) -> anyhow::Result<()> {
    let total = STEPS.len();
    for (i, step) in STEPS.iter().enumerate() {
        if done.contains(step) {
            println!("[{}/{total}] {step}: done before", i + 1);
            continue;
        }
        // Renew the lock: a holder that stops renewing is presumed gone.
        if let Err(other) = meta.take_upgrade_lock(holder, 5 * 60_000).await? {
            bail!("the upgrade lock was taken over by {other}");
        }
        let (status, detail) = match *step {
            "checks" => ("done", checks(config, meta.as_ref()).await?),
            "backup" => match &skip_backup {
                Some(reason) => ("skipped", format!("skipped by {holder}: {reason}")),
                None => (
                    "done",
                    backup(config, meta.clone(), from, to, backup_dir.clone()).await?,
                ),
            },
            "expand" => {
                let applied = match location {
                    MetadataLocation::Sqlite(p) => {
                        SqliteMetaStore::migrate(p, wharf_server::SCHEMA_LEVEL).await?
                    }
                    MetadataLocation::Postgres(u) => {
                        PgMetaStore::migrate(&u.0, wharf_server::SCHEMA_LEVEL).await?
                    }
                };
                ("done", format!("schema levels applied: {applied:?}"))
            }
            "background" => ("done", background(location).await?),
            _ => ("done", format!("the data belongs to {to}")),
        };
        meta.record_step(&JournalEntry {
            from_version: from.to_string(),
            to_version: to.to_string(),
            step: step.to_string(),
            status: status.into(),
            at_ms: 0,
            detail: detail.clone(),
        })
        .await?;
        println!("[{}/{total}] {step}: {detail}", i + 1);
    }
    Ok(())
}

async fn checks(config: &wharf_server::Config, meta: &dyn MetaStore) -> anyhow::Result<String> {
    let (rows, now) = meta.replicas().await?;
    for r in &rows {
        let silent = now - r.heartbeat_at_ms;
        if silent <= 3 * r.report.heartbeat_interval_ms.max(1000) {
            bail!(
                "check `replicas`: replica {} at {} is serving (reported {} s ago); the local driver needs the registry stopped",
                r.report.id,
                r.report.address,
                silent / 1000
            );
        }
    }
    // The data directory takes a write and an fsync.
    std::fs::create_dir_all(&config.data_dir)?;
    let probe = config.data_dir.join(".wharf-upgrade-probe");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"probe")?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result.with_context(|| {
        format!(
            "check `data-dir`: {} does not take a write and an fsync",
            config.data_dir.display()
        )
    })?;
    Ok("no replica serving; the data directory takes writes".into())
}

async fn backup(
    config: &wharf_server::Config,
    meta: std::sync::Arc<dyn MetaStore>,
    from: &Version,
    to: &Version,
    dir: Option<PathBuf>,
) -> anyhow::Result<String> {
    let dir = dir.unwrap_or_else(|| config.data_dir.join("backups"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = wharf_metastore::now_ms() / 1000;
    let out = dir.join(format!("pre-upgrade-{from}-to-{to}-{stamp}.tar"));
    let level = meta.schema_level().await?;
    let s = wharf_backup::create(wharf_backup::BackupRequest {
        meta,
        blobs: None,
        out: &out,
        wharf_version: &from.to_string(),
        schema_level: level,
        source: wharf_server::run::metastore_kind(config),
        progress: &wharf_backup::Quiet,
    })
    .await
    .context("the pre-upgrade backup failed; nothing was changed")?;
    Ok(format!(
        "metadata backup {} ({} rows, {} bytes)",
        s.path.display(),
        s.rows,
        s.bytes
    ))
}

async fn background(location: &MetadataLocation) -> anyhow::Result<String> {
    let meta: Box<dyn MetaStore> = match location {
        MetadataLocation::Sqlite(p) => Box::new(SqliteMetaStore::open(p).await?),
        MetadataLocation::Postgres(u) => Box::new(PgMetaStore::open(&u.0).await?),
    };
    let pending = meta.count_manifests_without_refs().await?;
    if pending == 0 {
        return Ok("no background migration needed".into());
    }
    let active = meta
        .jobs(Some("metadatastoremigration"), None, None, 20)
        .await?
        .into_iter()
        .find(|j| !j.status.is_final());
    let job = match active {
        Some(j) => j,
        None => wharf_jobs::enqueue(meta.as_ref(), "metadatastoremigration", "{}").await?,
    };
    Ok(format!(
        "metadatastoremigration queued as job {} for {pending} manifests (garbage collection waits for it; follow it with `wharf jobs logs {} --follow`)",
        job.id, job.id
    ))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lock holder `HOST:PID` is a process of this host that no longer runs.
fn holder_is_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == hostname()
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}
