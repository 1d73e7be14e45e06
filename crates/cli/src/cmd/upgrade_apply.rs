//! `wharf upgrade apply` and `wharf upgrade rollback`: the arguments, the confirmation,
//! and the printing of the engine's events (wharf_upgrade_engine does the work).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use semver::Version;
use wharf_upgrade::events::{Envelope, Event};
use wharf_upgrade_engine::{ApplyOptions, DriverKind, Engine, Prepared};

use super::upgrade_rolling::RollingArgs;
use super::StoreArgs;

/// What the upgrade commands tell their user: lines of text (with progress bars on a
/// terminal), or with `--format json` one JSON event per line on stdout, for
/// automation.
#[derive(Clone, Copy)]
pub struct Report {
    pub(crate) json: bool,
}

impl Report {
    pub fn new(format: &str) -> anyhow::Result<Report> {
        match format {
            "text" => Ok(Report { json: false }),
            "json" => Ok(Report { json: true }),
            other => bail!("--format is text or json, not {other:?}"),
        }
    }
}

impl wharf_upgrade_engine::Events for Report {
    /// Prints the event: as text, or as one line of JSON (`{"v": 1, "event": …}`).
    fn emit(&self, event: Event) {
        if self.json {
            println!("{}", serde_json::json!(Envelope::new(event)));
        } else if let Some(text) = event.text() {
            println!("{text}");
        }
        let _ = std::io::stdout().flush();
    }

    fn backup_progress(&self) -> Box<dyn wharf_backup::Progress + '_> {
        if self.json {
            Box::new(wharf_upgrade_engine::progress_events(self))
        } else {
            Box::new(super::backup::Bars::new())
        }
    }
}

/// The engine for this build, reporting to `events`.
pub fn engine(
    store: &StoreArgs,
    events: impl wharf_upgrade_engine::Events + 'static,
) -> anyhow::Result<Engine> {
    let own = Version::parse(crate::VERSION).expect("the build's version is a version");
    Ok(Engine::new(store.to_config()?, own, events))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs `work`, and reports its error as a `failed` event.
fn reported(
    report: Report,
    work: impl FnOnce() -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let result = work();
    if let Err(e) = &result {
        wharf_upgrade_engine::Events::emit(
            &report,
            Event::Failed {
                error: format!("{e:#}"),
            },
        );
    }
    result
}

/// Asks on the terminal whether to go from `from` to `to`.
fn confirm(from: &Version, to: &Version) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("not on a terminal: pass --yes to upgrade without confirmation");
    }
    print!("Upgrade the data from {from} to {to}? A backup comes first. [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not confirmed; nothing changed");
    }
    Ok(())
}

pub struct ApplyArgs {
    pub yes: bool,
    pub backup_dir: Option<PathBuf>,
    pub skip_backup: Option<String>,
    pub migration_timeout_secs: u64,
}

pub fn run(
    store: &StoreArgs,
    rolling: &RollingArgs,
    args: ApplyArgs,
    report: Report,
) -> anyhow::Result<ExitCode> {
    reported(report, || {
        let options = ApplyOptions {
            rolling: rolling.options(true)?,
            backup_dir: args.backup_dir,
            skip_backup: args.skip_backup,
            migration_timeout: Duration::from_secs(args.migration_timeout_secs),
        };
        let engine = engine(store, report)?;
        runtime()?.block_on(async {
            let prepared = engine.prepare(options.rolling.driver).await?;
            if !args.yes {
                if let Some((from, to)) = prepared.span() {
                    if options.rolling.driver != DriverKind::Local {
                        bail!("a rolling upgrade needs --yes (it replaces serving replicas)");
                    }
                    if report.json {
                        bail!("not on a terminal: pass --yes to upgrade without confirmation");
                    }
                    confirm(from, to)?;
                }
            }
            let (hops, warnings) = match prepared {
                Prepared::UpToDate => return Ok(ExitCode::SUCCESS),
                Prepared::Refused => return Ok(ExitCode::FAILURE),
                Prepared::Ready { hops, warnings } => (hops, warnings),
            };
            engine.apply(&hops, &warnings, &options).await?;
            Ok(ExitCode::SUCCESS)
        })
    })
}

pub fn rollback(
    store: &StoreArgs,
    rolling: &RollingArgs,
    yes: bool,
    report: Report,
) -> anyhow::Result<ExitCode> {
    reported(report, || {
        if !yes {
            bail!("a rollback needs --yes (it replaces serving replicas)");
        }
        let options = rolling.options(false)?;
        let engine = engine(store, report)?;
        runtime()?.block_on(engine.rollback(&options))?;
        Ok(ExitCode::SUCCESS)
    })
}
