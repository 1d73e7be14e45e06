//! The local driver: the registry is stopped, this process moves its data. Each hop's
//! steps, each journalled when done:
//!
//! 1. `checks`: no replica is serving; the data directory takes a write and an fsync;
//!    an earlier upgrade's background migrations are finished (run here if not).
//! 2. `backup`: a metadata backup (unless skipped with a recorded reason).
//! 3. `expand`: the hop's schema migrations, in one transaction (all or nothing).
//! 4. `finalise`: the expanded levels become the data's, and the hop's release the
//!    cluster's; older releases refuse the data from now on.
//! 5. `background`: the hop's background migrations. After the last hop they are
//!    queued for the replicas; after an earlier one this process runs them to their
//!    end before the next hop (nothing else would: the registry is stopped).

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use wharf_metastore::MetaStore;
use wharf_server::config::MetadataLocation;

use crate::{Engine, HopRun};

pub use wharf_upgrade::status::LOCAL_STEPS as STEPS;

impl Engine {
    pub(crate) async fn local_hop(
        &self,
        location: &MetadataLocation,
        meta: Arc<dyn MetaStore>,
        run: &HopRun<'_>,
    ) -> anyhow::Result<()> {
        let hop = run.hop;
        let total = STEPS.len();
        for (i, step) in STEPS.iter().enumerate() {
            if run.is_done(step) {
                self.step(i + 1, total, step, "done_before", None);
                continue;
            }
            crate::lock::renew(meta.as_ref(), run.holder).await?;
            let (status, detail) = match *step {
                "checks" => ("done", self.local_checks(meta.clone(), run).await?),
                "backup" => match &run.options.skip_backup {
                    Some(reason) => ("skipped", format!("skipped by {}: {reason}", run.holder)),
                    None => ("done", self.backup(meta.clone(), run).await?),
                },
                "expand" => {
                    let applied = crate::store::expand(location, hop.level).await?;
                    ("done", format!("schema levels applied: {applied:?}"))
                }
                "finalise" => {
                    let levels =
                        crate::store::finalise(location, hop.level, &hop.to.to_string()).await?;
                    (
                        "done",
                        format!(
                            "the data belongs to {} (schema levels finalised: {levels:?})",
                            hop.to
                        ),
                    )
                }
                "background" if run.last => ("done", self.queue_background(hop.level).await?.1),
                "background" => (
                    "done",
                    self.run_background_here(
                        meta.clone(),
                        hop.level,
                        run.options.migration_timeout,
                    )
                    .await?,
                ),
                other => unreachable!("no local step {other:?}"),
            };
            run.record(meta.as_ref(), step, status, detail.clone())
                .await?;
            self.step(i + 1, total, step, status, Some(detail));
        }
        Ok(())
    }

    async fn local_checks(
        &self,
        meta: Arc<dyn MetaStore>,
        run: &HopRun<'_>,
    ) -> anyhow::Result<String> {
        let (rows, now) = meta.replicas().await?;
        for r in &rows {
            let silent = now - r.heartbeat_at_ms;
            if silent <= 3 * r.report.heartbeat_interval_ms.max(1000) {
                bail!(
                    "check `replicas`: replica {} at {} is serving (reported {} s ago); the local driver needs the registry stopped",
                    r.report.id,
                    r.report.address,
                    silent / 1000
                );
            }
        }
        // The data directory takes a write and an fsync.
        let dir = &self.config.data_dir;
        std::fs::create_dir_all(dir)?;
        let probe = dir.join(".wharf-upgrade-probe");
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"probe")?;
            f.sync_all()
        })();
        let _ = std::fs::remove_file(&probe);
        result.with_context(|| {
            format!(
                "check `data-dir`: {} does not take a write and an fsync",
                dir.display()
            )
        })?;
        // An earlier upgrade's background migrations finish before this one starts
        // (the guide's rule); the registry is stopped, so they run here.
        let from_level = self.level_of(&run.hop.from)?;
        let earlier = if crate::background::unfinished(meta.as_ref(), from_level)
            .await?
            .is_empty()
        {
            String::new()
        } else {
            let done = self
                .run_background_here(meta, from_level, run.options.migration_timeout)
                .await?;
            format!("; an earlier upgrade's background migrations: {done}")
        };
        Ok(format!(
            "no replica serving; the data directory takes writes{earlier}"
        ))
    }
}
