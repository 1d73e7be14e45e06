//! `wharf upgrade apply` with the local driver: the registry is stopped, this command
//! moves its data to this binary's version. The steps, each recorded in the journal
//! in the metadata store when done, so that a rerun continues after any interruption:
//!
//! 1. `checks`: the upgrade is allowed by the rules; no replica is serving; the data
//!    directory takes a write and an fsync.
//! 2. `backup`: a metadata backup (unless skipped with a recorded reason).
//! 3. `expand`: the schema migrations, in one transaction (all or nothing); releases
//!    older than this one still read the data.
//! 4. `finalise`: the expanded levels become the data's, and this version the cluster's;
//!    older releases refuse the data from now on.
//! 5. `background`: background migrations queued as jobs (metadatastoremigration).
//!
//! Data more than one release behind goes through every required stop of the plan in
//! one run: each hop is these five steps, journalled under its own pair of versions,
//! and an intermediate hop's background migrations run here, to their end, before the
//! next hop (nothing else would run them: the registry is stopped).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use semver::Version;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

use super::StoreArgs;

use wharf_upgrade::events::{Envelope, Event, HopRef};
use wharf_upgrade::status::LOCAL_STEPS as STEPS;

/// What `apply` tells its user: lines of text (with progress bars on a terminal), or
/// with `--format json` one JSON event per line on stdout, for automation.
#[derive(Clone, Copy)]
pub struct Report {
    pub(crate) json: bool,
}

impl Report {
    pub fn new(format: &str) -> anyhow::Result<Report> {
        match format {
            "text" => Ok(Report { json: false }),
            "json" => Ok(Report { json: true }),
            other => bail!("--format is text or json, not {other:?}"),
        }
    }

    /// Prints the event: as text, or as one line of JSON (`{"v": 1, "event": …}`).
    pub(crate) fn emit(&self, event: Event) {
        if self.json {
            println!("{}", serde_json::json!(Envelope::new(event)));
        } else if let Some(text) = event.text() {
            println!("{text}");
        }
        let _ = std::io::stdout().flush();
    }

    fn progress(&self) -> Box<dyn wharf_backup::Progress> {
        if self.json {
            Box::new(JsonProgress::default())
        } else {
            Box::new(super::backup::Bars::new())
        }
    }
}

/// Backup progress as JSON events: each phase's start and end, and its bytes at most
/// every quarter second.
#[derive(Default)]
struct JsonProgress {
    state: std::sync::Mutex<(String, Option<u64>, u64, Option<std::time::Instant>)>,
}

impl wharf_backup::Progress for JsonProgress {
    fn step(&self, name: &str, total_bytes: Option<u64>) {
        *self.state.lock().unwrap() = (name.to_string(), total_bytes, 0, None);
        Report { json: true }.emit(Event::Progress {
            step: "backup".into(),
            phase: name.into(),
            bytes: 0,
            total_bytes,
            summary: None,
        });
    }

    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().unwrap();
        st.2 += bytes;
        let due =
            st.3.is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(250));
        if due {
            st.3 = Some(std::time::Instant::now());
            Report { json: true }.emit(Event::Progress {
                step: "backup".into(),
                phase: st.0.clone(),
                bytes: st.2,
                total_bytes: st.1,
                summary: None,
            });
        }
    }

    fn finish(&self, summary: &str) {
        let st = self.state.lock().unwrap();
        Report { json: true }.emit(Event::Progress {
            step: "backup".into(),
            phase: st.0.clone(),
            bytes: st.2,
            total_bytes: st.1,
            summary: Some(summary.into()),
        });
    }
}

pub fn run(
    store: &StoreArgs,
    rolling: &super::upgrade_rolling::RollingArgs,
    yes: bool,
    backup_dir: Option<PathBuf>,
    skip_backup: Option<String>,
    report: Report,
) -> anyhow::Result<std::process::ExitCode> {
    let result = apply(store, rolling, yes, backup_dir, skip_backup, report);
    if let Err(e) = &result {
        report.emit(Event::Failed {
            error: format!("{e:#}"),
        });
    }
    result
}

