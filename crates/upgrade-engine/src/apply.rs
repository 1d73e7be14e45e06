//! `apply`: from data at any supported older release to this binary's, through every
//! required stop of the plan (the guide forbids skipping a minor version). Each hop is
//! the driver's steps, journalled under its own pair of versions when done, so that a
//! rerun resumes after any interruption, between hops included. Before a hop starts,
//! the previous hop's background migrations have finished.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use semver::Version;
use wharf_upgrade::events::HopRef;

use crate::rolling::{DriverKind, RollingOptions};
use crate::{Engine, Event};

/// How `apply` goes about it.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    pub rolling: RollingOptions,
    /// Where the pre-upgrade backups go [default: DATA_DIR/backups].
    pub backup_dir: Option<PathBuf>,
    /// Skip the backups, for this recorded reason.
    pub skip_backup: Option<String>,
    /// How long a hop's background migrations may take before the next hop starts.
    pub migration_timeout: Duration,
}

/// One release-to-release step of an upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub from: Version,
    pub to: Version,
    /// The schema level of `to`.
    pub level: u32,
}

/// What `prepare` found.
#[derive(Debug)]
pub enum Prepared {
    /// The data is at this release, with nothing left to do (a `finished` event says
    /// so).
    UpToDate,
    /// The rules refuse the upgrade (a `refused` event says why).
    Refused,
    /// The hops to go through, the first possibly one a previous run left unfinished.
    Ready {
        hops: Vec<Hop>,
        warnings: Vec<String>,
    },
}

impl Prepared {
    /// The whole upgrade's first and last versions, for a confirmation.
    pub fn span(&self) -> Option<(&Version, &Version)> {
        match self {
            Prepared::Ready { hops, .. } => Some((&hops[0].from, &hops[hops.len() - 1].to)),
            _ => None,
        }
    }
}

impl Engine {
    /// Reads the data's version and the journal, and plans the hops to this release
    /// (a `plan` event lists them when there are several). Changes nothing.
    pub async fn prepare(&self, driver: DriverKind) -> anyhow::Result<Prepared> {
        let own = &self.own;
        let data = crate::store::data_version(&self.config).await?;
        let meta = crate::store::open_for_upgrade(&self.config).await?;
        let catalog = wharf_upgrade::Catalog::embedded();
        let mut versions = catalog.versions();
        if !versions.contains(own) {
            versions.push(own.clone());
        }
        // Resuming: an upgrade into the data's version may have steps left (its
        // background migrations, say), whether it was the last hop or one before.
        let journal_into_data = meta.journal(&data.to_string()).await?;
        let unfinished = wharf_upgrade::status::unfinished_from(&journal_into_data, driver.steps())
            .map(Version::parse)
            .transpose()?;
        if data == *own && unfinished.is_none() {
            self.emit(Event::Finished {
                version: own.to_string(),
                changed: Some(false),
                rolled_back: false,
            });
            return Ok(Prepared::UpToDate);
        }
        let mut pairs: Vec<(Version, Version)> = Vec::new();
        if let Some(f) = unfinished {
            pairs.push((f, data.clone()));
        }
        let mut warnings = Vec::new();
        if data != *own {
            let plan = wharf_upgrade::plan(&data, own, &versions, false);
            if plan.path.last() != Some(&own.to_string()) {
                self.emit(Event::Refused {
                    from: data.to_string(),
                    to: own.to_string(),
                    driver: Some(driver.name().into()),
                    reason: plan.reason.clone(),
                    path: plan.path.clone(),
                    plan: serde_json::to_value(&plan)?,
                });
                return Ok(Prepared::Refused);
            }
            let mut previous = data.clone();
            for stop in &plan.path {
                let stop = Version::parse(stop)?;
                pairs.push((previous, stop.clone()));
                previous = stop;
            }
            warnings = plan.warnings;
        }
        let hops = pairs
            .into_iter()
            .map(|(from, to)| {
                let level = self.level_of(&to)?;
                anyhow::Ok(Hop { from, to, level })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if hops.len() > 1 {
            self.emit(Event::Plan {
                hops: hops
                    .iter()
                    .map(|h| HopRef {
                        from: h.from.to_string(),
                        to: h.to.to_string(),
                    })
                    .collect(),
            });
        }
        Ok(Prepared::Ready { hops, warnings })
    }

    /// Goes through `hops` (from [`Engine::prepare`]) with the driver `options` name.
    pub async fn apply(
        &self,
        hops: &[Hop],
        warnings: &[String],
        options: &ApplyOptions,
    ) -> anyhow::Result<()> {
        let location = self
            .config
            .metadata_location()
            .map_err(anyhow::Error::msg)?;
        let meta = crate::store::open_for_upgrade(&self.config).await?;
        let driver = options.rolling.driver;
        // Every hop's image is there, and the replicas can be found, before anything
        // changes.
        let rolling = match driver {
            DriverKind::Local => None,
            _ => Some(
                self.rolling_drivers(&options.rolling, meta.clone(), hops)
                    .await?,
            ),
        };
        self.with_lock(meta, |holder| async move {
            // Planned before the lock was taken: another run may have moved the data
            // since.
            let data = crate::store::data_version(&self.config).await?;
            if data != hops[0].from && data != hops[0].to {
                bail!(
                    "the data is at {data} now, not at {} as planned (another upgrade ran meanwhile): run the command again",
                    hops[0].from
                );
            }
            for (i, hop) in hops.iter().enumerate() {
                let last = i + 1 == hops.len();
                // Opened afresh for each hop: the previous hop moved the schema.
                let meta = crate::store::open_for_upgrade(&self.config).await?;
                let done: Vec<_> = meta
                    .journal(&hop.to.to_string())
                    .await?
                    .into_iter()
                    .filter(|e| e.from_version == hop.from.to_string())
                    .collect();
                self.emit(Event::Start {
                    from: hop.from.to_string(),
                    to: hop.to.to_string(),
                    resuming: !done.is_empty(),
                    driver: Some(driver.name().into()),
                    steps: driver.steps().iter().map(|s| s.to_string()).collect(),
                    warnings: warnings.to_vec(),
                    rollback: false,
                });
                let hop_run = crate::HopRun {
                    hop,
                    last,
                    done: &done,
                    holder: &holder,
                    options,
                };
                match &rolling {
                    None => self.local_hop(&location, meta.clone(), &hop_run).await,
                    Some(drivers) => {
                        self.rolling_hop(&location, meta.clone(), drivers, &hop_run)
                            .await
                    }
                }
                .with_context(|| format!("the upgrade {} → {}", hop.from, hop.to))?;
            }
            anyhow::Ok(())
        })
        .await?;
        self.emit(Event::Finished {
            version: self.own.to_string(),
            changed: Some(true),
            rolled_back: false,
        });
        Ok(())
    }
}
