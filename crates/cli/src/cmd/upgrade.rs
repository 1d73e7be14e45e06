//! `wharf upgrade`: moving a registry's data from one release to another
//! (docs/upgrading.md). This part: `plan`.

use clap::Subcommand;
use semver::Version;
use wharf_server::config::MetadataLocation;
use wharf_upgrade::plan;

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
        /// Plan against this release catalog (releases.toml) instead of the one built
        /// in, e.g. a newer catalog published with a later release; it is checked by
        /// the same rules
        #[arg(long, value_name = "FILE")]
        catalog: Option<std::path::PathBuf>,
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Every pre-flight check (path, database, blob store, backup age, replicas, clock
    /// drift, data directory, memory, background migrations, GC, vulnerability
    /// database, content caches, rehearsal): PASS, WARN (worth knowing, never a failure) or FAIL (SKIPPED when a
    /// failure is skipped with --skip-check), what was measured and how to fix a
    /// failure. Exits 1 if any check fails
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
        /// Check against this release catalog (releases.toml) instead of the one built
        /// in, e.g. a newer catalog published with a later release; it is checked by
        /// the same rules
        #[arg(long, value_name = "FILE")]
        catalog: Option<std::path::PathBuf>,
        /// How `upgrade apply` will replace the replicas: `local` (stopped first: the
        /// `replicas` check fails while any serves), `docker` or `external` (replaced
        /// while they serve: each must run the data's release or the target's)
        #[arg(long, default_value = "local", value_parser = ["local", "docker", "external"])]
        driver: String,
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
    /// Upgrade to this binary's version, step by step, each step recorded in the
    /// metadata store: run it again after any interruption and it continues with the
    /// first unfinished step. From an older release it goes through every required
    /// stop of the plan, one hop after another; before each next hop the previous
    /// hop's background migrations have finished. With the local driver (default) the registry is stopped:
    /// checks, a metadata backup, schema migrations, finalisation, background migrations
    /// queued as jobs. With --driver docker or external the cluster keeps serving: the
    /// schema is expanded (old replicas keep working), replicas are replaced one at a
    /// time (drained, replaced, waited for until ready on the new version), the result is
    /// verified (--url), then finalised; until then `upgrade rollback` goes back
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
        /// text (progress bars on a terminal) or json (one event per line: start, step,
        /// replica, progress, finished, refused, failed; needs --yes)
        #[arg(long, default_value = "text")]
        format: String,
        /// How long each stop's background migrations may take before the next stop
        /// of the plan starts (they must finish first); a rerun resumes the wait
        #[arg(long, default_value_t = 12 * 3600, value_name = "SECS")]
        migration_timeout_secs: u64,
        #[command(flatten)]
        rolling: super::upgrade_rolling::RollingArgs,
    },
    /// Before an upgrade is finalised: put every replica back on the release it ran
    /// (from the configuration the upgrade saved) and undo the schema's expand steps.
    /// Refused once the upgrade is finalised (only a backup restore goes back then)
    Rollback {
        /// Do not ask for confirmation (required: it replaces serving replicas)
        #[arg(long)]
        yes: bool,
        /// text or json (one event per line)
        #[arg(long, default_value = "text")]
        format: String,
        #[command(flatten)]
        rolling: super::upgrade_rolling::RollingArgs,
    },
    /// After an upgrade, check the running registry as its clients reach it (--url):
    /// the data's and every live replica's version (from the metadata store: --data-dir
    /// or --metadata), the registry API and its version, the cluster status, a canary
    /// image pushed to wharf-verify/canary, pulled back bit for bit and deleted, and the
    /// web UI. Each check passes, warns, fails or is skipped, with what it measured.
    /// Exits 1 if any check fails
    Verify(super::upgrade_verify::VerifyArgs),
    /// Rehearse the upgrade on a copy: restore the newest recorded backup (or --backup)
    /// into a scratch store (an SQLite file beside the data, or a temporary database on
    /// the same PostgreSQL server, dropped afterwards), run every hop there (expand, finalise and
    /// the background migrations, to their end), time each step with its rows and the
    /// peak memory, remove the scratch store, and print a forecast for the real
    /// upgrade, scaled to the data's size now. The real data is only read. The result
    /// is kept in DATA_DIR/upgrade-rehearsal.json: `upgrade plan` shows its forecast and
    /// `upgrade check` warns when there is none for the plan
    Rehearse {
        /// The backup to rehearse on [default: the newest one `wharf backup` recorded]
        #[arg(long, value_name = "FILE")]
        backup: Option<std::path::PathBuf>,
        /// text or json
        #[arg(long, default_value = "text")]
        format: String,
    },
}

