//! `wharf upgrade verify`: the arguments, and the printing of what the engine's
//! verification found (wharf_upgrade_engine::verify).

use std::process::ExitCode;
use std::time::Duration;

use semver::Version;
use serde_json::json;

use super::StoreArgs;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The registry as its clients reach it: a replica or the load balancer in front of
    /// the replicas (http://127.0.0.1:5000, https://registry.example.com)
    #[arg(long, value_name = "URL")]
    url: String,
    /// Sign in as this user; an access token works as the password. The cluster status
    /// needs an administrator, the canary push and delete access to wharf-verify/canary.
    /// Without it only a registry with authentication off can be verified
    #[arg(long, value_name = "NAME")]
    username: Option<String>,
    /// Read the password (or access token) from standard input, first line [default:
    /// the WHARF_PASSWORD environment variable]
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// text or json
    #[arg(long, default_value = "text")]
    format: String,
    /// Give up on a request to the registry after this many seconds
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout_secs: u64,
}

/// The password of `user`: the first line of standard input, or WHARF_PASSWORD;
/// `stdin_flag` says whether the command has --password-stdin, for the error.
pub fn password(user: &str, from_stdin: bool, stdin_flag: bool) -> anyhow::Result<String> {
    let secret = if from_stdin {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
        s.lines().next().unwrap_or("").to_string()
    } else {
        std::env::var("WHARF_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "no password for {user}: {}set WHARF_PASSWORD (an access token works as the password)",
                if stdin_flag { "pass --password-stdin or " } else { "" }
            )
        })?
    };
    if secret.is_empty() {
        anyhow::bail!("the password for {user} is empty");
    }
    Ok(secret)
}

pub fn run(store: &StoreArgs, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if args.format != "text" && args.format != "json" {
        anyhow::bail!("--format is text or json, not {:?}", args.format);
    }
    let base = wharf_upgrade_engine::verify::check_url(&args.url)?;
    let creds = match &args.username {
        None => None,
        Some(user) => Some((user.clone(), password(user, args.password_stdin, true)?)),
    };
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    // Read before the runtime starts: it runs one of its own.
    let data = super::upgrade::data_version(store);
    let config = store.to_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let found = runtime.block_on(wharf_upgrade_engine::verify::verify(
        &config,
        data,
        &own,
        &base,
        creds,
        Duration::from_secs(args.timeout_secs),
    ))?;
    let failed = found.failed();
    if args.format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "url": base,
                "version": crate::VERSION,
                "checks": found.checks,
                "failed": failed,
                "canary": found.canary,
            }))?
        );
    } else {
        println!("verifying {base} against wharf {own}");
        super::upgrade_check::print_checks(&found.checks, 15);
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
