//! `wharf upgrade`: moving a registry's data from one release to another
//! (docs/upgrading.md). This part: `plan`.

use clap::Subcommand;
use semver::Version;
use wharf_server::config::MetadataLocation;
use wharf_upgrade::{plan, Catalog};

use super::StoreArgs;

/// Plan and carry out upgrades between wharf releases
#[derive(clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: UpgradeCommand,
}

#[derive(Subcommand)]
enum UpgradeCommand {
    /// The path of required stops from the data's version to this binary's (or --to),
    /// the rule behind each hop, and warnings. Exits 0 when the upgrade may go directly,
    /// 1 when it is refused (the path then shows the stops to make)
    Plan {
        /// Plan from this version [default: the version that wrote the data]
        #[arg(long, value_parser = parse_version)]
        from: Option<Version>,
        /// Plan to this version [default: this binary's]
        #[arg(long, value_parser = parse_version)]
        to: Option<Version>,
        /// Plan over these released versions (comma-separated) instead of the catalog
        /// built into this binary, for what-ifs
        #[arg(long, value_delimiter = ',', value_parser = parse_version)]
        available: Option<Vec<Version>>,
        /// Let pre-releases be stops
        #[arg(long)]
        allow_prerelease: bool,
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Every pre-flight check (path, database, blob store, backup age, replicas, clock
    /// drift, data directory, memory, background migrations, GC): pass, warn or fail,
    /// what was measured and how to fix a failure. Exits 1 if any check fails
    Check {
        /// Check for an upgrade from this version [default: the data's]
        #[arg(long, value_parser = parse_version)]
        from: Option<Version>,
        /// Check for an upgrade to this version [default: this binary's]
        #[arg(long, value_parser = parse_version)]
        to: Option<Version>,
        /// The newest backup may be at most this old
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        max_backup_age_hours: u64,
        /// Turn this check's failure into a recorded skip (with --reason)
        #[arg(long, value_name = "NAME", requires = "reason")]
        skip_check: Vec<String>,
        /// Why the checks are skipped (recorded in the upgrade journal)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Where an upgrade to this version stands: the data's version, the journal's steps
    /// (step N of M), each replica's version, and background migrations with progress
    /// and ETA
    Status {
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Upgrade the data of a stopped registry (the embedded store, or a stopped
    /// cluster's stores) to this binary's version, step by step: checks, a metadata
    /// backup, schema migrations, and the background migrations queued as jobs. Each
    /// step is recorded in the metadata store; run it again after any interruption and it
    /// continues with the first unfinished step
    Apply {
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Where the pre-upgrade backup goes [default: DATA_DIR/backups]
        #[arg(long, value_name = "DIR")]
        backup_dir: Option<std::path::PathBuf>,
        /// Skip the pre-upgrade backup (needs --reason, which the journal records)
        #[arg(long, requires = "reason")]
        skip_backup: bool,
        /// Why a step is skipped
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

fn parse_version(s: &str) -> Result<Version, String> {
    Version::parse(s.trim())
        .map_err(|e| format!("{s:?} is not a version (MAJOR.MINOR.PATCH[-PRE]): {e}"))
}

/// The version that wrote the data the configuration points at.
pub fn data_version(store: &StoreArgs) -> anyhow::Result<Version> {
    let config = store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info = match config.metadata_location().map_err(anyhow::Error::msg)? {
        MetadataLocation::Sqlite(path) => {
            if !path.exists() {
                anyhow::bail!(
                    "no registry data at {} (pass --data-dir / --metadata, or --from)",
                    path.display()
                );
            }
            wharf_metastore::schema::peek_sqlite(&path)?
        }
        MetadataLocation::Postgres(url) => {
            runtime.block_on(wharf_metastore::schema::peek_postgres(&url.0))?
        }
    };
    let info = info
        .ok_or_else(|| anyhow::anyhow!("the metadata store holds no wharf data (pass --from)"))?;
    parse_version(&info.wharf_version).map_err(anyhow::Error::msg)
}

pub fn run(args: UpgradeArgs) -> anyhow::Result<std::process::ExitCode> {
    let (from, to, available, allow_prerelease, format) = match args.command {
        UpgradeCommand::Plan {
            from,
            to,
            available,
            allow_prerelease,
            format,
        } => (from, to, available, allow_prerelease, format),
        UpgradeCommand::Status { format } => return status(&args.store, &format),
        UpgradeCommand::Check {
            from,
            to,
            max_backup_age_hours,
            skip_check,
            reason,
            format,
        } => {
            return check(
                &args.store,
                from,
                to,
                max_backup_age_hours,
                skip_check,
                reason,
                &format,
            )
        }
        UpgradeCommand::Apply {
            yes,
            backup_dir,
            skip_backup,
            reason,
        } => {
            return super::upgrade_apply::run(
                &args.store,
                yes,
                backup_dir,
                skip_backup.then(|| reason.unwrap_or_default()),
            );
        }
    };
    if format != "text" && format != "json" {
        anyhow::bail!("--format is text or json, not {format:?}");
    }
    let catalog = Catalog::embedded();
    let to = to.unwrap_or_else(|| {
        Version::parse(crate::VERSION).expect("the build's version is a version")
    });
    let from = match from {
        Some(v) => v,
        None => data_version(&args.store)?,
    };
    let mut versions = available.unwrap_or_else(|| catalog.versions());
    // This binary's own version is always a place to go.
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    if !versions.contains(&own) {
        versions.push(own);
    }
    let p = plan(&from, &to, &versions, allow_prerelease);
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        let verdict = if p.allowed {
            if p.path.is_empty() {
                "nothing to do"
            } else {
                "allowed"
            }
        } else {
            "refused"
        };
        println!("upgrade {} → {}: {verdict}", p.from, p.to);
        if let (Some(rule), Some(reason)) = (p.rule, &p.reason) {
            println!("  rule {rule}: {reason}");
        }
        if !p.path.is_empty() {
            println!("path of required stops: {}", p.path.join(" → "));
            for h in &p.hops {
                let level = |v: &str| {
                    Version::parse(v)
                        .ok()
                        .and_then(|v| catalog.release(&v).map(|r| r.schema_level))
                        .or_else(|| (v == crate::VERSION).then_some(wharf_server::SCHEMA_LEVEL))
                };
                let schema = match (level(&h.from), level(&h.to)) {
                    (Some(a), Some(b)) if a != b => format!("schema level {a} → {b}"),
                    (Some(a), Some(_)) => format!("schema level {a}, no data migration"),
                    _ => "schema levels unknown (not in the catalog)".to_string(),
                };
                println!("  {} → {}  ({}; {schema})", h.from, h.to, h.rule);
            }
        } else if !p.allowed {
            println!(
                "no path: there is no sequence of allowed upgrades to {}",
                p.to
            );
        }
        for w in &p.warnings {
            println!("{w}");
        }
    }
    Ok(if p.allowed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn status(store: &StoreArgs, format: &str) -> anyhow::Result<std::process::ExitCode> {
    use wharf_metastore::{MetaStore, PgMetaStore, SqliteMetaStore};
    let config = store.to_config()?;
    let own = crate::VERSION;
    let data = data_version(store)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let meta: Box<dyn MetaStore> = match config.metadata_location().map_err(anyhow::Error::msg)? {
            MetadataLocation::Sqlite(p) => Box::new(SqliteMetaStore::open_for_upgrade(p).await?),
            MetadataLocation::Postgres(u) => Box::new(PgMetaStore::open_for_upgrade(&u.0).await?),
        };
        let level = meta.schema_level().await?;
        let journal = meta.journal(own).await?;
        let (replicas, now) = meta.replicas().await?;
        let replicas: Vec<serde_json::Value> = replicas
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.report.id, "address": r.report.address, "version": r.report.version,
                    "alive": now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000),
                })
            })
            .collect();
        // Background migrations exist from schema level 2 on.
        let background = if level >= 2 {
            meta.jobs(Some("metadatastoremigration"), None, None, 5).await?
        } else {
            Vec::new()
        };
        anyhow::Ok(serde_json::json!({
            "data_version": data.to_string(),
            "schema_level": level,
            "binary_version": own,
            "steps_total": 5,
            "journal": journal,
            "replicas": replicas,
            "background_migrations": background.iter().map(|j| serde_json::json!({
                "job": j.id, "status": j.status.as_str(), "attempts": j.attempts,
                "progress": j.progress.as_deref().and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
            })).collect::<Vec<_>>(),
        }))
    })?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!(
        "data: wharf {} (schema level {}); this binary: {own}",
        report["data_version"].as_str().unwrap_or(""),
        report["schema_level"]
    );
    let journal = report["journal"].as_array().cloned().unwrap_or_default();
    if journal.is_empty() {
        println!("no upgrade to {own} has started");
    } else {
        println!(
            "upgrade to {own}: step {} of {}",
            journal.len(),
            report["steps_total"]
        );
        for e in &journal {
            println!(
                "  {} {}: {}",
                e["step"].as_str().unwrap_or(""),
                e["status"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
    }
    for r in report["replicas"].as_array().cloned().unwrap_or_default() {
        println!(
            "replica {} at {}: {} ({})",
            r["id"].as_str().unwrap_or(""),
            r["address"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            if r["alive"] == true {
                "alive"
            } else {
                "not reporting"
            }
        );
    }
    for b in report["background_migrations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let p = &b["progress"];
        let progress = if p.is_null() {
            "not started".to_string()
        } else {
            let eta = p["eta_secs"]
                .as_u64()
                .map(|s| format!(", ETA {s} s"))
                .unwrap_or_default();
            format!(
                "{}/{} manifests, {}/s{eta}",
                p["done"], p["total"], p["rate"]
            )
        };
        println!(
            "background migration metadatastoremigration (job {}): {} — {progress}",
            b["job"],
            b["status"].as_str().unwrap_or("")
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn check(
    store: &StoreArgs,
    from: Option<Version>,
    to: Option<Version>,
    max_backup_age_hours: u64,
    skip_check: Vec<String>,
    reason: Option<String>,
    format: &str,
) -> anyhow::Result<std::process::ExitCode> {
    for name in &skip_check {
        if !super::upgrade_check::NAMES.contains(&name.as_str()) {
            anyhow::bail!(
                "no check is called {name:?}; the checks: {}",
                super::upgrade_check::NAMES.join(", ")
            );
        }
    }
    let config = store.to_config()?;
    let from = match from {
        Some(v) => v,
        None => data_version(store)?,
    };
    let to = to.unwrap_or_else(|| Version::parse(crate::VERSION).expect("the build's version"));
    let opts = super::upgrade_check::Options {
        max_backup_age: std::time::Duration::from_secs(max_backup_age_hours * 3600),
        skips: skip_check
            .into_iter()
            .map(|n| (n, reason.clone().unwrap_or_default()))
            .collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let checks = runtime.block_on(super::upgrade_check::run_checks(&config, &from, &to, &opts))?;
    let failed = checks.iter().filter(|c| c.status == "fail").count();
    if format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"from": from.to_string(), "to": to.to_string(), "checks": checks, "failed": failed})
            )?
        );
    } else {
        println!("pre-flight checks for {from} → {to}");
        for c in &checks {
            println!(
                "  {:<8} {:<22} {}",
                c.status.to_uppercase(),
                c.name,
                c.measured
            );
            if let Some(fix) = &c.fix {
                println!("  {:<8} {:<22} fix: {fix}", "", "");
            }
        }
        println!(
            "{}",
            if failed == 0 {
                "all checks pass".to_string()
            } else {
                format!("{failed} check(s) fail")
            }
        );
    }
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