fn apply(
    store: &StoreArgs,
    rolling: &super::upgrade_rolling::RollingArgs,
    yes: bool,
    backup_dir: Option<PathBuf>,
    skip_backup: Option<String>,
    report: Report,
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
        let meta = open_for_upgrade(&config).await?;
        let catalog = wharf_upgrade::Catalog::embedded();
        let mut versions = catalog.versions();
        versions.push(own.clone());
        // Resuming: an upgrade into the data's version may have steps left (its
        // background migrations, say), whether it was the last hop or one before.
        let journal_into_data = meta.journal(&data.to_string()).await?;
        let unfinished_into_data = unfinished_from(&journal_into_data)?;
        if data == own && unfinished_into_data.is_none() {
            report.emit(Event::Finished {
                version: own.to_string(),
                changed: Some(false),
                rolled_back: false,
            });
            return Ok(std::process::ExitCode::SUCCESS);
        }
        // The hops: the unfinished one into the data's version, then the plan's stops.
        let mut hops: Vec<(Version, Version)> = Vec::new();
        if let Some(f) = unfinished_into_data {
            hops.push((f, data.clone()));
        }
        let mut plan_warnings = Vec::new();
        if data != own {
            let plan = wharf_upgrade::plan(&data, &own, &versions, false);
            let reachable = plan.path.last() == Some(&own.to_string());
            if !reachable || rolling.driver != "local" && plan.path.len() != 1 {
                report.emit(Event::Refused {
                    from: data.to_string(),
                    to: own.to_string(),
                    driver: Some(rolling.driver.clone()),
                    reason: plan.reason.clone(),
                    path: plan.path.clone(),
                    plan: serde_json::to_value(&plan)?,
                });
                return Ok(std::process::ExitCode::FAILURE);
            }
            let mut previous = data.clone();
            for stop in &plan.path {
                let stop = Version::parse(stop)?;
                hops.push((previous, stop.clone()));
                previous = stop;
            }
            plan_warnings = plan.warnings;
        }
        if rolling.driver != "local" {
            let (from, to) = hops.last().expect("at least one hop").clone();
            return super::upgrade_rolling::apply(
                store,
                rolling,
                &from,
                &to,
                &plan_warnings,
                yes,
                backup_dir,
                skip_backup,
                report,
            )
            .await;
        }
        if hops.len() > 1 {
            report.emit(Event::Plan {
                hops: hops
                    .iter()
                    .map(|(f, t)| HopRef {
                        from: f.to_string(),
                        to: t.to_string(),
                    })
                    .collect(),
            });
        }
        let (first_from, last_to) = (hops[0].0.clone(), hops[hops.len() - 1].1.clone());
        if !yes {
            if report.json || !std::io::stdin().is_terminal() {
                bail!("not on a terminal: pass --yes to upgrade without confirmation");
            }
            print!("Upgrade the data from {first_from} to {last_to}? A backup comes first. [y/N] ");
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!("not confirmed; nothing changed");
            }
        }
        let holder = take_lock(meta.as_ref(), report).await?;
        let result = async {
            for (from, to) in &hops {
                let journal = meta.journal(&to.to_string()).await?;
                let done: Vec<&str> = journal
                    .iter()
                    .filter(|e| e.from_version == from.to_string())
                    .map(|e| e.step.as_str())
                    .collect();
                let resuming = !done.is_empty();
                report.emit(Event::Start {
                    from: from.to_string(),
                    to: to.to_string(),
                    resuming,
                    driver: Some("local".into()),
                    steps: STEPS.iter().map(|s| s.to_string()).collect(),
                    warnings: plan_warnings.clone(),
                    rollback: false,
                });
                let hop = Hop {
                    from,
                    to,
                    level: if *to == own {
                        wharf_server::SCHEMA_LEVEL
                    } else {
                        catalog
                            .releases
                            .iter()
                            .find(|r| r.version == *to)
                            .map(|r| r.schema_level)
                            .with_context(|| format!("{to} is not in the release catalog"))?
                    },
                    last: *to == own,
                };
                steps(
                    &config,
                    &location,
                    meta.clone(),
                    &hop,
                    &done,
                    &holder,
                    backup_dir.clone(),
                    skip_backup.clone(),
                    report,
                )
                .await?;
            }
            anyhow::Ok(())
        }
        .await;
        meta.release_upgrade_lock(&holder).await?;
        result?;
        report.emit(Event::Finished {
            version: own.to_string(),
            changed: Some(true),
            rolled_back: false,
        });
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// The version a local upgrade recorded in `journal` started from, if its last step is
/// not recorded yet.
fn unfinished_from(journal: &[JournalEntry]) -> anyhow::Result<Option<Version>> {
    Ok(wharf_upgrade::status::unfinished_from(journal, &STEPS)
        .map(Version::parse)
        .transpose()?)
}

