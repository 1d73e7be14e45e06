//! `metadatastoremigration`: records the references of manifests stored before 1.1.0
//! (by 1.0.0, or by 1.0.0 replicas during a rolling upgrade), which online garbage
//! collection needs. In batches, each one transaction; a manifest is marked done in the
//! same transaction as its references, so a crash loses at most the batch in flight,
//! the next run continues where this one stopped, and running it twice counts nothing
//! twice.

use async_trait::async_trait;
use wharf_metastore::gc::ManifestRefs;
use wharf_oci::Manifest;

use super::Stores;
use crate::{Finished, JobContext};

pub struct MetadataStoreMigration {
    stores: Stores,
}

impl MetadataStoreMigration {
    pub fn new(stores: Stores) -> Self {
        MetadataStoreMigration { stores }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    batch_size: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { batch_size: 500 }
    }
}

#[async_trait]
impl crate::Action for MetadataStoreMigration {
    fn name(&self) -> &'static str {
        "metadatastoremigration"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: Params = ctx.params()?;
        let batch_size = params.batch_size.clamp(1, 10_000);
        let meta = &self.stores.meta;
        let total = meta.count_manifests_without_refs().await?;
        ctx.log(format!(
            "{total} manifests need their references recorded (batches of {batch_size})"
        ))
        .await;
        let mut done = 0u64;
        let mut batches = 0u64;
        // Bounded: every pass marks at least one manifest or stops.
        for _ in 0..=(total / batch_size as u64 + 1) * 2 + 10 {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(
                    why,
                    format!("{done} of {total} manifests migrated"),
                ));
            }
            let pending = meta.manifests_without_refs(batch_size).await?;
            if pending.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(pending.len());
            for m in &pending {
                let parsed = Manifest::parse(Some(&m.media_type), &m.payload).map_err(|e| {
                    anyhow::anyhow!(
                        "manifest {} in repository #{} cannot be read ({e}); repair or delete it, then run the job again",
                        m.digest,
                        m.repository_id
                    )
                })?;
                batch.push(ManifestRefs {
                    repository_id: m.repository_id,
                    digest: m.digest.clone(),
                    blobs: parsed.required_blobs().cloned().collect(),
                    manifests: parsed.required_manifests().cloned().collect(),
                });
            }
            let marked = meta.record_manifest_refs(&batch).await?;
            done += marked;
            batches += 1;
            ctx.batch_done(
                batches,
                pending.len() < batch_size,
                done,
                total,
                "migrated",
                "manifests",
            )
            .await;
        }
        let left = meta.count_manifests_without_refs().await?;
        if left > 0 {
            anyhow::bail!("{left} manifests still lack references after the run");
        }
        Ok(Finished::Done(format!(
            "references recorded for {done} manifests; garbage collection may run"
        )))
    }
}
