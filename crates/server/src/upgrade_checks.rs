//! The pre-flight checks of an upgrade (docs/upgrading.md), each PASS, WARN, FAIL or
//! SKIPPED with what it measured and how to fix a failure: run by `wharf upgrade check`
//! and `upgrade apply`, and offered read-only by `GET /api/v0/upgrade/check` for the
//! web UI's system page.
//!
//! A store that does not open (a full or read-only disk, a database server that is down)
//! does not stop the checks: the `database` check says why, the checks that read the
//! metadata store fail as not measured, and the others (the data directory, memory)
//! still run, so the operator sees the cause.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use crate::config::MetadataLocation;
use anyhow::Context;
use semver::{Version, VersionReq};
use wharf_metastore::jobs::JobStatus;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_upgrade::{Catalog, Release};

pub const PASS: &str = "pass";
pub const FAIL: &str = "fail";
pub const SKIPPED: &str = "skipped";
/// Worth knowing, not a reason to stop: never counted as a failure.
pub const WARN: &str = "warn";

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    /// [`PASS`], [`WARN`], [`FAIL`] or [`SKIPPED`]
    pub status: &'static str,
    pub measured: String,
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, measured: String, fix: &str) -> Check {
    Check {
        name,
        status: if ok { PASS } else { FAIL },
        measured,
        fix: (!ok).then(|| fix.to_string()),
    }
}

pub struct Options {
    pub max_backup_age: Duration,
    pub skips: Vec<(String, String)>,
    /// The release catalog the checks go by: the built-in one or `--catalog FILE`.
    pub catalog: Catalog,
    /// The replicas are replaced while they serve (the docker and external drivers),
    /// instead of being stopped first (the local driver).
    pub rolling: bool,
}

pub const NAMES: &[&str] = &[
    "path",
    "database",
    "blob-store",
    "backup",
    "replicas",
    "clock-drift",
    "data-dir",
    "memory",
    "background-migrations",
    "gc",
    "vulnerability-database",
    "content-caches",
    "rehearsal",
];

/// Largest tolerated difference between a replica's clock and the metadata store's.
const MAX_CLOCK_DRIFT_MS: i64 = 1000;
/// Less free space than this fraction of the data directory's file system fails.
const MIN_FREE_FRACTION: f64 = 0.05;

/// The catalog entry whose supported components apply to an upgrade to `to`: its own;
/// for a pre-release (a development build), the release it leads to; otherwise the
/// newest release in the catalog.
pub fn target_release<'a>(catalog: &'a Catalog, to: &Version) -> &'a Release {
    catalog
        .release(to)
        .or_else(|| catalog.release(&Version::new(to.major, to.minor, to.patch)))
        .or(catalog.releases.last())
        .expect("a checked catalog is not empty")
}

