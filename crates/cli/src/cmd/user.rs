//! `wharf user create|list|set-password|disable|enable`: account administration on the
//! registry's metadata store, for the first admin, scripts, and recovery (a forgotten
//! admin password). The same operations exist in the management API.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context};
use clap::Subcommand;
use wharf_auth::secret;

use super::StoreArgs;

/// Manage user accounts
#[derive(clap::Args)]
pub struct UserArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (password from --password-stdin, or asked for on a terminal)
    Create {
        name: String,
        /// Make the user a system administrator
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (first line)
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password
    SetPassword {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: their passwords and tokens stop working at once
    Disable { name: String },
    /// Enable a disabled user
    Enable { name: String },
}

const MIN_PASSWORD_LEN: usize = 8;

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let pw = if from_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the password from stdin")?;
        s.lines().next().unwrap_or("").to_string()
    } else if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password("Password: ")?;
        if rpassword::prompt_password("Again: ")? != pw {
            bail!("the passwords differ");
        }
        pw
    } else {
        bail!("no password: pass --password-stdin, or run on a terminal to be asked");
    };
    if pw.chars().count() < MIN_PASSWORD_LEN {
        bail!("passwords need at least {MIN_PASSWORD_LEN} characters");
    }
    Ok(pw)
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let config = args.store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = wharf_server::run::open_metastore(&config).await?;
        match args.command {
            UserCommand::Create { name, admin, password_stdin } => {
                if name.contains('/') || name.parse::<wharf_oci::RepoName>().is_err() || name.len() > 64 {
                    bail!("{name:?} is not a valid user name: lower-case letters and digits, separated by '.', '_' or '-'");
                }
                let pw = read_password(password_stdin)?;
                let user = store.create_user(&name, &secret::hash_password(&pw), admin).await?;
                store.audit("cli", "user.create", &name, Some(&format!("admin={admin}"))).await?;
                println!("created user {}{}", user.name, if admin { " (administrator)" } else { "" });
            }
            UserCommand::List { json } => {
                let users = store.list_users().await?;
                if json {
                    let v: Vec<_> = users
                        .iter()
                        .map(|u| serde_json::json!({"name": u.name, "admin": u.is_admin, "disabled": u.disabled, "created_at_ms": u.created_at_ms}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("{:<32} {:<6} {:<8}", "NAME", "ADMIN", "DISABLED");
                    for u in users {
                        println!("{:<32} {:<6} {:<8}", u.name, if u.is_admin { "yes" } else { "no" }, if u.disabled { "yes" } else { "no" });
                    }
                }
            }
            UserCommand::SetPassword { name, password_stdin } => {
                let pw = read_password(password_stdin)?;
                if !store.set_password(&name, &secret::hash_password(&pw)).await? {
                    bail!("no user {name}");
                }
                store.audit("cli", "user.update", &name, Some("password")).await?;
                println!("password of {name} changed");
            }
            UserCommand::Disable { name } => {
                if !store.set_disabled(&name, true).await? {
                    bail!("no user {name}");
                }
                store.audit("cli", "user.update", &name, Some("disabled=true")).await?;
                println!("{name} is disabled");
            }
            UserCommand::Enable { name } => {
                if !store.set_disabled(&name, false).await? {
                    bail!("no user {name}");
                }
                store.audit("cli", "user.update", &name, Some("disabled=false")).await?;
                println!("{name} is enabled");
            }
        }
        Ok(())
    })
}
