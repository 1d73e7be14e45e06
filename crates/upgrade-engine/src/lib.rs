//! wharf's upgrade engine: everything `wharf upgrade apply`, `rollback`, `verify` and
//! `rehearse` do, as a library that knows nothing of terminals or argument parsing.
//!
//! The engine reports what it does as typed events ([`Event`], from
//! `wharf_upgrade::events`, versioned on the wire) to an [`Events`] sink: the CLI
//! prints them as text or JSON lines, a test or a UI collects them. The read-only
//! half (plans, pre-flight checks) is in `wharf_upgrade` and
//! `wharf_server::upgrade_checks`, which the replicas' API also serves.
//!
//! - [`apply`]: from data at any supported older release to this binary's, through
//!   every required stop of the plan; each hop journalled step by step, so that a rerun
//!   resumes after any interruption.
//! - [`local`]: the local driver (the registry is stopped).
//! - [`rolling`]: the docker and external drivers (replicas replaced one at a time),
//!   and rollback before finalisation.
//! - [`background`]: background migrations, queued, waited for, or run here.
//! - [`verify`]: the checks through the registry as its clients reach it.
//! - [`rehearse`]: every hop on a scratch copy of a backup, measured.

use std::sync::Arc;

use semver::Version;

pub use wharf_upgrade::events::Event;

pub mod apply;
pub mod background;
pub mod local;
mod lock;
pub mod rehearse;
pub mod rolling;
mod store;
pub mod verify;

pub use apply::{ApplyOptions, Prepared};
pub use rolling::{DriverKind, Images, RollingOptions};
pub use store::{data_version, open_for_upgrade};

/// Where the engine's events go.
pub trait Events: Send + Sync {
    fn emit(&self, event: Event);

    /// Progress of the pre-upgrade backup: by default `progress` events, each phase's
    /// start and end and its bytes at most every quarter second. (A terminal draws
    /// bars instead.)
    fn backup_progress(&self) -> Box<dyn wharf_backup::Progress + '_>
    where
        Self: Sized,
    {
        Box::new(progress_events(self))
    }
}

/// Backup progress reported as `progress` events to `events`.
pub fn progress_events<E: Events>(events: &E) -> impl wharf_backup::Progress + '_ {
    ProgressEvents::new(events)
}

/// An upgrade of the data that `config` names, to `own` (this binary's release).
pub struct Engine {
    pub config: wharf_server::Config,
    pub own: Version,
    events: Arc<dyn Sink>,
}

/// [`Events`] as the engine holds it (object-safe, with the backup progress).
trait Sink: Send + Sync {
    fn emit(&self, event: Event);
    fn backup_progress(&self) -> Box<dyn wharf_backup::Progress + '_>;
}

impl<E: Events> Sink for E {
    fn emit(&self, event: Event) {
        Events::emit(self, event)
    }
    fn backup_progress(&self) -> Box<dyn wharf_backup::Progress + '_> {
        Events::backup_progress(self)
    }
}

impl Engine {
    pub fn new(
        config: wharf_server::Config,
        own: Version,
        events: impl Events + 'static,
    ) -> Engine {
        Engine {
            config,
            own,
            events: Arc::new(events),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        self.events.emit(event)
    }

    /// The schema level of release `v`: this build's own, or the catalog's.
    pub fn level_of(&self, v: &Version) -> anyhow::Result<u32> {
        if *v == self.own {
            return Ok(wharf_server::SCHEMA_LEVEL);
        }
        use anyhow::Context;
        wharf_upgrade::Catalog::embedded()
            .release(v)
            .map(|r| r.schema_level)
            .with_context(|| format!("release {v} is not in this build's catalog"))
    }
}

/// Backup progress as `progress` events.
struct ProgressEvents<'a, E: Events> {
    events: &'a E,
    state: std::sync::Mutex<(String, Option<u64>, u64, Option<std::time::Instant>)>,
}

