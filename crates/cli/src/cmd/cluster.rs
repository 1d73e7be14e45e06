//! `wharf cluster status`: the replicas registered in the metadata store, their health
//! and the cluster's current issues (the same as `GET /api/v0/meta/cluster_status`).

use std::time::Duration;

use clap::Subcommand;
use wharf_server::cluster::{cluster_status, Thresholds};

use super::StoreArgs;

/// Inspect the cluster of replicas
#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// List replicas with their health, and current issues; exits 1 if any is critical
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        let store = wharf_server::run::open_metastore(&config).await?;
        let thresholds =
            Thresholds::for_interval(Duration::from_secs(config.heartbeat_interval_secs))
                .with_vulndb_stale_after(Duration::from_secs(config.vulndb_stale_after_secs));
        anyhow::Ok(cluster_status(store.as_ref(), &thresholds).await?)
    })?;
    let ClusterCommand::Status { json } = args.command;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{:<28} {:<28} {:<12} {:<8} {:>10}",
            "REPLICA", "ADDRESS", "VERSION", "HEALTH", "LAST SEEN"
        );
        for r in &status.replicas {
            let rep = &r.row.report;
            let health = if r.healthy { "ok" } else { "PROBLEM" };
            println!(
                "{:<28} {:<28} {:<12} {:<8} {:>8.1} s",
                rep.id,
                rep.address,
                rep.version,
                health,
                r.silent_for_ms as f64 / 1000.0
            );
        }
        if status.replicas.is_empty() {
            println!("(no replica is registered)");
        }
        if !status.proxies.is_empty() {
            println!();
            println!("{:<24} {:>8} {:>14}  UPSTREAMS", "PROXY", "IMAGES", "BYTES");
            for p in &status.proxies {
                println!(
                    "{:<24} {:>8} {:>14}  {}",
                    p.prefix,
                    p.images,
                    p.bytes,
                    p.upstreams.join(", ")
                );
            }
        }
        for i in &status.issues {
            println!(
                "{}: {}",
                if i.critical { "CRITICAL" } else { "warning" },
                i.description
            );
        }
    }
    let critical = status.issues.iter().filter(|i| i.critical).count();
    if critical > 0 {
        anyhow::bail!("the cluster has {critical} critical issue(s)");
    }
    Ok(())
}
