//! The `wharf` command: one binary, one file per subcommand under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("WHARF_COMMIT");

#[derive(Parser)]
#[command(name = "wharf", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WHARF_COMMIT"), ")"))]
#[command(about = "A secure, self-hosted OCI/Docker container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    Serve(cmd::serve::ServeArgs),
    User(cmd::user::UserArgs),
    Cache(cmd::cache::CacheArgs),
    Cluster(cmd::cluster::ClusterArgs),
    Backup(cmd::backup::BackupArgs),
    Jobs(cmd::jobs::JobsArgs),
    Gc(cmd::gc::GcArgs),
    Vulndb(cmd::vulndb::VulndbArgs),
    Scan(cmd::scan::ScanArgs),
    Proxy(cmd::proxy::ProxyArgs),
    Upgrade(cmd::upgrade::UpgradeArgs),
    Restore(cmd::backup::RestoreArgs),
    Version(cmd::version::VersionArgs),
}

fn main() -> ExitCode {
    // `wharf … | head` ends quietly when head exits, as other command-line tools do,
    // rather than panicking on the broken pipe.
    // SAFETY: before any thread starts; restores the default disposition of SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Command::Upgrade(args) = cli.command {
        return match cmd::upgrade::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("wharf: error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::User(args) => cmd::user::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Cluster(args) => cmd::cluster::run(args),
        Command::Backup(args) => cmd::backup::backup(args),
        Command::Jobs(args) => cmd::jobs::run(args),
        Command::Gc(args) => cmd::gc::run(args),
        Command::Vulndb(args) => cmd::vulndb::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Upgrade(_) => unreachable!("handled above"),
        Command::Restore(args) => cmd::backup::restore(args),
        Command::Version(args) => cmd::version::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