/// Runs every check for `from` → `to` on the stores of `config`. `from` is the error
/// text when the data's version could not be read.
pub async fn run_checks(
    config: &crate::Config,
    from: &Result<Version, String>,
    to: &Version,
    opts: &Options,
) -> anyhow::Result<Vec<Check>> {
    let own = Version::parse(env!("CARGO_PKG_VERSION"))?;
    let location = config.metadata_location().map_err(anyhow::Error::msg)?;
    let (meta, store_name): (Result<Box<dyn MetaStore>, String>, String) = match &location {
        MetadataLocation::Sqlite(p) => (
            SqliteMetaStore::open_for_upgrade(p)
                .await
                .map(|m| Box::new(m) as Box<dyn MetaStore>)
                .map_err(|e| e.to_string()),
            format!("the embedded store {}", p.display()),
        ),
        MetadataLocation::Postgres(u) => (
            PgMetaStore::open_for_upgrade(&u.0)
                .await
                .map(|m| Box::new(m) as Box<dyn MetaStore>)
                .map_err(|e| e.to_string()),
            format!("PostgreSQL at {u:?}"),
        ),
    };
    let catalog = &opts.catalog;
    let mut versions = catalog.versions();
    if !versions.contains(&own) {
        versions.push(own);
    }
    let mut out = Vec::new();

    // The path.
    out.push(match from {
        Ok(from) => {
            let plan = wharf_upgrade::plan(from, to, &versions, false);
            // Refused as one hop but reachable through allowed stops: `upgrade apply`
            // with the local driver makes the hops in turn.
            let multi_hop = !plan.allowed && plan.path.last() == Some(&to.to_string());
            check(
                "path",
                plan.allowed || multi_hop,
                match &plan.reason {
                    Some(r) if multi_hop => format!(
                        "{from} → {to} goes through {}: `wharf upgrade apply` makes each hop in turn (as one hop: {r})",
                        plan.path[..plan.path.len() - 1].join(" → ")
                    ),
                    Some(r) => r.clone(),
                    None => format!(
                        "{from} → {to} is allowed ({})",
                        plan.hops.first().map_or("nothing to do", |h| h.rule)
                    ),
                },
                &format!("install the stops in order: {}", plan.path.join(" → ")),
            )
        }
        Err(e) => check(
            "path",
            false,
            format!("the version that wrote the data could not be read: {e}"),
            "make the metadata store readable (see the database and data-dir checks), or pass --from VERSION",
        ),
    });

    // Dependent components, as the target release supports them.
    let target = target_release(catalog, to);
    let meta = match meta {
        Ok(meta) => {
            let (kind, version) = meta.database_version().await?;
            if kind == "postgresql" {
                let req = VersionReq::parse(&target.supports.postgresql).with_context(|| {
                    format!(
                        "the catalog's PostgreSQL range for {} ({:?})",
                        target.version, target.supports.postgresql
                    )
                })?;
                let v =
                    Version::parse(&format!("{version}.0")).or_else(|_| Version::parse(&version));
                let ok = v.as_ref().is_ok_and(|v| req.matches(v));
                let release = if &target.version == to {
                    to.to_string()
                } else if target.version == Version::new(to.major, to.minor, to.patch) {
                    format!("{to} (as release {})", target.version)
                } else {
                    format!(
                        "{to} (not in the catalog: as its newest release, {})",
                        target.version
                    )
                };
                out.push(check(
                    "database",
                    ok,
                    if ok {
                        format!(
                            "PostgreSQL {version}; {release} supports PostgreSQL {}",
                            target.supports.postgresql
                        )
                    } else {
                        format!(
                            "PostgreSQL {version} is outside what {release} supports: {}",
                            target.supports.postgresql
                        )
                    },
                    &format!(
                        "upgrade PostgreSQL to a version in {} first (then check again)",
                        target.supports.postgresql
                    ),
                ));
            } else {
                out.push(check(
                    "database",
                    true,
                    format!("embedded SQLite {version}"),
                    "",
                ));
            }
            Ok(meta)
        }
        Err(e) => {
            out.push(check(
                "database",
                false,
                format!("{store_name} does not open: {e}"),
                match &location {
                    MetadataLocation::Sqlite(_) => {
                        "the embedded store needs a writable data directory with free space (see the data-dir check)"
                    }
                    MetadataLocation::Postgres(_) => {
                        "make PostgreSQL reachable: is it running, are the URL, the credentials and the network right?"
                    }
                },
            ));
            Err(e)
        }
    };

    out.push(blob_store(config).await);

    match &meta {
        Ok(meta) => store_checks(meta.as_ref(), from, to, opts, &mut out).await?,
        Err(_) => {
            for name in ["backup", "replicas", "clock-drift"] {
                out.push(not_measured(name));
            }
        }
    }

    // This node's data directory and memory.
    out.push(data_dir(&config.data_dir));
    let mem = crate::cluster::memory_available();
    out.push(check(
        "memory",
        mem == 0 || mem >= 256 << 20,
        format!("{} MiB available on this node", mem >> 20),
        "free memory: the upgrade needs at least 256 MiB",
    ));

    match &meta {
        Ok(meta) => pending_work(meta.as_ref(), &mut out).await?,
        Err(_) => {
            out.push(not_measured("background-migrations"));
            out.push(not_measured("gc"));
        }
    }
    match &meta {
        Ok(meta) => {
            let target_level = catalog
                .release(to)
                .map(|r| r.schema_level)
                .unwrap_or(wharf_metastore::schema::SCHEMA_LEVEL);
            let level = meta.schema_level().await?;
            let facts = if level >= SCAN_LEVEL {
                Some(crate::cluster::VulndbFacts::read(meta.as_ref()).await?)
            } else {
                None
            };
            let now = meta.store_now().await?;
            out.push(vulndb_check(
                config,
                level,
                target_level,
                facts.as_ref(),
                now,
            ));
        }
        Err(_) => out.push(not_measured("vulnerability-database")),
    }
    match &meta {
        Ok(meta) => out.push(caches_check(meta.as_ref(), from.as_ref().ok(), to).await),
        Err(_) => out.push(not_measured("content-caches")),
    }
    if let Ok(from) = from {
        if from != to {
            out.push(rehearsal_check(config, from, to));
        }
    }

    // Recorded skips.
    let from_text = from
        .as_ref()
        .map_or_else(|_| "unknown".to_string(), |v| v.to_string());
    for c in out.iter_mut() {
        if let Some((_, reason)) = opts.skips.iter().find(|(n, _)| n == c.name) {
            if c.status != FAIL {
                continue;
            }
            match &meta {
                Ok(meta) => {
                    c.status = SKIPPED;
                    c.measured = format!("{} (skipped: {reason})", c.measured);
                    meta.record_step(&JournalEntry {
                        from_version: from_text.clone(),
                        to_version: to.to_string(),
                        step: format!("skip-check:{}", c.name),
                        status: "skipped".into(),
                        at_ms: 0,
                        detail: reason.clone(),
                    })
                    .await?;
                }
                Err(_) => {
                    c.measured = format!(
                        "{} (not skipped: a skip is recorded in the metadata store, which does not open)",
                        c.measured
                    );
                }
            }
        }
    }
    Ok(out)
}

