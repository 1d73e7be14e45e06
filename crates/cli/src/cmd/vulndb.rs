//! `wharf vulndb`: the vulnerability database in the metadata store, which every
//! replica shares. `import` is the air-gapped path: OSV archives or records copied in
//! by hand, validated in full before anything is replaced, then every stored image
//! inventory matched again (no image is rescanned).

use std::path::PathBuf;

use async_trait::async_trait;
use clap::Subcommand;
use wharf_jobs::vulndb::{archives_in, import_archives, rematch, Log};

use super::StoreArgs;

/// The vulnerability database: import OSV advisories (air-gapped), show its status
#[derive(clap::Args)]
pub struct VulndbArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: VulndbCommand,
}

#[derive(Subcommand)]
enum VulndbCommand {
    /// Import OSV advisories, then match every stored image inventory against them
    ///
    /// PATH is a zip of OSV records as osv.dev publishes them (`<ecosystem>/all.zip`,
    /// or `osv-<ecosystem>.zip`), a directory of such zips, or a directory of
    /// per-ecosystem folders of `*.json` records. Every record is validated before the
    /// current database is replaced; one invalid record refuses the whole import and
    /// leaves the current database as it was.
    Import { path: PathBuf },
    /// The current database (source, time, records per ecosystem) and the last imports
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Imports to list
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

/// Progress lines on stderr, so stdout keeps only the summary.
struct Stderr;

#[async_trait]
impl Log for Stderr {
    async fn line(&self, line: String) {
        eprintln!("{line}");
    }
}

pub fn run(args: VulndbArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = wharf_server::run::open_metastore(&config).await?;
        match args.command {
            VulndbCommand::Import { path } => {
                let archives = archives_in(&path)?;
                let source = format!("file:{}", path.display());
                let imported = import_archives(store.as_ref(), &source, &archives, &Stderr).await?;
                let per: Vec<String> = imported
                    .per_ecosystem
                    .iter()
                    .map(|(e, n)| format!("{e} {n}"))
                    .collect();
                println!(
                    "imported database version {}: {} advisories ({})",
                    imported.version_id,
                    imported.records,
                    per.join(", ")
                );
                let m = rematch(store.as_ref(), &Stderr).await?;
                println!(
                    "matched {} distinct packages again: {} matches added, {} removed; {} images newly affected",
                    m.packages, m.added, m.removed, m.newly_affected_images
                );
            }
            VulndbCommand::Status { json, limit } => {
                let versions = store.vulndb_versions(limit).await?;
                let current = store.current_vulndb().await?;
                if json {
                    let row = |v: &wharf_metastore::scan::VulndbVersion| {
                        serde_json::json!({
                            "id": v.id,
                            "source": v.source,
                            "status": v.status,
                            "started_at_ms": v.started_at_ms,
                            "finished_at_ms": v.finished_at_ms,
                            "records": v.records,
                            "ecosystems": v.ecosystems_json.as_deref().and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok()),
                            "error": v.error,
                        })
                    };
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "current": current.as_ref().map(row),
                            "versions": versions.iter().map(row).collect::<Vec<_>>(),
                        }))?
                    );
                    return Ok(());
                }
                match &current {
                    None => println!("no vulnerability database yet: import one with `wharf vulndb import PATH`"),
                    Some(v) => println!(
                        "current: version {} from {}, imported {} ({} advisories: {})",
                        v.id,
                        v.source,
                        super::jobs::time(v.finished_at_ms.unwrap_or(v.started_at_ms)),
                        v.records.unwrap_or(0),
                        v.ecosystems_json.as_deref().unwrap_or("{}")
                    ),
                }
                for v in &versions {
                    println!(
                        "{:>6}  {:<10}  {}  {}{}",
                        v.id,
                        v.status,
                        super::jobs::time(v.started_at_ms),
                        v.source,
                        v.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default()
                    );
                }
            }
        }
        Ok(())
    })
}