impl<'a, E: Events> ProgressEvents<'a, E> {
    fn new(events: &'a E) -> Self {
        ProgressEvents {
            events,
            state: Default::default(),
        }
    }

    fn send(&self, phase: String, bytes: u64, total_bytes: Option<u64>, summary: Option<String>) {
        self.events.emit(Event::Progress {
            step: "backup".into(),
            phase,
            bytes,
            total_bytes,
            summary,
        });
    }
}

impl<E: Events> wharf_backup::Progress for ProgressEvents<'_, E> {
    fn step(&self, name: &str, total_bytes: Option<u64>) {
        *self.state.lock().unwrap() = (name.to_string(), total_bytes, 0, None);
        self.send(name.into(), 0, total_bytes, None);
    }

    fn advance(&self, bytes: u64) {
        let mut st = self.state.lock().unwrap();
        st.2 += bytes;
        if st
            .3
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(250))
        {
            st.3 = Some(std::time::Instant::now());
            self.send(st.0.clone(), st.2, st.1, None);
        }
    }

    fn finish(&self, summary: &str) {
        let st = self.state.lock().unwrap();
        self.send(st.0.clone(), st.2, st.1, Some(summary.into()));
    }
}

/// Events collected in memory, in order: for tests, and for callers that look at them
/// afterwards.
#[derive(Default, Clone)]
pub struct Collected(pub Arc<std::sync::Mutex<Vec<Event>>>);

impl Events for Collected {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

/// One hop as `apply` runs it: the hop, whether it is the last, the steps a previous
/// run journalled for it, the lock's holder, and the options.
pub(crate) struct HopRun<'a> {
    pub hop: &'a apply::Hop,
    pub last: bool,
    pub done: &'a [wharf_metastore::journal::JournalEntry],
    pub holder: &'a str,
    pub options: &'a ApplyOptions,
}

impl HopRun<'_> {
    fn is_done(&self, step: &str) -> bool {
        self.done.iter().any(|e| e.step == step)
    }

    /// Journals `step` of this hop.
    async fn record(
        &self,
        meta: &dyn wharf_metastore::MetaStore,
        step: &str,
        status: &str,
        detail: String,
    ) -> anyhow::Result<()> {
        meta.record_step(&wharf_metastore::journal::JournalEntry {
            from_version: self.hop.from.to_string(),
            to_version: self.hop.to.to_string(),
            step: step.to_string(),
            status: status.into(),
            at_ms: 0,
            detail,
        })
        .await?;
        Ok(())
    }
}

impl Engine {
    /// The `step` event: step `n` of `of`, with its status and what it did.
    fn step(&self, n: usize, of: usize, step: &str, status: &str, detail: Option<String>) {
        self.emit(Event::Step {
            n: Some(n),
            of: Some(of),
            step: step.to_string(),
            status: status.to_string(),
            detail,
        });
    }

    /// The pre-upgrade metadata backup of a hop; returns what it wrote.
    async fn backup(
        &self,
        meta: Arc<dyn wharf_metastore::MetaStore>,
        run: &HopRun<'_>,
    ) -> anyhow::Result<String> {
        use anyhow::Context;
        let (from, to) = (&run.hop.from, &run.hop.to);
        let dir = run
            .options
            .backup_dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("backups"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let stamp = wharf_metastore::now_ms() / 1000;
        let out = dir.join(format!("pre-upgrade-{from}-to-{to}-{stamp}.tar"));
        let level = meta.schema_level().await?;
        let progress = self.events.backup_progress();
        let s = wharf_backup::create(wharf_backup::BackupRequest {
            meta,
            blobs: None,
            out: &out,
            wharf_version: &from.to_string(),
            schema_level: level,
            source: wharf_server::run::metastore_kind(&self.config),
            progress: progress.as_ref(),
        })
        .await
        .context("the pre-upgrade backup failed; nothing was changed")?;
        Ok(format!(
            "metadata backup {} ({} rows, {} bytes)",
            s.path.display(),
            s.rows,
            s.bytes
        ))
    }
}
