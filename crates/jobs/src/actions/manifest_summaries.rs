//! `manifestsummaries`: schema level 3's background migration. From 1.2.0 on a pushed
//! manifest is stored with its summary (size and platforms, `wharf_oci::summary`), so a
//! page of tags reads no blobs; this fills the summaries in for the manifests older
//! releases stored (before the upgrade, or by 1.1.0 replicas during it). In batches, each
//! one transaction, read in key order after the last one stored: a crash loses at most
//! the batch in flight, a rerun continues, and nothing is stored twice.
//!
//! A single image's platform is in its configuration blob, so this reads one small blob
//! per distinct configuration, several at a time (an object store answers each read in
//! milliseconds). A configuration that cannot be read leaves the platforms unknown, not
//! the job failed: the list then reads it when it is shown, as 1.1.0 did.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::StreamExt;
use wharf_metastore::browse::UnsummarisedManifest;
use wharf_oci::summary::{self, ManifestSummary};
use wharf_oci::{Digest, Manifest};

use super::Stores;
use crate::{Finished, JobContext};

pub struct ManifestSummaries {
    stores: Stores,
}

impl ManifestSummaries {
    pub fn new(stores: Stores) -> Self {
        ManifestSummaries { stores }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    batch_size: usize,
    /// Configuration blobs read at once.
    concurrency: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            batch_size: 500,
            concurrency: 16,
        }
    }
}

/// Platforms by configuration digest, across batches (images often share one), bounded.
const CACHED_CONFIGS: usize = 100_000;

#[async_trait]
impl crate::Action for ManifestSummaries {
    fn name(&self) -> &'static str {
        "manifestsummaries"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: Params = ctx.params()?;
        let batch_size = params.batch_size.clamp(1, 10_000);
        let concurrency = params.concurrency.clamp(1, 256);
        let meta = &self.stores.meta;
        let total = meta.count_manifests_without_summary().await?;
        ctx.log(format!(
            "{total} manifests need their summary (size and platforms) stored (batches of {batch_size})"
        ))
        .await;
        let mut platforms_by_config: HashMap<Digest, Option<String>> = HashMap::new();
        let (mut done, mut unknown, mut batches) = (0u64, 0u64, 0u64);
        let mut after = None;
        // Bounded: every batch moves the cursor forward or ends the run.
        for _ in 0..=(total / batch_size as u64 + 1) * 2 + 10 {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(
                    why,
                    format!("{done} of {total} manifests summarised"),
                ));
            }
            let pending = meta.manifests_without_summary(after, batch_size).await?;
            let Some(last) = pending.last() else { break };
            after = Some((last.repository_id, last.digest.clone()));
            let batch = self
                .summarise(&pending, &mut platforms_by_config, concurrency)
                .await;
            unknown += batch
                .iter()
                .filter(|(_, _, s)| s.platforms.is_none())
                .count() as u64;
            done += meta.record_manifest_summaries(&batch).await?;
            batches += 1;
            ctx.batch_done(
                batches,
                pending.len() < batch_size,
                done,
                total,
                "summarised",
                "manifests",
            )
            .await;
        }
        // This release stores every manifest with its summary; only an older replica
        // still serving could have stored one behind the cursor. A retry takes it.
        let left = meta.count_manifests_without_summary().await?;
        if left > 0 {
            anyhow::bail!("{left} manifests still lack a summary after the run (stored by an older release meanwhile?)");
        }
        // Summaries of manifests that 1.1.0 replicas deleted during the upgrade (they do
        // not know the table).
        let orphans = meta.delete_orphan_summaries().await?;
        if orphans > 0 {
            ctx.log(format!("removed {orphans} summaries of deleted manifests"))
                .await;
        }
        let unknown = if unknown > 0 {
            format!(
                "; {unknown} whose image configuration could not be read show their platforms as unknown until it can"
            )
        } else {
            String::new()
        };
        Ok(Finished::Done(format!(
            "summaries stored for {done} manifests{unknown}"
        )))
    }
}

impl ManifestSummaries {
    /// The summaries of `pending`, reading the configurations not seen yet.
    async fn summarise(
        &self,
        pending: &[UnsummarisedManifest],
        platforms_by_config: &mut HashMap<Digest, Option<String>>,
        concurrency: usize,
    ) -> Vec<(i64, String, ManifestSummary)> {
        let parsed: Vec<Option<Manifest>> = pending
            .iter()
            .map(|m| Manifest::parse(Some(&m.media_type), &m.payload).ok())
            .collect();
        let mut to_read: Vec<Digest> = parsed
            .iter()
            .flatten()
            .filter_map(summary::config_to_read)
            .map(|c| c.digest.clone())
            .filter(|d| !platforms_by_config.contains_key(d))
            .collect();
        to_read.sort();
        to_read.dedup();
        if platforms_by_config.len() + to_read.len() > CACHED_CONFIGS {
            platforms_by_config.clear();
        }
        let blobs = &self.stores.blobs;
        let read: Vec<(Digest, Option<String>)> = futures_util::stream::iter(to_read)
            .map(|d| async move {
                let platform =
                    wharf_blobstore::read_small(blobs.as_ref(), &d, summary::CONFIG_LIMIT)
                        .await
                        .ok()
                        .and_then(|bytes| summary::config_platform(&bytes));
                (d, platform)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        platforms_by_config.extend(read);
        pending
            .iter()
            .zip(parsed)
            .map(|(m, parsed)| {
                let s = match parsed {
                    // Stored by an older release that accepted it; shown as its bytes.
                    None => ManifestSummary {
                        size: m.payload.len() as u64,
                        platforms: None,
                    },
                    Some(parsed) => {
                        let mut s = summary::summarize(&parsed, None);
                        if let Some(c) = summary::config_to_read(&parsed) {
                            s.platforms = platforms_by_config.get(&c.digest).cloned().flatten();
                        }
                        s
                    }
                };
                (m.repository_id, m.digest.clone(), s)
            })
            .collect()
    }
}
