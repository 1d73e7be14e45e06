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
use std::time::Duration;

use async_trait::async_trait;

use super::Stores;
use crate::{Finished, JobContext, Stop};

pub struct GarbageCollect {
    stores: Stores,
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
}

/// What a run removed (or, dry, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub manifests: u64,
    pub links: u64,
    pub blobs: u64,
    pub bytes: u64,
}

const PAGE: usize = 500;
/// Bounds each phase's loop (pages).
const MAX_PAGES: usize = 1_000_000;

/// Refuses while manifests lack recorded references: collecting then could delete
/// blobs those manifests need.
pub async fn check_migration_done(stores: &Stores) -> anyhow::Result<()> {
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
                for m in &page {
                    if params.dry_run || meta.delete_manifest_if_unused(m, cutoff).await? {
                        report.manifests += 1;
                    }
                }
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
            for l in &page {
                if params.dry_run {
                    *would_unlink.entry(l.digest.to_string()).or_default() += 1;
                    report.links += 1;
                } else if meta.unlink_if_unreferenced(l, cutoff).await? {
                    report.links += 1;
                }
            }
            ctx.progress(report.links, report.links, "links");
        }
        ctx.log(format!("links: {} unreferenced", report.links))
            .await;

        // Blobs.
        let mut after = None;
        for _ in 0..MAX_PAGES {
            if let Some(why) = ctx.should_stop() {
                return Ok((report, Some(why)));
            }
            let page = meta.unlinked_blobs(cutoff, after.clone(), PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.to_string());
            for (digest, size) in &page {
                let deleted = if params.dry_run {
                    true
                } else {
                    let blobs = self.stores.blobs.clone();
                    let d = digest.clone();
                    meta.delete_blob_if_unlinked(
                        digest,
                        cutoff,
                        Box::new(move || {
                            Box::pin(async move {
                                blobs
                                    .delete(&d)
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| e.to_string())
                            })
                        }),
                    )
                    .await?
                };
                if deleted {
                    report.blobs += 1;
                    report.bytes += size;
                }
            }
            ctx.progress(report.blobs, report.blobs, "blobs");
        }
        if params.dry_run {
            // Blobs whose every link would go would be freed too.
            for (digest, n) in &would_unlink {
                let d: wharf_oci::Digest = digest.parse()?;
                if meta.repositories_with_blob(&d, n + 1).await?.len() == *n {
                    report.blobs += 1;
                    report.bytes += meta.blob_size(&d).await?.unwrap_or(0);
                }
            }
        }
        ctx.log(format!("blobs: {} ({} bytes)", report.blobs, report.bytes))
            .await;
        Ok((report, None))
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
