//! `wharf upgrade rehearse`: the arguments and the printing; the engine rehearses
//! (wharf_upgrade_engine::rehearse).

use std::path::PathBuf;

use anyhow::bail;
use wharf_metastore::schema::DataSize;
use wharf_server::config::MetadataLocation;

use super::upgrade_apply::Report;
use super::StoreArgs;

pub fn run(
    store: &StoreArgs,
    backup: Option<PathBuf>,
    format: &str,
) -> anyhow::Result<std::process::ExitCode> {
    if format != "text" && format != "json" {
        bail!("--format is text or json, not {format:?}");
    }
    let json = format == "json";
    // In JSON the result is one document at the end: the steps are not printed.
    let engine = if json {
        super::upgrade_apply::engine(store, Quiet)?
    } else {
        super::upgrade_apply::engine(store, Report { json: false })?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (rehearsal, record) = runtime.block_on(async {
        let source = engine.rehearsal_source(backup).await?;
        if !json {
            println!(
                "rehearsing {} → {} on a copy of {}",
                source.from,
                source.plan.path.join(" → "),
                source.backup.display()
            );
        }
        engine.rehearse(source).await
    })?;
    let now = current_size(&engine.config).unwrap_or_else(|| rehearsal.data.clone());
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

/// Events nobody reads.
struct Quiet;

impl wharf_upgrade_engine::Events for Quiet {
    fn emit(&self, _: wharf_upgrade::events::Event) {}
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
