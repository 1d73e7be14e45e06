//! `gc`: online garbage collection, while the registry serves.
//!
//! 1. With `delete_untagged`, manifests that no tag and no other manifest refers to
//!    (referrers such as signatures stay with their subject).
//! 2. Links from repositories to blobs that no manifest of the repository refers to.
//! 3. Blobs that no repository links any more: record and bytes.
//!
//! Nothing younger than the grace period is touched (a push in progress has uploaded
//! blobs that no manifest refers to yet), and every deletion is checked again by the
//! store under the locks writers take. Runs can be time-boxed and simply start over:
//! what an earlier run deleted is gone, what it did not reach is found again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use wharf_metastore::gc::DeleteBytes;
use wharf_oci::Digest;

use super::Stores;
use crate::{Finished, JobContext, Stop};

pub struct GarbageCollect {
    stores: Stores,
}

/// A run's default share of wall time, in percent. Flat out, a run takes a core and the
/// metadata store in bursts, and pushes meanwhile lose most of their throughput. On
/// SQLite every push shares the one writer with GC; at 5% pushes keep their throughput
/// within the noise, at 10% they lose about a tenth (docs/benchmarks.md). PostgreSQL
/// has no single writer, and a run there costs more wall time per item, so 10%.
pub fn default_busy_percent(on_postgres: bool) -> u8 {
    if on_postgres {
        10
    } else {
        5
    }
}

