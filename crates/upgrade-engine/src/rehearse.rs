//! `rehearse`: the newest recorded backup (or a given one) restored into a scratch
//! store (an SQLite file beside the data, or a database of its own on the registry's
//! PostgreSQL server), every hop of the plan run there, background migrations
//! included, each step measured (seconds, rows, peak memory); then the scratch store
//! is removed. The real data is never touched: a background migration that reads
//! blobs reads the registry's own, and writes none. The result is kept in
//! `DATA_DIR/upgrade-rehearsal.json`, from which `upgrade plan` forecasts and
//! `upgrade check` warns when there is none.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::schema::DataSize;
use wharf_metastore::{PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

use crate::{Engine, Event};

pub use wharf_upgrade::rehearsal::{Measured, Rehearsal, RECORD_FILE};

/// What is rehearsed: a verified backup, its release, and the plan from there.
pub struct Source {
    pub backup: PathBuf,
    pub from: Version,
    pub plan: wharf_upgrade::Plan,
    verified: wharf_backup::Verified,
}

/// How long a rehearsal's background migration may run.
const REHEARSAL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

impl Engine {
    /// Finds the backup to rehearse (`backup`, or the newest recorded), verifies it,
    /// and plans the upgrade from its release to this one. Changes nothing.
    pub async fn rehearsal_source(&self, backup: Option<PathBuf>) -> anyhow::Result<Source> {
        let own = &self.own;
        let backup = match backup {
            Some(b) => b,
            None => {
                // Reading the backups' record never creates a store.
                if let Ok(MetadataLocation::Sqlite(path)) = self.config.metadata_location() {
                    if !path.exists() {
                        bail!(
                            "there is no wharf data at {}: pass --data-dir (or --metadata), or --backup FILE",
                            path.display()
                        );
                    }
                }
                let meta = crate::store::open_for_upgrade(&self.config).await?;
                let last = meta.backups(1).await?.into_iter().next().context(
                    "no backup is recorded: run `wharf backup --out FILE` first, or pass --backup FILE",
                )?;
                PathBuf::from(last.location)
            }
        };
        let verified = wharf_backup::verify(&backup, &wharf_backup::Quiet)
            .await
            .with_context(|| format!("the backup {}", backup.display()))?;
        let from = Version::parse(&verified.header.wharf_version)
            .with_context(|| format!("the backup's version {:?}", verified.header.wharf_version))?;
        let mut versions = wharf_upgrade::Catalog::embedded().versions();
        if !versions.contains(own) {
            versions.push(own.clone());
        }
        if from == *own {
            bail!("the backup was written by {own}, this binary's version: there is no upgrade to rehearse (pass --backup with an older release's backup)");
        }
        let plan = wharf_upgrade::plan(&from, own, &versions, false);
        if plan.path.last() != Some(&own.to_string()) {
            bail!(
                "no upgrade path from the backup's {from} to {own}: {}",
                plan.reason.unwrap_or_default()
            );
        }
        Ok(Source {
            backup,
            from,
            plan,
            verified,
        })
    }

    /// Rehearses `source`, reporting each measured step as a `step` event, and keeps
    /// the result in DATA_DIR (returned with the file's path).
    pub async fn rehearse(&self, source: Source) -> anyhow::Result<(Rehearsal, PathBuf)> {
        // The scratch store: beside the data (an SQLite file) or on the same PostgreSQL
        // server, so the disk or server measured is the real one; removed whatever
        // happens.
        let scratch = Scratch::create(&self.config).await?;
        let measured = self
            .rehearse_on(&scratch, &source.backup, source.verified, &source.plan)
            .await;
        scratch.remove().await;
        let (data, steps) = measured?;
        let rehearsal = Rehearsal {
            at_ms: wharf_metastore::now_ms(),
            backup: source.backup.display().to_string(),
            from: source.from.to_string(),
            to: self.own.to_string(),
            path: source.plan.path.clone(),
            data,
            steps,
        };
        // Kept for `upgrade plan` and `upgrade check`.
        let record = self.config.data_dir.join(RECORD_FILE);
        std::fs::write(&record, serde_json::to_vec_pretty(&rehearsal)?)
            .with_context(|| format!("cannot write {}", record.display()))?;
        Ok((rehearsal, record))
    }

    fn measured_event(&self, m: &Measured) {
        self.emit(Event::Step {
            n: None,
            of: None,
            step: if m.hop == m.step {
                m.step.clone()
            } else {
                format!("{} {}", m.hop, m.step)
            },
            status: "done".into(),
            detail: Some(format!(
                "{:.2} s{}, peak memory {} MiB",
                m.secs,
                m.rows.map_or(String::new(), |r| format!(
                    " ({r} rows, {:.0} rows/s)",
                    r as f64 / m.secs.max(1e-6)
                )),
                m.peak_mib
            )),
        });
    }

    /// Restores `backup` into `scratch` and runs every hop of `plan` there, timing each
    /// step.
    async fn rehearse_on(
        &self,
        scratch: &Scratch,
        backup: &Path,
        verified: wharf_backup::Verified,
        plan: &wharf_upgrade::Plan,
    ) -> anyhow::Result<(DataSize, Vec<Measured>)> {
        let header = verified.header.clone();
        let mut steps = Vec::new();

        let t = Instant::now();
        scratch
            .create_at_level(header.schema_level, &header.wharf_version)
            .await?;
        let meta = crate::store::open_at(&scratch.location).await?;
        let blobs: Arc<dyn wharf_blobstore::BlobStore> = Arc::new(
            wharf_blobstore::FsBlobStore::open(scratch.dir.path().join("blobs"))?,
        );
        let restored = wharf_backup::restore(wharf_backup::RestoreRequest {
            archive: backup,
            meta: meta.clone(),
            blobs,
            wharf_version: &header.wharf_version,
            schema_level: header.schema_level,
            replace: false,
            allow_version_mismatch: false,
            progress: &wharf_backup::Quiet,
            verified: Some(verified),
        })
        .await
        .context("restoring the backup into the scratch store")?;
        drop(meta);
        let data = scratch.size().await?;
        steps.push(measured("restore", "restore", t, Some(restored.rows)));
        self.measured_event(&steps[0]);

        let scratch_config = scratch.config();
        for hop in &plan.hops {
            let to = Version::parse(&hop.to)?;
            let level = self.level_of(&to)?;
            let name = format!("{} → {}", hop.from, hop.to);
            let first = steps.len();
            let t = Instant::now();
            crate::store::expand(&scratch.location, level).await?;
            steps.push(measured(&name, "expand", t, None));
            let t = Instant::now();
            crate::store::finalise(&scratch.location, level, &hop.to).await?;
            steps.push(measured(&name, "finalise", t, None));
            // The background migrations the data needs at this level, run here to
            // the end.
            let meta = crate::store::open_at(&scratch.location).await?;
            for (action, rows) in crate::background::unfinished(meta.as_ref(), level).await? {
                let t = Instant::now();
                self.run_job_here(
                    &scratch_config,
                    meta.clone(),
                    action,
                    REHEARSAL_TIMEOUT,
                    false,
                )
                .await?;
                steps.push(measured(&name, action, t, Some(rows)));
            }
            for s in &steps[first..] {
                self.measured_event(s);
            }
        }
        Ok((data, steps))
    }
}

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

/// Where the copy is rehearsed on: an SQLite file in a directory beside the data, or a
/// database of its own on the registry's PostgreSQL server. The directory also takes
/// what the job worker writes.
struct Scratch {
    dir: tempfile::TempDir,
    location: MetadataLocation,
    /// The registry's PostgreSQL URL, and the scratch database's name on that server.
    postgres: Option<(String, String)>,
    /// The registry's own blob store (its settings), which background migrations that
    /// read blobs (`manifestsummaries` reads image configurations) read as the real
    /// upgrade will: only read, never written.
    blobs: BlobSettings,
}

struct BlobSettings {
    blobs: String,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
}

impl Scratch {
    async fn create(config: &wharf_server::Config) -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix(".wharf-rehearsal-")
            .tempdir_in(existing_dir(&config.data_dir)?)
            .context("cannot make a scratch directory beside the data")?;
        let blobs = BlobSettings {
            blobs: config
                .blobs
                .clone()
                .unwrap_or_else(|| config.data_dir.display().to_string()),
            s3_endpoint: config.s3_endpoint.clone(),
            s3_region: config.s3_region.clone(),
        };
        Ok(
            match config.metadata_location().map_err(anyhow::Error::msg)? {
                MetadataLocation::Sqlite(_) => Scratch {
                    location: MetadataLocation::Sqlite(dir.path().join("metadata.db")),
                    dir,
                    postgres: None,
                    blobs,
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
                        blobs,
                    }
                }
            },
        )
    }

    /// Removes the scratch database (if any) and directory; a failure is said, not fatal.
    async fn remove(self) {
        if let Some((url, name)) = &self.postgres {
            if let Err(e) = PgMetaStore::drop_database(url, name).await {
                tracing::warn!(database = %name, error = %e, "the scratch database could not be dropped; drop it by hand");
            }
        }
        drop(self.dir);
    }

    /// Settings for the job worker: the scratch metadata store, the registry's blobs.
    fn config(&self) -> wharf_server::Config {
        wharf_server::Config {
            data_dir: self.dir.path().to_path_buf(),
            metadata: match &self.location {
                MetadataLocation::Postgres(u) => Some(u.clone()),
                MetadataLocation::Sqlite(_) => None,
            },
            blobs: Some(self.blobs.blobs.clone()),
            s3_endpoint: self.blobs.s3_endpoint.clone(),
            s3_region: self.blobs.s3_region.clone(),
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