/// The schema level that brings vulnerability scanning (inventories, advisories).
const SCAN_LEVEL: u32 = 3;

/// Warnings about vulnerability scanning after the upgrade: a target that builds the
/// scanning tables anew (images stored before have no inventory), and a database that
/// is missing, stale or whose last update failed (the cluster status's own words).
/// Never a failure: the registry works without it.
fn vulndb_check(
    config: &crate::Config,
    level: u32,
    target_level: u32,
    facts: Option<&crate::cluster::VulndbFacts>,
    now: i64,
) -> Check {
    let mut warnings = Vec::new();
    if level < SCAN_LEVEL && target_level >= SCAN_LEVEL {
        warnings.push(format!(
            "the target brings vulnerability scanning (schema level {SCAN_LEVEL}): images stored before have no inventory and are scanned only when pushed again or on \"rescan all\""
        ));
    }
    if let Some(facts) = facts {
        let t = crate::cluster::Thresholds::for_interval(Duration::from_secs(
            config.heartbeat_interval_secs,
        ))
        .with_vulndb_stale_after(Duration::from_secs(config.vulndb_stale_after_secs));
        warnings.extend(
            crate::cluster::assess_vulndb(facts, now, &t)
                .into_iter()
                .map(|i| i.description),
        );
    }
    if warnings.is_empty() {
        let measured = match facts.and_then(|f| f.current.as_ref()) {
            Some(v) => format!("database version {} from {}", v.id, v.source),
            None if level < SCAN_LEVEL => "no scanning data at this schema level".into(),
            None => "no database and no scanned images".into(),
        };
        return check("vulnerability-database", true, measured, "");
    }
    let refresh = if config.vulndb_url.is_some() {
        "the upgrade queues vulndb_update; run it now with `wharf vulndb update`"
    } else {
        "the upgrade queues vulndb_rematch; import a current database with `wharf vulndb import PATH`, or set vulndb_url"
    };
    Check {
        name: "vulnerability-database",
        status: WARN,
        measured: warnings.join("; "),
        fix: Some(refresh.into()),
    }
}