impl GarbageCollect {
    pub fn new(stores: Stores) -> Self {
        GarbageCollect { stores }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcParams {
    /// Only what is older than this is collected [default: the configured grace period].
    pub grace_secs: Option<u64>,
    /// Also delete untagged manifests that nothing refers to.
    #[serde(default)]
    pub delete_untagged: bool,
    /// Report what would go; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The share of wall time, in percent (1–100), that the run may spend working: after
    /// each page or batch it pauses in proportion, leaving the metadata store, the blob
    /// store and the CPU to the registry's clients. 100 runs flat out [default: the
    /// configured gc_busy_percent: 5 on SQLite, 10 on PostgreSQL].
    pub busy_percent: Option<u8>,
}

/// What a run removed (or, dry, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub manifests: u64,
    pub links: u64,
    pub blobs: u64,
    pub bytes: u64,
}

/// Candidates read per query; also the batch size of link and manifest deletions
/// (one transaction each).
const PAGE: usize = 500;
/// Blobs deleted per transaction. Their rows stay locked while their bytes go (on
/// SQLite that holds the single writer), so batches stay small enough that a push
/// waiting behind one waits milliseconds, and large enough that commits stay rare.
const BLOB_BATCH: usize = 64;
/// Byte deletions in flight at once within a batch.
const DELETE_CONCURRENCY: usize = 16;
/// Bounds each phase's loop (pages).
const MAX_PAGES: usize = 1_000_000;

/// Refuses while manifests lack recorded references: collecting then could delete
/// blobs those manifests need.
pub async fn check_migration_done(stores: &Stores) -> anyhow::Result<()> {
    // Until an upgrade is finalised, replicas of the older release may be serving, and
    // they record no references.
    let level = stores.meta.schema_level().await?;
    if level < wharf_metastore::schema::SCHEMA_LEVEL {
        anyhow::bail!(
            "garbage collection is disabled while an upgrade is under way (schema level {level} \
             is not finalised; replicas of the older release may still be serving): finish it \
             with `wharf upgrade apply`"
        );
    }
    let pending = stores.meta.count_manifests_without_refs().await?;
    if pending > 0 {
        anyhow::bail!(
            "garbage collection is disabled until the metadatastoremigration job has completed: \
             {pending} manifests stored by an older release lack recorded references. It is queued \
             after an upgrade; to run it now: POST /api/v0/jobs {{\"action\": \"metadatastoremigration\"}} \
             (or `wharf jobs run metadatastoremigration`)"
        );
    }
    Ok(())
}

impl GarbageCollect {
    /// Deletes a batch's bytes from the blob store, several at a time.
    fn byte_deleter(&self) -> DeleteBytes {
        let blobs = self.stores.blobs.clone();
        Box::new(move |digests| {
            Box::pin(async move {
                futures_util::stream::iter(digests)
                    .map(|d| {
                        let blobs = blobs.clone();
                        async move {
                            blobs
                                .delete(&d)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                    })
                    .buffered(DELETE_CONCURRENCY)
                    .collect()
                    .await
            })
        })
    }

    pub async fn collect(
        &self,
        ctx: &JobContext,
        params: &GcParams,
    ) -> anyhow::Result<(GcReport, Option<Stop>)> {
        check_migration_done(&self.stores).await?;
        let meta = &self.stores.meta;
        let grace = params
            .grace_secs
            .map(Duration::from_secs)
            .unwrap_or(self.stores.gc_grace);
        let cutoff = meta.store_now().await? - grace.as_millis() as i64;
        let mut report = GcReport::default();
        let busy_percent = params.busy_percent.unwrap_or(self.stores.gc_busy_percent);
        let mut pacer = Pacer::new(busy_percent)?;
        let verb = if params.dry_run {
            "would remove"
        } else {
            "removing"
        };
        ctx.log(format!(
            "{verb} what is older than {} s and unreferenced{}",
            grace.as_secs(),
            if params.delete_untagged {
                ", untagged manifests included"
            } else {
                ""
            }
        ))
        .await;

        if params.delete_untagged {
            let mut after = None;
            for _ in 0..MAX_PAGES {
                if let Some(why) = ctx.should_stop() {
                    return Ok((report, Some(why)));
                }
                let page = meta.untagged_manifests(cutoff, after.clone(), PAGE).await?;
                let Some(last) = page.last() else { break };
                after = Some((last.repository_id, last.digest.to_string()));
                report.manifests += if params.dry_run {
                    page.len() as u64
                } else {
                    meta.delete_unused_manifests(&page, cutoff).await?
                };
                pacer.pace().await;
                ctx.progress(report.manifests, report.manifests, "untagged manifests");
            }
            ctx.log(format!("manifests: {} untagged", report.manifests))
                .await;
        }

        // Links. A dry run remembers them to tell which blobs would be freed.
        let mut would_unlink: HashMap<String, usize> = HashMap::new();
        let mut after = None;
        for _ in 0..MAX_PAGES {
            if let Some(why) = ctx.should_stop() {
                return Ok((report, Some(why)));
            }
            let page = meta.unreferenced_links(cutoff, after.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.repository_id, last.digest.to_string()));
            if params.dry_run {
                for l in &page {
                    *would_unlink.entry(l.digest.to_string()).or_default() += 1;
                }
                report.links += page.len() as u64;
            } else {
                report.links += meta.unlink_unreferenced(&page, cutoff).await?;
            }
            pacer.pace().await;
            ctx.progress(report.links, report.links, "links");
        }
        ctx.log(format!("links: {} unreferenced", report.links))
            .await;

        // Blobs.
        let mut failed = 0u64;
        let mut after = None;
        for _ in 0..MAX_PAGES {
            if let Some(why) = ctx.should_stop() {
                return Ok((report, Some(why)));
            }
            let page = meta.unlinked_blobs(cutoff, after.clone(), PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.to_string());
            if params.dry_run {
                report.blobs += page.len() as u64;
                report.bytes += page.iter().map(|(_, size)| size).sum::<u64>();
                pacer.pace().await;
            } else {
                let sizes: HashMap<&Digest, u64> = page.iter().map(|(d, s)| (d, *s)).collect();
                for batch in page.chunks(BLOB_BATCH) {
                    let digests: Vec<Digest> = batch.iter().map(|(d, _)| d.clone()).collect();
                    let outcome = meta
                        .delete_unlinked_blobs(&digests, cutoff, self.byte_deleter())
                        .await?;
                    report.blobs += outcome.deleted.len() as u64;
                    report.bytes += outcome.deleted.iter().map(|d| sizes[d]).sum::<u64>();
                    for (d, e) in &outcome.failed {
                        failed += 1;
                        ctx.log(format!(
                            "cannot delete the bytes of {d} (kept for the next run): {e}"
                        ))
                        .await;
                    }
                    pacer.pace().await;
                }
            }
            ctx.progress(report.blobs, report.blobs, "blobs");
        }
        if params.dry_run {
            // Blobs whose every link would go would be freed too.
            for (digest, n) in &would_unlink {
                let d: Digest = digest.parse()?;
                if meta.repositories_with_blob(&d, n + 1).await?.len() == *n {
                    report.blobs += 1;
                    report.bytes += meta.blob_size(&d).await?.unwrap_or(0);
                }
            }
        }
        ctx.log(format!("blobs: {} ({} bytes)", report.blobs, report.bytes))
            .await;
        if failed > 0 {
            // The job fails, so it is retried; what went is reported in the log above.
            anyhow::bail!(
                "the bytes of {failed} blobs could not be deleted (see the log); {}",
                summary(&report, false)
            );
        }
        Ok((report, None))
    }
}

/// Keeps a run's working time to a share of wall time: `pace` after each unit of work
/// sleeps in proportion to the time the work took since the last pause.
struct Pacer {
    busy_percent: u32,
    since: Instant,
}

/// No single pause is longer than this, so a stop request is noticed soon enough.
const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Pacer {
    fn new(busy_percent: u8) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=100).contains(&busy_percent),
            "busy_percent must be between 1 and 100, not {busy_percent}"
        );
        Ok(Pacer {
            busy_percent: busy_percent.into(),
            since: Instant::now(),
        })
    }

    async fn pace(&mut self) {
        let worked = self.since.elapsed();
        let pause = worked * (100 - self.busy_percent) / self.busy_percent;
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
        }
        self.since = Instant::now();
    }
}

/// One line saying what a run freed (or would free).
pub fn summary(r: &GcReport, dry: bool) -> String {
    format!(
        "{} {} manifests, {} links, {} blobs, {} bytes",
        if dry { "would free" } else { "freed" },
        r.manifests,
        r.links,
        r.blobs,
        r.bytes
    )
}

#[async_trait]
impl crate::Action for GarbageCollect {
    fn name(&self) -> &'static str {
        "gc"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: GcParams = ctx.params()?;
        let (report, stopped) = self.collect(ctx, &params).await?;
        ctx.report(&serde_json::json!({
            "phase": "finished",
            "dry_run": params.dry_run,
            "freed": report,
        }));
        let text = summary(&report, params.dry_run);
        Ok(match stopped {
            Some(why) => Finished::Stopped(why, text),
            None => Finished::Done(text),
        })
    }
}
