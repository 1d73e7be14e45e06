//! [`GcStore`] on SQLite: each check-and-delete is one write transaction, and SQLite
//! has one writer, so nothing can change between the check and the deletion.

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Row};

use super::{parse, SqliteMetaStore};
use crate::gc::{
    BlobDeletion, DeleteBytes, GcStore, Link, ManifestKey, ManifestRefs, PendingManifest,
};
use crate::Result;

/// A `(repository_id, repository name, digest)` row.
fn link_row(r: &Row) -> rusqlite::Result<Link> {
    Ok(Link {
        repository_id: r.get(0)?,
        repository: r.get(1)?,
        digest: parse(r.get(2)?)?,
    })
}

fn manifest_key_row(r: &Row) -> rusqlite::Result<ManifestKey> {
    let l = link_row(r)?;
    Ok(ManifestKey {
        repository_id: l.repository_id,
        repository: l.repository,
        digest: l.digest,
    })
}

#[async_trait]
impl GcStore for SqliteMetaStore {
    async fn count_manifests_without_refs(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM manifests WHERE refs_recorded = 0",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
        .await
    }

    async fn manifests_without_refs(&self, limit: usize) -> Result<Vec<PendingManifest>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT repository_id, digest, media_type, payload FROM manifests
                 WHERE refs_recorded = 0 ORDER BY repository_id, digest LIMIT ?",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(PendingManifest {
                    repository_id: r.get(0)?,
                    digest: parse(r.get(1)?)?,
                    media_type: r.get(2)?,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn record_manifest_refs(&self, batch: &[ManifestRefs]) -> Result<u64> {
        let batch = batch.to_vec();
        self.write(move |tx| {
            let mut marked = 0;
            for m in &batch {
                let digest = m.digest.to_string();
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
                     VALUES (?, ?, ?, ?)",
                )?;
                for d in &m.blobs {
                    ins.execute(params![m.repository_id, digest, d.to_string(), "blob"])?;
                }
                for d in &m.manifests {
                    ins.execute(params![m.repository_id, digest, d.to_string(), "manifest"])?;
                }
                marked += tx
                    .prepare_cached(
                        "UPDATE manifests SET refs_recorded = 1 WHERE repository_id = ? AND digest = ? AND refs_recorded = 0",
                    )?
                    .execute(params![m.repository_id, digest])? as u64;
            }
            Ok(marked)
        })
        .await
    }

    async fn unreferenced_links(
        &self,
        linked_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Link>> {
        let (after_rid, after_digest) = after.unwrap_or((i64::MIN, String::new()));
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT rb.repository_id, r.name, rb.digest FROM repository_blobs rb
                 JOIN repositories r ON r.id = rb.repository_id
                 WHERE rb.created_at < ? AND (rb.repository_id, rb.digest) > (?, ?)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                   WHERE mr.repository_id = rb.repository_id AND mr.ref_digest = rb.digest)
                 ORDER BY rb.repository_id, rb.digest LIMIT ?",
            )?;
            let rows = st.query_map(
                params![linked_before_ms, after_rid, after_digest, limit as i64],
                link_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn unlink_unreferenced(&self, links: &[Link], linked_before_ms: i64) -> Result<u64> {
        let links: Vec<(i64, String)> = links
            .iter()
            .map(|l| (l.repository_id, l.digest.to_string()))
            .collect();
        // One transaction for the batch: SQLite's single writer means nothing changes
        // between each check and its deletion, and one commit (one fsync) serves all.
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2 AND created_at < ?3
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repository_id = ?1 AND ref_digest = ?2)",
            )?;
            let mut removed = 0;
            for (rid, digest) in &links {
                removed += st.execute(params![rid, digest, linked_before_ms])? as u64;
            }
            Ok(removed)
        })
        .await
    }

    async fn unlinked_blobs(
        &self,
        created_before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(wharf_oci::Digest, u64)>> {
        let after = after.unwrap_or_default();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT b.digest, b.size FROM blobs b
                 WHERE b.created_at < ? AND b.digest > ?
                   AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                 ORDER BY b.digest LIMIT ?",
            )?;
            let rows = st.query_map(params![created_before_ms, after, limit as i64], |r| {
                Ok((parse(r.get(0)?)?, r.get::<_, i64>(1)? as u64))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_unlinked_blobs(
        &self,
        digests: &[wharf_oci::Digest],
        created_before_ms: i64,
        delete_bytes: DeleteBytes,
    ) -> Result<BlobDeletion> {
        let digests = digests.to_vec();
        // The bytes are deleted inside the write transaction: SQLite's single writer is
        // the lock that keeps an upload of the same digest from recording the blob
        // until they are gone (the upload then puts its own bytes back). One batch, one
        // commit; the writer is held for as long as the batch's deletions take.
        let handle = tokio::runtime::Handle::current();
        let inner = self.inner.clone();
        self.write(move |tx| {
            let mut unlinked = Vec::new();
            {
                let mut check = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM blobs WHERE digest = ?1 AND created_at < ?2)
                        AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ?1)",
                )?;
                for d in digests {
                    if check.query_row(params![d.to_string(), created_before_ms], |r| r.get(0))? {
                        unlinked.push(d);
                    }
                }
            }
            let mut outcome = BlobDeletion::default();
            if unlinked.is_empty() {
                return Ok(outcome);
            }
            // What this transaction read may include commits not flushed yet (see
            // group_commit); deleting bytes on their word must not outlive them.
            inner.wal.flush_all()?;
            let results = handle.block_on(delete_bytes(unlinked.clone()));
            let mut delete = tx.prepare_cached("DELETE FROM blobs WHERE digest = ?")?;
            for (d, result) in unlinked.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        delete.execute([d.to_string()])?;
                        outcome.deleted.push(d);
                    }
                    Err(e) => outcome.failed.push((d, e)),
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn untagged_manifests(
        &self,
        created_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<ManifestKey>> {
        let (after_rid, after_digest) = after.unwrap_or((i64::MIN, String::new()));
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT m.repository_id, r.name, m.digest FROM manifests m
                 JOIN repositories r ON r.id = m.repository_id
                 WHERE m.created_at < ? AND (m.repository_id, m.digest) > (?, ?) AND m.subject IS NULL
                   AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                   WHERE mr.repository_id = m.repository_id AND mr.ref_digest = m.digest)
                 ORDER BY m.repository_id, m.digest LIMIT ?",
            )?;
            let rows = st.query_map(
                params![created_before_ms, after_rid, after_digest, limit as i64],
                manifest_key_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_unused_manifests(
        &self,
        manifests: &[ManifestKey],
        created_before_ms: i64,
    ) -> Result<u64> {
        let keys: Vec<(i64, String)> = manifests
            .iter()
            .map(|m| (m.repository_id, m.digest.to_string()))
            .collect();
        self.write(move |tx| {
            let mut st = tx.prepare_cached(
                "DELETE FROM manifests WHERE repository_id = ?1 AND digest = ?2 AND created_at < ?3 AND subject IS NULL
                   AND NOT EXISTS (SELECT 1 FROM tags WHERE repository_id = ?1 AND manifest_digest = ?2)
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repository_id = ?1 AND ref_digest = ?2)",
            )?;
            let mut summary = tx.prepare_cached(
                "DELETE FROM manifest_summaries WHERE repository_id = ? AND digest = ?",
            )?;
            let mut deleted = 0;
            for (rid, digest) in &keys {
                if st.execute(params![rid, digest, created_before_ms])? > 0 {
                    summary.execute(params![rid, digest])?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }
}