fn parse_version(s: &str) -> Result<Version, String> {
    Version::parse(s.trim())
        .map_err(|e| format!("{s:?} is not a version (MAJOR.MINOR.PATCH[-PRE]): {e}"))
}

/// The version that wrote the data the configuration points at.
pub fn data_version(store: &StoreArgs) -> anyhow::Result<Version> {
    let config = store.to_config()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wharf_upgrade_engine::data_version(&config))
}

pub fn run(args: UpgradeArgs) -> anyhow::Result<std::process::ExitCode> {
    let (from, to, available, allow_prerelease, catalog_file, format) = match args.command {
        UpgradeCommand::Plan {
            from,
            to,
            available,
            allow_prerelease,
            catalog,
            format,
        } => (from, to, available, allow_prerelease, catalog, format),
        UpgradeCommand::Status { format } => return status(&args.store, &format),
        UpgradeCommand::Check {
            from,
            to,
            max_backup_age_hours,
            skip_check,
            reason,
            catalog,
            driver,
            format,
        } => {
            return check(
                &args.store,
                from,
                to,
                max_backup_age_hours,
                skip_check,
                reason,
                catalog,
                driver != "local",
                &format,
            )
        }
        UpgradeCommand::Apply {
            yes,
            backup_dir,
            skip_backup,
            reason,
            format,
            migration_timeout_secs,
            rolling,
        } => {
            return super::upgrade_apply::run(
                &args.store,
                &rolling,
                super::upgrade_apply::ApplyArgs {
                    yes,
                    backup_dir,
                    skip_backup: skip_backup.then(|| reason.unwrap_or_default()),
                    migration_timeout_secs,
                },
                super::upgrade_apply::Report::new(&format)?,
            );
        }
        UpgradeCommand::Rollback {
            yes,
            format,
            rolling,
        } => {
            let report = super::upgrade_apply::Report::new(&format)?;
            return super::upgrade_apply::rollback(&args.store, &rolling, yes, report);
        }
        UpgradeCommand::Verify(verify) => return super::upgrade_verify::run(&args.store, verify),
        UpgradeCommand::Rehearse { backup, format } => {
            return super::upgrade_rehearse::run(&args.store, backup, &format)
        }
    };
    if format != "text" && format != "json" {
        anyhow::bail!("--format is text or json, not {format:?}");
    }
    let catalog = super::upgrade_check::load_catalog(catalog_file.as_deref())?;
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
        versions.push(own.clone());
    }
    let p = plan(&from, &to, &versions, allow_prerelease);
    let level =
        |v: &str| wharf_upgrade::work::schema_level(&catalog, v, &own, wharf_server::SCHEMA_LEVEL);
    // What each hop runs: the catalog's migrations of the release installed, or this
    // build's own (every level after the first is expand-only), and the background
    // jobs that the levels crossed need.
    let hop_migrations =
        wharf_upgrade::work::hop_work(&catalog, &p, &own, wharf_server::SCHEMA_LEVEL);
    let checks = super::upgrade_check::NAMES;
    let (estimate, caches) = if p.path.is_empty() {
        (None, Vec::new())
    } else {
        (data_size(&args.store), content_caches(&args.store))
    };
    // The last rehearsal of this very upgrade, and the data's size now to scale it to.
    let rehearsal = args
        .store
        .to_config()
        .ok()
        .and_then(|c| wharf_upgrade::rehearsal::last(&c.data_dir))
        .filter(|r| !p.path.is_empty() && r.is_for(&from, &to));
    let now_size = match (&estimate, &rehearsal) {
        (Some((size, _)), _) => size.clone(),
        (None, Some(r)) => r.data.clone(),
        (None, None) => Default::default(),
    };
    // Refused as one hop, but every stop on the way is allowed: the local driver's
    // apply goes through them all.
    let reachable = p.allowed || p.path.last() == Some(&p.to);
    if format == "json" {
        let mut v = serde_json::to_value(&p)?;
        v["reachable"] = serde_json::json!(reachable);
        v["migrations"] = serde_json::json!(hop_migrations);
        v["checks"] = serde_json::json!(checks);
        v["estimate"] = serde_json::json!(estimate
            .as_ref()
            .map(|(size, e)| serde_json::json!({"data": size, "secs": e})));
        v["rehearsal"] = match &rehearsal {
            Some(r) => serde_json::json!({
                "at_ms": r.at_ms,
                "backup": r.backup,
                "forecast": r
                    .forecast(&now_size)
                    .into_iter()
                    .map(|(hop, step, secs)| serde_json::json!({"hop": hop, "step": step, "secs": secs}))
                    .collect::<Vec<_>>(),
            }),
            None => serde_json::Value::Null,
        };
        v["content_caches"] = serde_json::json!(caches
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "version": c.version, "state": c.state}))
            .collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let verdict = if p.allowed {
            if p.path.is_empty() {
                "nothing to do".to_string()
            } else {
                "allowed".to_string()
            }
        } else if reachable {
            format!("allowed in {} hops", p.path.len())
        } else {
            "refused".to_string()
        };
        println!("upgrade {} → {}: {verdict}", p.from, p.to);
        if let (Some(rule), Some(reason)) = (p.rule, &p.reason) {
            if reachable {
                println!("  as one hop, rule {rule}: {reason}");
                println!(
                    "  `wharf upgrade apply` goes through every stop in turn (with any \
                     driver), finishing each hop's background migrations before the next"
                );
            } else {
                println!("  rule {rule}: {reason}");
            }
        }
        if !p.path.is_empty() {
            println!("path of required stops: {}", p.path.join(" → "));
            for (h, m) in p.hops.iter().zip(&hop_migrations) {
                let schema = match (level(&h.from), level(&h.to)) {
                    (Some(a), Some(b)) if a != b => format!("schema level {a} → {b}"),
                    (Some(a), Some(_)) => format!("schema level {a}, no data migration"),
                    _ => "schema levels unknown (not in the catalog)".to_string(),
                };
                println!("  {} → {}  ({}; {schema})", h.from, h.to, h.rule);
                for s in &m.schema {
                    println!("      {} migration, level {}: {}", s.kind, s.level, s.name);
                }
                for b in &m.background {
                    println!("      background migration: {b} (a job, after finalisation)");
                }
            }
            if !caches.is_empty() {
                let listed: Vec<String> = caches
                    .iter()
                    .map(|c| {
                        wharf_server::content_cache::describe(
                            &c.name,
                            c.version.as_deref(),
                            &c.state,
                        )
                    })
                    .collect();
                println!(
                    "content caches, upgraded after the replicas and before finalising: {}",
                    listed.join(", ")
                );
            }
            match &rehearsal {
                Some(r) => {
                    println!(
                        "forecast from the rehearsal of {} ({} manifests then, {} now):",
                        r.backup, r.data.manifests, now_size.manifests
                    );
                    for line in r.forecast_lines(&now_size) {
                        println!("  {line}");
                    }
                }
                None => println!(
                    "no rehearsal of this upgrade: `wharf upgrade rehearse` tries it on a copy of the newest backup and forecasts each step"
                ),
            }
            println!(
                "checks before applying (`wharf upgrade check`): {}",
                checks.join(", ")
            );
            match &estimate {
                Some((size, e)) => println!(
                    "estimate for this data ({} repositories, {} manifests, {} blobs, {} MiB): \
                     backup {}, schema migrations {}, background migrations {} \
                     (rates measured on 2 cores: docs/benchmarks.md)",
                    size.repositories,
                    size.manifests,
                    size.blobs,
                    size.blob_bytes >> 20,
                    about(&e["backup"]),
                    about(&e["schema"]),
                    about(&e["background"])
                ),
                None => println!("estimate: no data to measure (pass --data-dir or --metadata)"),
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
    Ok(if reachable {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// "under 1 s", "12 s", "3 min".
fn about(secs: &serde_json::Value) -> String {
    match secs.as_f64().unwrap_or(0.0) {
        s if s < 1.0 => "under 1 s".into(),
        s if s < 120.0 => format!("{s:.0} s"),
        s => format!("{:.0} min", s / 60.0),
    }
}

/// The data's size and an estimate, in seconds, of each part of an upgrade of it; `None`
/// when there is no data. Rates: the metadata backup and the expand step run at
/// hundreds of thousands of rows per second; the metadatastoremigration at about 20,000
/// manifests per second (docs/benchmarks.md, 2 cores).
fn data_size(store: &StoreArgs) -> Option<(wharf_metastore::schema::DataSize, serde_json::Value)> {
    let config = store.to_config().ok()?;
    let size = match config.metadata_location().ok()? {
        MetadataLocation::Sqlite(path) => {
            if !path.exists() {
                return None;
            }
            wharf_metastore::schema::size_sqlite(&path).ok()?
        }
        MetadataLocation::Postgres(url) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?
            .block_on(wharf_metastore::schema::size_postgres(&url.0))
            .ok()?,
    };
    let rows = (size.repositories + size.manifests * 2 + size.tags + size.blobs * 2) as f64;
    let estimate = serde_json::json!({
        "backup": rows / 200_000.0,
        "schema": size.manifests as f64 / 500_000.0,
        "background": size.manifests as f64 / 20_000.0,
    });
    Some((size, estimate))
}

/// The registered content caches, with the version each last reported; none when the
/// store does not open or predates them.
fn content_caches(store: &StoreArgs) -> Vec<wharf_server::content_cache::CacheView> {
    let Ok(config) = store.to_config() else {
        return Vec::new();
    };
    // Planning never creates a store.
    if let Ok(MetadataLocation::Sqlite(path)) = config.metadata_location() {
        if !path.exists() {
            return Vec::new();
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let Ok(meta) = wharf_upgrade_engine::open_for_upgrade(&config).await else {
            return Vec::new();
        };
        wharf_server::content_cache::cache_views(meta.as_ref())
            .await
            .unwrap_or_default()
    })
}

fn status(store: &StoreArgs, format: &str) -> anyhow::Result<std::process::ExitCode> {
    let config = store.to_config()?;
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    // Fails clearly when there is no data at all.
    data_version(store)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let st = runtime.block_on(async {
        let meta = wharf_upgrade_engine::open_for_upgrade(&config).await?;
        anyhow::Ok(wharf_upgrade::status::status(meta.as_ref(), &own).await?)
    })?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    println!(
        "data: wharf {} (schema level {}); this binary: {own}",
        st.data_version, st.schema_level
    );
    if let Some(p) = st.plan.as_ref().filter(|p| !p.path.is_empty()) {
        let verdict = if p.allowed { "allowed" } else { "refused" };
        println!(
            "upgrade {} → {}: {verdict} (path: {})",
            p.from,
            p.to,
            p.path.join(" → ")
        );
    }
    if st.journal.is_empty() {
        println!("no upgrade to {own} has started");
    } else {
        println!(
            "upgrade to {}: step {} of {}",
            st.upgrading_to, st.steps_done, st.steps_total
        );
        for e in &st.journal {
            println!("  {} {}: {}", e.step, e.status, e.detail);
        }
    }
    for r in &st.replicas {
        println!(
            "replica {} at {}: {} ({})",
            r.id,
            r.address,
            r.version,
            if r.alive { "alive" } else { "not reporting" }
        );
    }
    for b in &st.background_migrations {
        let progress = match &b.progress {
            None => "not started".to_string(),
            Some(p) => {
                let eta = p["eta_secs"]
                    .as_u64()
                    .map(|s| format!(", ETA {s} s"))
                    .unwrap_or_default();
                format!(
                    "{}/{} manifests, {}/s{eta}",
                    p["done"], p["total"], p["rate"]
                )
            }
        };
        println!(
            "background migration {} (job {}): {} — {progress}",
            b.action, b.job, b.status
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

// One parameter per option of `upgrade check`.
#[allow(clippy::too_many_arguments)]
fn check(
    store: &StoreArgs,
    from: Option<Version>,
    to: Option<Version>,
    max_backup_age_hours: u64,
    skip_check: Vec<String>,
    reason: Option<String>,
    catalog: Option<std::path::PathBuf>,
    rolling: bool,
    format: &str,
) -> anyhow::Result<std::process::ExitCode> {
    let catalog = super::upgrade_check::load_catalog(catalog.as_deref())?;
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
        Some(v) => Ok(v),
        None => match data_version(store) {
            Ok(v) => Ok(v),
            // Data that is there but does not open (a full or read-only disk, a database
            // server that is down): the checks say why.
            Err(e) if e.is::<wharf_metastore::MetaError>() => Err(format!("{e:#}")),
            Err(e) => return Err(e),
        },
    };
    let to = to.unwrap_or_else(|| Version::parse(crate::VERSION).expect("the build's version"));
    let opts = super::upgrade_check::Options {
        max_backup_age: std::time::Duration::from_secs(max_backup_age_hours * 3600),
        skips: skip_check
            .into_iter()
            .map(|n| (n, reason.clone().unwrap_or_default()))
            .collect(),
        catalog,
        rolling,
    };
    let from_text = from
        .as_ref()
        .map_or_else(|_| "unknown".to_string(), Version::to_string);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let checks = runtime.block_on(super::upgrade_check::run_checks(&config, &from, &to, &opts))?;
    let failed = checks
        .iter()
        .filter(|c| c.status == super::upgrade_check::FAIL)
        .count();
    if format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"from": from.as_ref().ok().map(Version::to_string), "to": to.to_string(), "checks": checks, "failed": failed})
            )?
        );
    } else {
        println!("pre-flight checks for {from_text} → {to}");
        super::upgrade_check::print_checks(&checks, 22);
    }
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