/// One release-to-release step of an upgrade.
struct Hop<'a> {
    from: &'a Version,
    to: &'a Version,
    /// The schema level of `to`.
    level: u32,
    /// The hop to this binary's version: its background migrations run on the
    /// replicas; an earlier hop's run here, to completion, before the next hop.
    last: bool,
}

/// Takes the upgrade lock for this process; returns the holder name.
pub(crate) async fn take_lock(meta: &dyn MetaStore, report: Report) -> anyhow::Result<String> {
    let holder = format!("{}:{}", hostname(), std::process::id());
    if let Err(other) = meta.take_upgrade_lock(&holder, 5 * 60_000).await? {
        // A holder on this host whose process is gone (killed, crashed) is taken
        // over at once; elsewhere, when it has not renewed the lock for 5 minutes.
        if holder_is_gone(&other) {
            report.emit(Event::LockTakenOver {
                from: other.to_string(),
            });
            if let Err(again) = meta.take_upgrade_lock(&holder, 0).await? {
                bail!("could not take over the upgrade lock from {again}");
            }
        } else {
            bail!("another upgrade holds the lock ({other}); it is taken over when it has not renewed it for 5 minutes");
        }
    }
    Ok(holder)
}

/// The metadata store at whatever schema level its data is (older levels included),
/// for reading and upgrading it.
pub async fn open_for_upgrade(
    config: &wharf_server::Config,
) -> anyhow::Result<std::sync::Arc<dyn MetaStore>> {
    Ok(
        match config.metadata_location().map_err(anyhow::Error::msg)? {
            MetadataLocation::Sqlite(p) => {
                std::sync::Arc::new(SqliteMetaStore::open_for_upgrade(&p).await?)
            }
            MetadataLocation::Postgres(u) => {
                std::sync::Arc::new(PgMetaStore::open_for_upgrade(&u.0).await?)
            }
        },
    )
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    config: &wharf_server::Config,
    location: &MetadataLocation,
    meta: std::sync::Arc<dyn MetaStore>,
    hop: &Hop<'_>,
    done: &[&str],
    holder: &str,
    backup_dir: Option<PathBuf>,
    skip_backup: Option<String>,
    report: Report,
) -> anyhow::Result<()> {
    let (from, to, level) = (hop.from, hop.to, hop.level);
    let total = STEPS.len();
    for (i, step) in STEPS.iter().enumerate() {
        if done.contains(step) {
            report.emit(Event::Step {
                n: Some(i + 1),
                of: Some(total),
                step: step.to_string(),
                status: "done_before".into(),
                detail: None,
            });
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
                    backup(config, meta.clone(), from, to, backup_dir.clone(), report).await?,
                ),
            },
            "expand" => {
                let applied = match location {
                    MetadataLocation::Sqlite(p) => SqliteMetaStore::expand(p, level).await?,
                    MetadataLocation::Postgres(u) => PgMetaStore::expand(&u.0, level).await?,
                };
                ("done", format!("schema levels applied: {applied:?}"))
            }
            "finalise" => {
                let version = to.to_string();
                let levels = match location {
                    MetadataLocation::Sqlite(p) => {
                        SqliteMetaStore::finalise(p, level, &version).await?
                    }
                    MetadataLocation::Postgres(u) => {
                        PgMetaStore::finalise(&u.0, level, &version).await?
                    }
                };
                (
                    "done",
                    format!("the data belongs to {to} (schema levels finalised: {levels:?})"),
                )
            }
            _ if hop.last => ("done", background(config, location).await?),
            _ => (
                "done",
                background_here(config, meta.clone(), level, report).await?,
            ),
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
        report.emit(Event::Step {
            n: Some(i + 1),
            of: Some(total),
            step: step.to_string(),
            status: status.to_string(),
            detail: Some(detail.clone()),
        });
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

pub(crate) async fn backup(
    config: &wharf_server::Config,
    meta: std::sync::Arc<dyn MetaStore>,
    from: &Version,
    to: &Version,
    dir: Option<PathBuf>,
    report: Report,
) -> anyhow::Result<String> {
    let dir = dir.unwrap_or_else(|| config.data_dir.join("backups"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stamp = wharf_metastore::now_ms() / 1000;
    let out = dir.join(format!("pre-upgrade-{from}-to-{to}-{stamp}.tar"));
    let level = meta.schema_level().await?;
    let progress = report.progress();
    let s = wharf_backup::create(wharf_backup::BackupRequest {
        meta,
        blobs: None,
        out: &out,
        wharf_version: &from.to_string(),
        schema_level: level,
        source: wharf_server::run::metastore_kind(config),
        progress: progress.as_ref(),
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

pub(crate) async fn background(
    config: &wharf_server::Config,
    location: &MetadataLocation,
) -> anyhow::Result<String> {
    let meta: Box<dyn MetaStore> = match location {
        MetadataLocation::Sqlite(p) => Box::new(SqliteMetaStore::open(p).await?),
        MetadataLocation::Postgres(u) => Box::new(PgMetaStore::open(&u.0).await?),
    };
    let pending = meta.count_manifests_without_refs().await?;
    let migration = if pending == 0 {
        "no background migration needed".to_string()
    } else {
        let job = queue_once(meta.as_ref(), "metadatastoremigration").await?;
        format!(
            "metadatastoremigration queued as job {} for {pending} manifests (garbage collection waits for it; follow it with `wharf jobs logs {} --follow`)",
            job.id, job.id
        )
    };
    Ok(match refresh_vulndb(config, meta.as_ref()).await? {
        Some(refresh) => format!("{migration}; {refresh}"),
        None => migration,
    })
}

/// The job `action` waiting or running already, else a new one.
async fn queue_once(
    meta: &dyn MetaStore,
    action: &str,
) -> anyhow::Result<wharf_metastore::jobs::Job> {
    let active = meta
        .jobs(Some(action), None, None, 20)
        .await?
        .into_iter()
        .find(|j| !j.status.is_final());
    Ok(match active {
        Some(j) => j,
        None => wharf_jobs::enqueue(meta, action, "{}").await?,
    })
}

/// After an upgrade the vulnerability database is refreshed (the guide's "download the
/// vulnerability database again"; the new release may match differently): with
/// `vulndb_url` set, a `vulndb_update` job; otherwise, with a database imported, a
/// `vulndb_rematch` job; neither without a database. Nothing below schema level 3 (no
/// scanning data).
pub(crate) async fn refresh_vulndb(
    config: &wharf_server::Config,
    meta: &dyn MetaStore,
) -> anyhow::Result<Option<String>> {
    if meta.schema_level().await? < 3 {
        return Ok(None);
    }
    let action = if config.vulndb_url.is_some() {
        "vulndb_update"
    } else if meta.current_vulndb().await?.is_some() {
        "vulndb_rematch"
    } else {
        // Nothing imported, nothing to refresh (the cluster status says so).
        return Ok(None);
    };
    let job = queue_once(meta, action).await?;
    Ok(Some(format!(
        "{action} queued as job {} to refresh the vulnerability database",
        job.id
    )))
}

/// How long an intermediate hop's background migrations may take here.
const BACKGROUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// An intermediate hop's background migrations, run by this process to completion:
/// the next hop may not start before them (the guide's rule), and no replica is
/// running to do them. Progress is reported as `waiting_for_migration` events.
async fn background_here(
    config: &wharf_server::Config,
    meta: std::sync::Arc<dyn MetaStore>,
    level: u32,
    report: Report,
) -> anyhow::Result<String> {
    // The background migrations the hop's level brings: they fill in, for data older
    // releases wrote, what the level's release needs.
    let actions: Vec<&str> = wharf_metastore::schema::BACKGROUND
        .iter()
        .filter(|(l, _)| *l == level)
        .map(|(_, name)| *name)
        .collect();
    if actions.is_empty() || meta.count_manifests_without_refs().await? == 0 {
        return Ok("no background migration needed".into());
    }
    let mut summaries = Vec::new();
    for action in &actions {
        let j = run_background(config, meta.clone(), action, Some(report)).await?;
        summaries.push(format!("{action} done (job {})", j.id));
    }
    Ok(summaries.join("; "))
}

/// Runs the background migration `action` here, to its end, with no report (for a
/// rehearsal on a scratch store).
pub(crate) async fn run_background_here(
    config: &wharf_server::Config,
    meta: std::sync::Arc<dyn MetaStore>,
    action: &str,
) -> anyhow::Result<()> {
    run_background(config, meta, action, None).await.map(|_| ())
}

/// Runs the background migration `action` with a job worker of this process until its
/// job ends (bounded by BACKGROUND_TIMEOUT), reporting its progress every 2 s.
async fn run_background(
    config: &wharf_server::Config,
    meta: std::sync::Arc<dyn MetaStore>,
    action: &str,
    report: Option<Report>,
) -> anyhow::Result<wharf_metastore::jobs::Job> {
    let blobs = wharf_server::run::open_blobstore(config)?;
    let stores = wharf_server::run::job_stores(config, meta.clone(), blobs);
    let job = match meta
        .jobs(Some(action), None, None, 20)
        .await?
        .into_iter()
        .find(|j| !j.status.is_final())
    {
        Some(j) => j,
        None => wharf_jobs::enqueue(meta.as_ref(), action, "{}").await?,
    };
    let worker = wharf_jobs::Worker::new(
        "wharf-upgrade",
        crate::VERSION,
        meta.clone(),
        wharf_jobs::actions::all(&stores)
            .into_iter()
            .filter(|a| a.name() == action)
            .collect(),
        wharf_jobs::WorkerConfig::with_heartbeat(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(2),
        ),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));
    let started = std::time::Instant::now();
    let mut last_report = None::<std::time::Instant>;
    // Bounded by BACKGROUND_TIMEOUT; one look at the job every half second.
    let outcome = loop {
        let j = meta
            .job(job.id)
            .await?
            .with_context(|| format!("job {} disappeared", job.id))?;
        if j.status.is_final() {
            break Ok(j);
        }
        if started.elapsed() > BACKGROUND_TIMEOUT {
            break Err(anyhow::anyhow!(
                "{action} (job {}) did not finish within {} hours; it goes on when a replica of a later release runs it; follow it with `wharf jobs logs {} --follow`, then rerun `wharf upgrade apply`",
                job.id,
                BACKGROUND_TIMEOUT.as_secs() / 3600,
                job.id
            ));
        }
        if last_report.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(2)) {
            last_report = Some(std::time::Instant::now());
            let progress: Option<serde_json::Value> = j
                .progress
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok());
            if let Some(report) = report {
                report.emit(Event::WaitingForMigration {
                    action: action.to_string(),
                    job: j.id,
                    status: j.status.as_str().to_string(),
                    attempts: j.attempts,
                    progress,
                });
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let _ = stop.send(true);
    let _ = running.await;
    let j = outcome?;
    if j.status.as_str() != "done" {
        bail!(
            "{action} (job {}) ended {} after {} attempt(s): {}; see `wharf jobs logs {}`; rerun `wharf upgrade apply` to try again",
            j.id,
            j.status.as_str(),
            j.attempts,
            j.last_error.as_deref().unwrap_or("no error recorded"),
            j.id
        );
    }
    Ok(j)
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lock holder `HOST:PID` is a process of this host that no longer runs.
pub(crate) fn holder_is_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == hostname()
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}
