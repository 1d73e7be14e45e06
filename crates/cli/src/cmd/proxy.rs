//! `wharf proxy add|list|remove`: pull-through proxy repositories, on the registry's
//! metadata store (as `wharf user` works). Running replicas see a change within
//! seconds. The same operations exist in the management API (`/api/v0/proxies`).

use std::io::Read;

use anyhow::{bail, Context};
use clap::Subcommand;
use wharf_proxy::admin::{self as proxy_admin, ProxySpec, ProxyView};

use super::StoreArgs;

/// Manage pull-through proxy repositories of other registries
#[derive(clap::Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: ProxyCommand,
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Proxy repositories under PREFIX (e.g. `hub/`) from upstream registries
    Add {
        prefix: String,
        /// An upstream registry's base URL; repeat for failover, tried in order
        #[arg(long = "upstream", required = true, value_name = "URL")]
        upstreams: Vec<String>,
        /// User name for the upstreams
        #[arg(long)]
        username: Option<String>,
        /// Read the upstreams' password from standard input (first line)
        #[arg(long, requires = "username")]
        password_stdin: bool,
        /// Revalidate a tag upstream at most this often, in seconds
        #[arg(long, default_value_t = proxy_admin::DEFAULT_REVALIDATE_SECS)]
        revalidate_secs: u64,
        /// Retention: evict least-recently-used images above this many bytes
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Retention: evict images unused for this many days
        #[arg(long)]
        max_idle_days: Option<u32>,
    },
    /// List proxies (never their passwords)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop proxying PREFIX (what it stored stays, as pushed content would)
    Remove { prefix: String },
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = wharf_server::run::open_metastore(&config).await?;
        match args.command {
            ProxyCommand::Add {
                prefix,
                upstreams,
                username,
                password_stdin,
                revalidate_secs,
                max_bytes,
                max_idle_days,
            } => {
                let password = if password_stdin {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("cannot read the password from stdin")?;
                    Some(s.lines().next().unwrap_or("").to_string())
                } else {
                    None
                };
                let spec = ProxySpec {
                    upstreams,
                    username,
                    password,
                    revalidate_secs: Some(revalidate_secs),
                    max_bytes,
                    max_idle_days,
                };
                let p = proxy_admin::config_from(&prefix, spec, wharf_metastore::now_ms())
                    .map_err(anyhow::Error::msg)?;
                if let Some(why) = proxy_admin::overlap(&p, &store.proxies().await?) {
                    bail!("{why}");
                }
                store.create_proxy(&p).await?;
                proxy_admin::ensure_retention_schedule(store.as_ref()).await?;
                let details = serde_json::to_string(&ProxyView::from(&p))?;
                store
                    .audit("cli", "proxy.create", &p.prefix, Some(&details))
                    .await?;
                println!("{} now proxies {}", p.prefix, p.upstreams.join(", "));
            }
            ProxyCommand::List { json } => {
                let all = store.proxies().await?;
                let views: Vec<ProxyView> = all.iter().map(ProxyView::from).collect();
                if json {
                    println!("{}", serde_json::to_string_pretty(&views)?);
                } else {
                    println!(
                        "{:<24} {:<10} {:<14} {:<10} UPSTREAMS",
                        "PREFIX", "REVALIDATE", "MAX_BYTES", "IDLE_DAYS"
                    );
                    for v in views {
                        let dash = || "-".to_string();
                        println!(
                            "{:<24} {:<10} {:<14} {:<10} {}",
                            v.prefix,
                            format!("{}s", v.revalidate_secs),
                            v.max_bytes.map_or_else(dash, |b| b.to_string()),
                            v.max_idle_days.map_or_else(dash, |d| d.to_string()),
                            v.upstreams.join(", ")
                        );
                    }
                }
            }
            ProxyCommand::Remove { prefix } => {
                let prefix = proxy_admin::normalise_prefix(&prefix).map_err(anyhow::Error::msg)?;
                if !store.delete_proxy(&prefix).await? {
                    bail!("there is no proxy {prefix}");
                }
                store.audit("cli", "proxy.delete", &prefix, None).await?;
                println!("{prefix} is no longer a proxy");
            }
        }
        anyhow::Ok(())
    })
}
