//! `wharf cache add|list|remove|token|choose`: content caches on the registry's
//! metadata store. The same operations exist in the management API
//! (`/api/v0/content_caches`). A cache itself runs as `wharf serve --cache-for URL`.

use anyhow::{bail, Context};
use clap::Subcommand;
use wharf_auth::secret;
use wharf_metastore::accounts::Subject;
use wharf_server::content_cache::{cache_views, new_cache_token};

use super::StoreArgs;

/// Manage content caches
///
/// A content cache serves the blob downloads of the users who chose it, near them; the
/// registry checks each download's permission and redirects it there. Register a cache with
/// `add` (it prints the cache's token), start it with `wharf serve --cache-for
/// REGISTRY_URL` and that token in WHARF_CACHE_TOKEN, then `choose` it for users or teams.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct CacheArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Register a cache and print its token (shown once)
    Add {
        name: String,
        /// Where clients are redirected to, e.g. https://cache-eu.example.com
        #[arg(long)]
        url: String,
        /// Shown to users choosing a cache, e.g. eu-west
        #[arg(long)]
        region: String,
    },
    /// List caches with their state, version and hit ratio
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Forget a cache: its users download from the registry again
    Remove { name: String },
    /// Replace a cache's token and print the new one (the old stops working)
    Token { name: String },
    /// Choose the cache a user or a team downloads from (--none: the registry)
    Choose {
        /// The cache's name
        #[arg(required_unless_present = "none")]
        cache: Option<String>,
        /// For this user
        #[arg(long, conflicts_with = "team", required_unless_present = "team")]
        user: Option<String>,
        /// For the members of this team (ORG/TEAM) without a choice of their own
        #[arg(long, value_name = "ORG/TEAM")]
        team: Option<String>,
        /// Download from the registry itself
        #[arg(long, conflicts_with = "cache")]
        none: bool,
    },
}

pub fn run(args: CacheArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = wharf_server::run::open_metastore(&config).await?;
        match args.command {
            CacheCommand::Add { name, url, region } => {
                if name.contains('/') || name.parse::<wharf_oci::RepoName>().is_err() || name.len() > 64 {
                    bail!("{name:?} is not a valid cache name: lower-case letters and digits, separated by '.', '_' or '-'");
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("--url {url:?} is not an http(s) URL such as https://cache-eu.example.com");
                }
                let token = new_cache_token();
                store
                    .create_content_cache(&name, url.trim_end_matches('/'), &region, &secret::token_hash(&token))
                    .await?;
                store.audit("cli", "content_cache.create", &name, Some(&format!("url={url} region={region}"))).await?;
                eprintln!("registered content cache {name} ({url}, {region}); its token (shown once):");
                println!("{token}");
            }
            CacheCommand::List { json } => {
                let views = cache_views(store.as_ref()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&views)?);
                } else {
                    println!("{:<20} {:<10} {:<12} {:<10} {:>9}  URL", "NAME", "STATE", "REGION", "VERSION", "HIT RATIO");
                    for v in views {
                        let ratio = v.hit_ratio.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
                        println!(
                            "{:<20} {:<10} {:<12} {:<10} {:>9}  {}",
                            v.name, v.state, v.region, v.version.as_deref().unwrap_or("-"), ratio, v.url
                        );
                    }
                }
            }
            CacheCommand::Remove { name } => {
                if !store.delete_content_cache(&name).await? {
                    bail!("no content cache {name}");
                }
                store.audit("cli", "content_cache.delete", &name, None).await?;
                println!("removed content cache {name}");
            }
            CacheCommand::Token { name } => {
                let token = new_cache_token();
                if !store.set_content_cache_token(&name, &secret::token_hash(&token)).await? {
                    bail!("no content cache {name}");
                }
                store.audit("cli", "content_cache.token", &name, None).await?;
                eprintln!("new token of {name} (restart the cache with it):");
                println!("{token}");
            }
            CacheCommand::Choose { cache, user, team, none: _ } => {
                let (subject, target) = match (user, team) {
                    (Some(u), _) => {
                        let found = store
                            .user_credentials(&u)
                            .await?
                            .with_context(|| format!("no user {u}"))?;
                        (Subject::User(found.user.id), format!("user:{u}"))
                    }
                    (None, Some(t)) => {
                        let (org, team) = t.split_once('/').context("--team is ORG/TEAM")?;
                        let o = store.org_by_name(org).await?.with_context(|| format!("no organisation {org}"))?;
                        let found = store
                            .team_by_name(o.id, team)
                            .await?
                            .with_context(|| format!("no team {t}"))?;
                        (Subject::Team(found.id), format!("team:{t}"))
                    }
                    (None, None) => bail!("name a --user or a --team"),
                };
                store.choose_content_cache(subject, cache.as_deref()).await?;
                let what = cache.as_deref().unwrap_or("none");
                store.audit("cli", "content_cache.choose", &target, Some(what)).await?;
                match cache {
                    Some(c) => println!("{target} downloads from content cache {c}"),
                    None => println!("{target} downloads from the registry"),
                }
            }
        }
        Ok(())
    })
}