/// The content caches and their versions: they are upgraded with the cluster, after the
/// replicas and before finalising. A cache that is silent, never reported, or runs
/// neither the data's version nor the target is worth knowing (its users are served by
/// the registry meanwhile), never a failure.
async fn caches_check(meta: &dyn MetaStore, from: Option<&Version>, to: &Version) -> Check {
    // A store below the level that brings caches has none.
    let Ok(views) = crate::content_cache::cache_views(meta).await else {
        return check("content-caches", true, "none registered".into(), "");
    };
    if views.is_empty() {
        return check("content-caches", true, "none registered".into(), "");
    }
    let listed: Vec<String> = views
        .iter()
        .map(|v| {
            format!(
                "{} {} ({})",
                v.name,
                v.version.as_deref().unwrap_or("version unknown"),
                v.state
            )
        })
        .collect();
    let known = |v: &str| Some(v) == from.map(|f| f.to_string()).as_deref() || v == to.to_string();
    let odd: Vec<&str> = views
        .iter()
        .filter(|v| v.state != "serving" || v.version.as_deref().is_none_or(|x| !known(x)))
        .map(|v| v.name.as_str())
        .collect();
    let measured = format!(
        "{}; upgrade them to {to} after the replicas, before finalising",
        listed.join(", ")
    );
    if odd.is_empty() {
        return check("content-caches", true, measured, "");
    }
    Check {
        name: "content-caches",
        status: WARN,
        measured,
        fix: Some(format!(
            "bring {} back (or `wharf cache remove` it): a cache that is down or on another release is skipped, and its users download from the registry",
            odd.join(", ")
        )),
    }
}

/// Whether the upgrade was rehearsed on a copy (`wharf upgrade rehearse`), and its
/// forecast: worth having, never a failure.
fn rehearsal_check(config: &crate::Config, from: &Version, to: &Version) -> Check {
    match wharf_upgrade::rehearsal::last(&config.data_dir) {
        Some(r) if r.is_for(from, to) => {
            let background: f64 = r
                .steps
                .iter()
                .filter(|s| s.rows.is_some() && s.step != "restore")
                .map(|s| s.secs)
                .sum();
            check(
                "rehearsal",
                true,
                format!(
                    "rehearsed on {} ({} manifests): background migrations took {}",
                    r.backup,
                    r.data.manifests,
                    wharf_upgrade::rehearsal::about(background)
                ),
                "",
            )
        }
        other => Check {
            name: "rehearsal",
            status: WARN,
            measured: match other {
                Some(r) => format!("the last rehearsal was of {} → {}, not this upgrade", r.from, r.to),
                None => "no rehearsal of this upgrade".into(),
            },
            fix: Some("run `wharf upgrade rehearse`: it tries the upgrade on a copy of the newest backup and forecasts how long each step takes".into()),
        },
    }
}

/// A check that needs the metadata store, which did not open.
fn not_measured(name: &'static str) -> Check {
    check(
        name,
        false,
        "not measured: the metadata store does not open".into(),
        "see the database check",
    )
}

/// The blob store takes a write and a delete.
async fn blob_store(config: &crate::Config) -> Check {
    let fix =
        "make the blob store reachable and writable (credentials, endpoint, permissions, free space)";
    let blobs = match crate::run::open_blobstore(config) {
        Ok(b) => b,
        Err(e) => return check("blob-store", false, format!("it does not open: {e:#}"), fix),
    };
    let probe = wharf_oci::UploadId::new_unchecked(format!("upgrade-probe-{}", std::process::id()));
    let reachable = async {
        let mut w = blobs.upload_writer(&probe, 0).await?;
        w.write(bytes::Bytes::from_static(b"probe")).await?;
        w.finish().await?;
        blobs.upload_delete(&probe).await
    }
    .await;
    if reachable.is_err() {
        // Whatever part of the probe was written goes too.
        let _ = blobs.upload_delete(&probe).await;
    }
    check(
        "blob-store",
        reachable.is_ok(),
        match &reachable {
            Ok(()) => "a probe was written and deleted".into(),
            Err(e) => format!("a probe write failed: {e}"),
        },
        fix,
    )
}

