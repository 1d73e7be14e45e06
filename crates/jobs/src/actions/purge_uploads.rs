//! `purge_uploads`: removes upload sessions that nobody has continued for longer than
//! the upload expiry, with their partial data, and partial data that no session owns.

use std::collections::HashSet;

use async_trait::async_trait;

use super::Stores;
use crate::{Finished, JobContext};

pub struct PurgeUploads {
    stores: Stores,
}

impl PurgeUploads {
    pub fn new(stores: Stores) -> Self {
        PurgeUploads { stores }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Sessions idle for longer than this are abandoned [default: the upload expiry].
    older_than_secs: Option<u64>,
}

const BATCH: usize = 500;

#[async_trait]
impl crate::Action for PurgeUploads {
    fn name(&self) -> &'static str {
        "purge_uploads"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: Params = ctx.params()?;
        let older_than = params
            .older_than_secs
            .map(std::time::Duration::from_secs)
            .unwrap_or(self.stores.upload_expiry);
        let cutoff = wharf_metastore::now_ms() - older_than.as_millis() as i64;
        ctx.log(format!(
            "removing upload sessions idle for more than {} s",
            older_than.as_secs()
        ))
        .await;
        let (meta, blobs) = (&self.stores.meta, &self.stores.blobs);
        let mut removed = 0u64;
        // Bounded: each pass removes what it lists, or stops.
        for _ in 0..1_000_000 {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(
                    why,
                    format!("{removed} sessions removed"),
                ));
            }
            let stale = meta.stale_uploads(cutoff, BATCH).await?;
            if stale.is_empty() {
                break;
            }
            for s in &stale {
                blobs.upload_delete(&s.id).await?;
                meta.delete_upload(&s.id).await?;
                removed += 1;
            }
            ctx.progress(removed, removed, "sessions");
        }
        // Data left behind without a session (its record was removed but the data
        // deletion failed, or a crash came between them). Sessions are recorded before
        // any data is written, so data without a record belongs to no live upload.
        let mut orphans = 0u64;
        let ids = blobs.upload_list().await?;
        let mut checked = HashSet::new();
        for id in ids {
            if !checked.insert(id.to_string()) {
                continue;
            }
            if meta.get_upload(&id).await?.is_none() {
                blobs.upload_delete(&id).await?;
                orphans += 1;
            }
        }
        Ok(Finished::Done(format!(
            "{removed} abandoned sessions and {orphans} pieces of orphaned upload data removed"
        )))
    }
}
