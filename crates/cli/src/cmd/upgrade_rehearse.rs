//! `wharf upgrade rehearse`: the upgrade tried on a copy first. The newest recorded
//! backup (or `--backup FILE`) is restored into a scratch store (an SQLite file beside
//! the data, or a database of its own on the registry's PostgreSQL server), every hop
//! of the plan is run there (expand, finalise and the background migrations, to
//! completion), each step timed with the rows it went through and the process's peak
//! memory, and the scratch store is removed. The real data is only read (for its size).
//!
//! The result is kept in `DATA_DIR/upgrade-rehearsal.json`, where `upgrade plan` shows
//! its forecast and `upgrade check` looks for it: a forecast scales each step's time by
//! how much more data there is now than in the backup.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::schema::DataSize;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

use super::StoreArgs;
pub use wharf_upgrade::rehearsal::{Measured, Rehearsal, RECORD_FILE};

/// The process's peak resident memory (VmHWM), MiB.
fn peak_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

pub fn run(
    store: &StoreArgs,
    backup: Option<PathBuf>,
    format: &str,
) -> anyhow::Result<std::process::ExitCode> {
    if format != "text" && format != "json" {
        bail!("--format is text or json, not {format:?}");
    }
    let json = format == "json";
    let config = store.to_config()?;
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let say = |text: String| {
        if !json {
            println!("{text}");
        }
    };
    let rehearsal = runtime.block_on(async {
        let backup = match backup {
            Some(b) => b,
            None => {
                // Reading the backups' record never creates a store.
                if let Ok(MetadataLocation::Sqlite(path)) = config.metadata_location() {
                    if !path.exists() {
                        bail!(
                            "there is no wharf data at {}: pass --data-dir (or --metadata), or --backup FILE",
                            path.display()
                        );
                    }
                }
                let meta = super::upgrade_apply::open_for_upgrade(&config).await?;
                let last = meta.backups(1).await?.into_iter().next().context(
                    "no backup is recorded: run `wharf backup --out FILE` first, or pass --backup FILE",
                )?;
                PathBuf::from(last.location)
            }
        };
        let progress = wharf_backup::Quiet;
        let verified = wharf_backup::verify(&backup, &progress)
            .await
            .with_context(|| format!("the backup {}", backup.display()))?;
        let header = verified.header.clone();
        let from = Version::parse(&header.wharf_version)
            .with_context(|| format!("the backup's version {:?}", header.wharf_version))?;
        let catalog = wharf_upgrade::Catalog::embedded();
        let mut versions = catalog.versions();
        if !versions.contains(&own) {
            versions.push(own.clone());
        }
        if from == own {
            bail!("the backup was written by {own}, this binary's version: there is no upgrade to rehearse (pass --backup with an older release's backup)");
        }
        let plan = wharf_upgrade::plan(&from, &own, &versions, false);
        if plan.path.last() != Some(&own.to_string()) {
            bail!(
                "no upgrade path from the backup's {from} to {own}: {}",
                plan.reason.unwrap_or_default()
            );
        }
        say(format!(
            "rehearsing {from} → {} on a copy of {}",
            plan.path.join(" → "),
            backup.display()
        ));

        // The scratch store: beside the data (an SQLite file) or on the same PostgreSQL
        // server, so the disk or server measured is the real one; removed whatever
        // happens.
        let scratch = Scratch::create(&config).await?;
        let measured = rehearse_on(&scratch, &backup, verified, &plan, &catalog, &own, &say).await;
        scratch.remove().await;
        let (data, steps) = measured?;
        anyhow::Ok(Rehearsal {
            at_ms: wharf_metastore::now_ms(),
            backup: backup.display().to_string(),
            from: from.to_string(),
            to: own.to_string(),
            path: plan.path.clone(),
            data,
            steps,
        })
    })?;

    // Kept for `upgrade plan` and `upgrade check`.
    let record = config.data_dir.join(RECORD_FILE);
    std::fs::write(&record, serde_json::to_vec_pretty(&rehearsal)?)
        .with_context(|| format!("cannot write {}", record.display()))?;
    let now = current_size(&config).unwrap_or_else(|| rehearsal.data.clone());
    if json {
        let forecast: Vec<serde_json::Value> = rehearsal
            .forecast(&now)
            .into_iter()
            .map(|(hop, step, secs)| serde_json::json!({"hop": hop, "step": step, "secs": secs}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "rehearsal": rehearsal, "data_now": now, "forecast": forecast
            }))?
        );
    } else {
        println!(
            "forecast for the real upgrade ({} manifests now, {} in the backup):",
            now.manifests, rehearsal.data.manifests
        );
        for line in rehearsal.forecast_lines(&now) {
            println!("  {line}");
        }
        println!("the scratch store is removed; kept: {}", record.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Restores `backup` into `scratch` and runs every hop of `plan` there, timing each step.
async fn rehearse_on(
    scratch: &Scratch,
    backup: &Path,
    verified: wharf_backup::Verified,
    plan: &wharf_upgrade::Plan,
    catalog: &wharf_upgrade::Catalog,
    own: &Version,
    say: &dyn Fn(String),
) -> anyhow::Result<(DataSize, Vec<Measured>)> {
    let header = verified.header.clone();
    let progress = wharf_backup::Quiet;
    let mut steps = Vec::new();

    let t = Instant::now();
    scratch
        .create_at_level(header.schema_level, &header.wharf_version)
        .await?;
    let meta = scratch.open().await?;
    let blobs: Arc<dyn wharf_blobstore::BlobStore> = Arc::new(wharf_blobstore::FsBlobStore::open(
        scratch.dir.path().join("blobs"),
    )?);
    let restored = wharf_backup::restore(wharf_backup::RestoreRequest {
        archive: backup,
        meta: meta.clone(),
        blobs,
        wharf_version: &header.wharf_version,
        schema_level: header.schema_level,
        replace: false,
        allow_version_mismatch: false,
        progress: &progress,
        verified: Some(verified),
    })
    .await
    .context("restoring the backup into the scratch store")?;
    drop(meta);
    let data = scratch.size().await?;
    steps.push(Measured {
        hop: "restore".into(),
        step: "restore".into(),
        secs: t.elapsed().as_secs_f64(),
        rows: Some(restored.rows),
        peak_mib: peak_mib(),
    });
    say(format!(
        "  restore: {} rows in {:.1} s ({} manifests)",
        restored.rows,
        t.elapsed().as_secs_f64(),
        data.manifests
    ));

    let scratch_config = scratch.config();
    for hop in &plan.hops {
        let to = Version::parse(&hop.to)?;
        let level =
            wharf_upgrade::work::schema_level(catalog, &hop.to, own, wharf_server::SCHEMA_LEVEL)
                .with_context(|| format!("{to} is not in the release catalog"))?;
        let name = format!("{} → {}", hop.from, hop.to);
        let t = Instant::now();
        scratch.expand(level).await?;
        steps.push(measured(&name, "expand", t, None));
        let t = Instant::now();
        scratch.finalise(level, &hop.to).await?;
        steps.push(measured(&name, "finalise", t, None));
        // The background migrations the hop's level brings, run here to the end.
        for (l, action) in wharf_metastore::schema::BACKGROUND {
            if *l != level {
                continue;
            }
            let meta = scratch.open().await?;
            let pending = meta.count_manifests_without_refs().await?;
            let t = Instant::now();
            super::upgrade_apply::run_background_here(&scratch_config, meta, action).await?;
            steps.push(measured(&name, action, t, Some(pending)));
        }
        for s in steps.iter().filter(|s| s.hop == name) {
            say(format!(
                "  {name} {}: {:.2} s{}, peak memory {} MiB",
                s.step,
                s.secs,
                s.rows.map_or(String::new(), |r| format!(
                    " ({r} rows, {:.0} rows/s)",
                    r as f64 / s.secs.max(1e-6)
                )),
                s.peak_mib
            ));
        }
    }
    Ok((data, steps))
}

/// Where the copy is rehearsed on: an SQLite file in a directory beside the data, or a
/// database of its own on the registry's PostgreSQL server. The directory also takes
/// what the job worker writes.
struct Scratch {
    dir: tempfile::TempDir,
    location: MetadataLocation,
    /// The registry's PostgreSQL URL, and the scratch database's name on that server.
    postgres: Option<(String, String)>,
}

impl Scratch {
    async fn create(config: &wharf_server::Config) -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(".wharf-rehearsal-")
            .tempdir_in(existing_dir(&config.data_dir)?)
            .context("cannot make a scratch directory beside the data")?;
        Ok(
            match config.metadata_location().map_err(anyhow::Error::msg)? {
                MetadataLocation::Sqlite(_) => Scratch {
                    location: MetadataLocation::Sqlite(dir.path().join("metadata.db")),
                    dir,
                    postgres: None,
                },
                MetadataLocation::Postgres(url) => {
                    let name = format!(
                        "wharf_rehearsal_{}_{}",
                        std::process::id(),
                        wharf_metastore::now_ms()
                    );
                    let mut scratch_url = reqwest::Url::parse(&url.0).context(
                        "rehearsing on PostgreSQL needs the metadata store as a postgres:// URL",
                    )?;
                    scratch_url.set_path(&format!("/{name}"));
                    PgMetaStore::create_database(&url.0, &name)
                    .await
                    .with_context(|| format!("cannot create the scratch database {name} (the user needs CREATEDB)"))?;
                    Scratch {
                        location: MetadataLocation::Postgres(wharf_server::config::MetadataUrl(
                            scratch_url.to_string(),
                        )),
                        dir,
                        postgres: Some((url.0, name)),
                    }
                }
            },
        )
    }

    /// Removes the scratch database (if any) and directory; a failure is said, not fatal.
    async fn remove(self) {
        if let Some((url, name)) = &self.postgres {
            if let Err(e) = PgMetaStore::drop_database(url, name).await {
                eprintln!("warning: the scratch database {name} could not be dropped ({e}); drop it by hand");
            }
        }
        drop(self.dir);
    }

    /// Settings whose stores are the scratch ones (for the job worker).
    fn config(&self) -> wharf_server::Config {
        wharf_server::Config {
            data_dir: self.dir.path().to_path_buf(),
            metadata: match &self.location {
                MetadataLocation::Postgres(u) => Some(u.clone()),
                MetadataLocation::Sqlite(_) => None,
            },
            ..wharf_server::Config::default()
        }
    }

    async fn create_at_level(&self, level: u32, version: &str) -> anyhow::Result<()> {
        match &self.location {
            MetadataLocation::Sqlite(p) => {
                SqliteMetaStore::create_at_level(p, level, version).await?
            }
            MetadataLocation::Postgres(u) => {
                PgMetaStore::create_at_level(&u.0, level, version).await?
            }
        }
        Ok(())
    }

    async fn open(&self) -> anyhow::Result<Arc<dyn MetaStore>> {
        Ok(match &self.location {
            MetadataLocation::Sqlite(p) => Arc::new(SqliteMetaStore::open_for_upgrade(p).await?),
            MetadataLocation::Postgres(u) => Arc::new(PgMetaStore::open_for_upgrade(&u.0).await?),
        })
    }

    async fn expand(&self, level: u32) -> anyhow::Result<()> {
        match &self.location {
            MetadataLocation::Sqlite(p) => SqliteMetaStore::expand(p, level).await?,
            MetadataLocation::Postgres(u) => PgMetaStore::expand(&u.0, level).await?,
        };
        Ok(())
    }

    async fn finalise(&self, level: u32, version: &str) -> anyhow::Result<()> {
        match &self.location {
            MetadataLocation::Sqlite(p) => SqliteMetaStore::finalise(p, level, version).await?,
            MetadataLocation::Postgres(u) => PgMetaStore::finalise(&u.0, level, version).await?,
        };
        Ok(())
    }

    async fn size(&self) -> anyhow::Result<DataSize> {
        Ok(match &self.location {
            MetadataLocation::Sqlite(p) => wharf_metastore::schema::size_sqlite(p)?,
            MetadataLocation::Postgres(u) => wharf_metastore::schema::size_postgres(&u.0).await?,
        })
    }
}

fn measured(hop: &str, step: &str, t: Instant, rows: Option<u64>) -> Measured {
    Measured {
        hop: hop.into(),
        step: step.into(),
        secs: t.elapsed().as_secs_f64(),
        rows,
        peak_mib: peak_mib(),
    }
}

fn existing_dir(dir: &Path) -> anyhow::Result<&Path> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The real data's size now (read only), when it can be measured.
pub fn current_size(config: &wharf_server::Config) -> Option<DataSize> {
    match config.metadata_location().ok()? {
        MetadataLocation::Sqlite(path) => {
            if !path.exists() {
                return None;
            }
            wharf_metastore::schema::size_sqlite(&path).ok()
        }
        MetadataLocation::Postgres(url) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?
            .block_on(wharf_metastore::schema::size_postgres(&url.0))
            .ok(),
    }
}
