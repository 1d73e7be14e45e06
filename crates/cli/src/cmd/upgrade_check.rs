//! `wharf upgrade check`: the pre-flight checks (docs/upgrading.md), each pass, warn or
//! fail with what it measured and how to fix a failure. `--skip-check NAME --reason
//! TEXT` turns a failure into a recorded skip.

use std::time::Duration;

use semver::{Version, VersionReq};
use wharf_metastore::jobs::JobStatus;
use wharf_metastore::journal::JournalEntry;
use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
use wharf_server::config::MetadataLocation;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    /// pass, warn, fail or skipped
    pub status: &'static str,
    pub measured: String,
    pub fix: Option<String>,
}

fn check(name: &'static str, ok: bool, measured: String, fix: &str) -> Check {
    Check {
        name,
        status: if ok { "pass" } else { "fail" },
        measured,
        fix: (!ok).then(|| fix.to_string()),
    }
}

pub struct Options {
    pub max_backup_age: Duration,
    pub skips: Vec<(String, String)>,
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
];

/// Runs every check for `from` → `to` on the stores of `config`.
pub async fn run_checks(
    config: &wharf_server::Config,
    from: &Version,
    to: &Version,
    opts: &Options,
) -> anyhow::Result<Vec<Check>> {
    let location = config.metadata_location().map_err(anyhow::Error::msg)?;
    let meta: Box<dyn MetaStore> = match &location {
        MetadataLocation::Sqlite(p) => Box::new(SqliteMetaStore::open_for_upgrade(p).await?),
        MetadataLocation::Postgres(u) => Box::new(PgMetaStore::open_for_upgrade(&u.0).await?),
    };
    let catalog = wharf_upgrade::Catalog::embedded();
    let mut versions = catalog.versions();
    versions.push(Version::parse(crate::VERSION)?);
    let mut out = Vec::new();

    // The path.
    let plan = wharf_upgrade::plan(from, to, &versions, false);
    out.push(check(
        "path",
        plan.allowed,
        match &plan.reason {
            Some(r) => r.clone(),
            None => format!(
                "{from} → {to} is allowed ({})",
                plan.hops.first().map_or("nothing to do", |h| h.rule)
            ),
        },
        &format!("install the stops in order: {}", plan.path.join(" → ")),
    ));

    // Dependent components, as the target supports them (the latest catalog entry for a
    // development build).
    let target = catalog
        .release(to)
        .or(catalog.releases.last())
        .expect("the catalog is not empty");
    let (kind, version) = meta.database_version().await?;
    if kind == "postgresql" {
        let req = VersionReq::parse(&target.supports.postgresql)?;
        let v = Version::parse(&format!("{version}.0")).or_else(|_| Version::parse(&version));
        let ok = v.as_ref().is_ok_and(|v| req.matches(v));
        out.push(check(
            "database",
            ok,
            format!(
                "PostgreSQL {version}; {} supports {}",
                target.version, target.supports.postgresql
            ),
            "upgrade PostgreSQL to a supported version first",
        ));
    } else {
        out.push(check(
            "database",
            true,
            format!("embedded SQLite {version}"),
            "",
        ));
    }
    let blobs = wharf_server::run::open_blobstore(config)?;
    let probe = wharf_oci::UploadId::new_unchecked(format!("upgrade-probe-{}", std::process::id()));
    let reachable = async {
        let mut w = blobs.upload_writer(&probe, 0).await?;
        w.write(bytes::Bytes::from_static(b"probe")).await?;
        w.finish().await?;
        blobs.upload_delete(&probe).await
    }
    .await;
    out.push(check(
        "blob-store",
        reachable.is_ok(),
        match &reachable {
            Ok(()) => "a probe was written and deleted".into(),
            Err(e) => format!("a probe write failed: {e}"),
        },
        "make the blob store reachable and writable (credentials, endpoint, permissions)",
    ));

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

    // Replicas: the local driver needs them stopped; none left over and healthy clocks.
    let (rows, now) = meta.replicas().await?;
    let alive: Vec<_> = rows
        .iter()
        .filter(|r| now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000))
        .collect();
    out.push(check(
        "replicas",
        alive.is_empty(),
        if alive.is_empty() {
            format!("no replica serving ({} registered, silent)", rows.len())
        } else {
            format!(
                "serving: {}",
                alive
                    .iter()
                    .map(|r| format!("{} ({})", r.report.address, r.report.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        "stop every replica for the local driver",
    ));
    let drifting: Vec<String> = rows
        .iter()
        .filter(|r| (r.report.clock_ms - r.heartbeat_at_ms).abs() > 1000)
        .map(|r| {
            format!(
                "{} off by {} ms",
                r.report.address,
                r.report.clock_ms - r.heartbeat_at_ms
            )
        })
        .collect();
    out.push(check(
        "clock-drift",
        drifting.is_empty(),
        if drifting.is_empty() {
            "replica clocks within 1 s of the store's".into()
        } else {
            drifting.join(", ")
        },
        "synchronise the replicas' clocks (NTP) with the metadata store's",
    ));

    // This node's data directory and memory.
    std::fs::create_dir_all(&config.data_dir)?;
    let (free, total) = wharf_server::cluster::disk_space(&config.data_dir);
    let probe = config.data_dir.join(".wharf-upgrade-probe");
    let writable = std::fs::File::create(&probe).and_then(|mut f| {
        use std::io::Write;
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    let enough = total == 0 || free as f64 >= 0.05 * total as f64;
    out.push(check(
        "data-dir",
        writable.is_ok() && enough,
        format!(
            "{}: {} MiB free of {} MiB; write+fsync {}",
            config.data_dir.display(),
            free >> 20,
            total >> 20,
            match &writable {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        ),
        "free space (at least 5%) and make the data directory writable",
    ));
    let mem = wharf_server::cluster::memory_available();
    out.push(check(
        "memory",
        mem == 0 || mem >= 256 << 20,
        format!("{} MiB available on this node", mem >> 20),
        "free memory: the upgrade needs at least 256 MiB",
    ));

    // Nothing pending from an earlier upgrade, no GC running.
    let level = meta.schema_level().await?;
    if level >= 2 {
        let pending = meta.count_manifests_without_refs().await?;
        let migration = meta
            .jobs(Some("metadatastoremigration"), None, None, 1)
            .await?
            .into_iter()
            .next();
        let unfinished = migration.as_ref().is_some_and(|j| !j.status.is_final());
        out.push(check(
            "background-migrations",
            pending == 0 && !unfinished,
            format!(
                "{pending} manifests lack references; metadatastoremigration: {}",
                migration.as_ref().map_or("never run".to_string(), |j| format!("job {} {}", j.id, j.status.as_str()))
            ),
            "let metadatastoremigration finish (wharf jobs logs ID --follow), or queue it: wharf jobs run metadatastoremigration",
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
    } else {
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
    }

    // Recorded skips.
    for c in out.iter_mut() {
        if let Some((_, reason)) = opts.skips.iter().find(|(n, _)| n == c.name) {
            if c.status == "fail" {
                c.status = "skipped";
                c.measured = format!("{} (skipped: {reason})", c.measured);
                meta.record_step(&JournalEntry {
                    from_version: from.to_string(),
                    to_version: to.to_string(),
                    step: format!("skip-check:{}", c.name),
                    status: "skipped".into(),
                    at_ms: 0,
                    detail: reason.clone(),
                })
                .await?;
            }
        }
    }
    Ok(out)
}