/// Backup age, replicas and their clocks, from the metadata store.
async fn store_checks(
    meta: &dyn MetaStore,
    from: &Result<Version, String>,
    to: &Version,
    opts: &Options,
    out: &mut Vec<Check>,
) -> anyhow::Result<()> {
    // A recent backup, as `wharf backup` recorded it.
    let now = meta.store_now().await?;
    let last = meta.backups(1).await?.into_iter().next();
    let max_ms = opts.max_backup_age.as_millis() as i64;
    out.push(match &last {
        Some(b) if now - b.finished_at_ms <= max_ms => check(
            "backup",
            true,
            format!(
                "{} backup {} min old at {}",
                b.scope,
                (now - b.finished_at_ms) / 60_000,
                b.location
            ),
            "",
        ),
        Some(b) => check(
            "backup",
            false,
            format!(
                "the last backup is {} h old (limit {} h)",
                (now - b.finished_at_ms) / 3_600_000,
                max_ms / 3_600_000
            ),
            "run `wharf backup --out FILE` (and back up the blob store)",
        ),
        None => check(
            "backup",
            false,
            "no backup is recorded".into(),
            "run `wharf backup --out FILE` (and back up the blob store)",
        ),
    });

    // Replicas: the local driver needs them stopped; a rolling upgrade replaces them
    // while they serve, each on the data's release or the target's.
    let (rows, now) = meta.replicas().await?;
    let alive: Vec<_> = rows
        .iter()
        .filter(|r| now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000))
        .collect();
    let serving = alive
        .iter()
        .map(|r| format!("{} ({})", r.report.address, r.report.version))
        .collect::<Vec<_>>()
        .join(", ");
    out.push(if opts.rolling {
        let from = from.as_ref().map(|v| v.to_string()).ok();
        let strangers: Vec<String> = alive
            .iter()
            .filter(|r| {
                Some(&r.report.version) != from.as_ref() && r.report.version != to.to_string()
            })
            .map(|r| format!("{} ({})", r.report.address, r.report.version))
            .collect();
        check(
            "replicas",
            strangers.is_empty(),
            if !strangers.is_empty() {
                format!(
                    "serving neither {} nor {to}: {}",
                    from.as_deref().unwrap_or("the data's release"),
                    strangers.join(", ")
                )
            } else if alive.is_empty() {
                format!("no replica serving ({} registered, silent)", rows.len())
            } else {
                format!("serving, to be replaced one at a time: {serving}")
            },
            "replace or stop the replicas on other releases first",
        )
    } else {
        check(
            "replicas",
            alive.is_empty(),
            if alive.is_empty() {
                format!("no replica serving ({} registered, silent)", rows.len())
            } else {
                format!("serving: {serving}")
            },
            "stop every replica for the local driver (or check for --driver docker or external, which replace them while they serve)",
        )
    });

    // Clocks: each replica's own clock, as it reported it in its last heartbeat, against
    // the store's clock when that heartbeat arrived (PostgreSQL's clock; with the
    // embedded store, the one process's own).
    let drift = |r: &wharf_metastore::ReplicaRow| r.report.clock_ms - r.heartbeat_at_ms;
    let drifting: Vec<String> = rows
        .iter()
        .filter(|r| drift(r).abs() > MAX_CLOCK_DRIFT_MS)
        .map(|r| {
            let d = drift(r);
            format!(
                "{}: clock {} ms {} the metadata store's (heartbeat {} s ago)",
                r.report.address,
                d.abs(),
                if d > 0 { "ahead of" } else { "behind" },
                (now - r.heartbeat_at_ms).max(0) / 1000
            )
        })
        .collect();
    let largest = rows.iter().map(|r| drift(r).abs()).max();
    out.push(check(
        "clock-drift",
        drifting.is_empty(),
        match largest {
            _ if !drifting.is_empty() => drifting.join("; "),
            None => "no replica registered: no clock to compare".into(),
            Some(d) => format!(
                "{} replica clock(s) within 1 s of the metadata store's (largest difference {d} ms)",
                rows.len()
            ),
        },
        "synchronise the replicas' clocks with the metadata store's (NTP: chrony or systemd-timesyncd); each replica's next heartbeat reports its clock again",
    ));
    Ok(())
}

