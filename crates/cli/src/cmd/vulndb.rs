//! `wharf vulndb`: the vulnerability database in the metadata store, which every
//! replica shares. `import` is the air-gapped path: OSV archives or records copied in
//! by hand, validated in full before anything is replaced, then every stored image
//! inventory matched again (no image is rescanned). `update` is the online path, the
//! `vulndb_update` job run here: download, import if anything changed, match again.

use std::path::PathBuf;

use async_trait::async_trait;
use clap::Subcommand;
use wharf_jobs::vulndb::{archives_in, import_archives, rematch, Log};

use super::StoreArgs;

/// The vulnerability database: update it online, import OSV advisories (air-gapped), show its status
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
    /// Download the OSV archives, import them if they changed, then match every stored
    /// image inventory against them
    ///
    /// Downloads URL/ECOSYSTEM/all.zip for each ecosystem (URL and ecosystems from the
    /// configuration's vulndb_url and vulndb_ecosystems unless given here), asking only
    /// for what changed since the current database came from the same URL. When nothing
    /// changed, nothing is imported. A failed download or import leaves the current
    /// database in place, is recorded as a failed version (see `wharf vulndb status`)
    /// and exits non-zero with the ecosystem, the URL and the cause. Runs on the
    /// metadata store directly, as the scheduled `vulndb_update` job does; progress goes
    /// to stderr.
    Update {
        /// Base URL of the archives, e.g. https://osv-vulnerabilities.storage.googleapis.com
        /// [default: the configured vulndb_url]
        #[arg(long, env = "WHARF_VULNDB_URL", value_name = "URL")]
        url: Option<String>,
        /// An ecosystem to download, as OSV names its folder (repeat for several)
        /// [default: the configured vulndb_ecosystems]
        #[arg(long = "ecosystem", value_name = "ECOSYSTEM")]
        ecosystems: Vec<String>,
        /// Proxy for the downloads [default: the configured vulndb_proxy, else
        /// HTTPS_PROXY / HTTP_PROXY / NO_PROXY]
        #[arg(long, env = "WHARF_VULNDB_PROXY", value_name = "URL")]
        proxy: Option<String>,
    },
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
            VulndbCommand::Update {
                url,
                ecosystems,
                proxy,
            } => {
                let Some(url) = url.or_else(|| config.vulndb_url.clone()) else {
                    anyhow::bail!(
                        "no URL to update from: pass --url URL or set vulndb_url in the configuration (an air-gapped registry uses `wharf vulndb import PATH`)"
                    );
                };
                let ecosystems = if ecosystems.is_empty() {
                    config.vulndb_ecosystems.clone()
                } else {
                    ecosystems
                };
                let mut fetch = wharf_jobs::vulndb_fetch::FetchConfig::new(url, ecosystems);
                fetch.proxy = proxy.or_else(|| config.vulndb_proxy.clone());
                let outcome = wharf_jobs::vulndb_update::update(store.as_ref(), &fetch, &Stderr)
                    .await
                    .map_err(|e| anyhow::anyhow!("the update failed: {e:#}; the current database stays"))?;
                println!("{}", outcome.summary());
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
                    None => println!("no vulnerability database yet: download one with `wharf vulndb update` (or set vulndb_url), or import one with `wharf vulndb import PATH`"),
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