/// Free space and a write+fsync probe on this node's data directory.
fn data_dir(dir: &Path) -> Check {
    let _ = std::fs::create_dir_all(dir);
    let (free, total) = crate::cluster::disk_space(dir);
    let probe = dir.join(".wharf-upgrade-probe");
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        use std::io::Write;
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    let enough = total == 0 || free as f64 >= MIN_FREE_FRACTION * total as f64;
    let space = format!(
        "{} MiB free of {} MiB ({:.1}%)",
        free >> 20,
        total >> 20,
        if total == 0 {
            100.0
        } else {
            100.0 * free as f64 / total as f64
        }
    );
    let shown = dir.display();
    let result = match &written {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let full = matches!(&written, Err(e) if e.kind() == ErrorKind::StorageFull);
    match &written {
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => check(
            "data-dir",
            false,
            format!("{shown} is on a read-only file system: write+fsync {result}; {space}"),
            "make its file system writable again (mount -o remount,rw); one that turned read-only after I/O errors needs its disk and fsck looked at first",
        ),
        _ if full || !enough => check(
            "data-dir",
            false,
            format!(
                "{shown}: {}: {space}, at least {:.0}% needed; write+fsync {result}",
                if full { "no space left" } else { "low on space" },
                MIN_FREE_FRACTION * 100.0,
            ),
            "free space on its file system (at least 5%): grow the volume, remove other files, or `wharf gc` to delete unreferenced blobs",
        ),
        Err(_) => check(
            "data-dir",
            false,
            format!("{shown}: write+fsync {result}; {space}"),
            "make the data directory writable by the user wharf runs as (ownership, permissions)",
        ),
        Ok(()) => check(
            "data-dir",
            true,
            format!("{shown}: {space}; write+fsync ok"),
            "",
        ),
    }
}

/// Nothing pending from an earlier upgrade, no GC running.
async fn pending_work(meta: &dyn MetaStore, out: &mut Vec<Check>) -> anyhow::Result<()> {
    let level = meta.schema_level().await?;
    if level < 2 {
        out.push(check(
            "background-migrations",
            true,
            "none at this schema level".into(),
            "",
        ));
        out.push(check(
            "gc",
            true,
            "no garbage collection at this schema level".into(),
            "",
        ));
        return Ok(());
    }
    // Each background migration this schema level has: nothing left, no job unfinished.
    let mut done = true;
    let mut said = Vec::new();
    let mut unfinished_action = "metadatastoremigration";
    for (_, action) in wharf_metastore::schema::BACKGROUND
        .iter()
        .filter(|(l, _)| *l <= level)
    {
        let Some((pending, what)) =
            wharf_metastore::schema::background_pending(meta, action).await?
        else {
            continue;
        };
        let last = meta
            .jobs(Some(action), None, None, 1)
            .await?
            .into_iter()
            .next();
        let unfinished = last.as_ref().is_some_and(|j| !j.status.is_final());
        if pending > 0 || unfinished {
            if done {
                unfinished_action = action;
            }
            done = false;
        }
        said.push(format!(
            "{pending} {what}; {action}: {}",
            last.as_ref().map_or("never run".to_string(), |j| format!(
                "job {} {}",
                j.id,
                j.status.as_str()
            ))
        ));
    }
    out.push(check(
        "background-migrations",
        done,
        said.join("; "),
        &format!("let {unfinished_action} finish (wharf jobs logs ID --follow), or queue it: wharf jobs run {unfinished_action}"),
    ));
    let gc = meta
        .jobs(Some("gc"), Some(JobStatus::Running), None, 1)
        .await?;
    out.push(check(
        "gc",
        gc.is_empty(),
        match gc.first() {
            Some(j) => format!("gc job {} is running", j.id),
            None => "no garbage collection running".into(),
        },
        "wait for the gc job or cancel it (wharf jobs cancel ID)",
    ));
    Ok(())
}
