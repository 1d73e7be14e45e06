//! [`GcStore`] on PostgreSQL. Each batch locks the rows it may delete (`FOR UPDATE
//! SKIP LOCKED`: rows a writer holds `FOR SHARE` right now are in use, so they are
//! skipped rather than waited for, and no lock cycle with a writer can form), then
//! checks in a new statement, which in READ COMMITTED sees everything committed until
//! then. A writer that got there first wins; one that comes later waits for the batch
//! and finds the row gone.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::PgRow;
use sqlx::Row;
use wharf_oci::Digest;

use super::{parse, PgMetaStore};
use crate::gc::{
    BlobDeletion, DeleteBytes, GcStore, Link, ManifestKey, ManifestRefs, PendingManifest,
};
use crate::Result;

/// A `(repository_id, repository name, digest)` row.
fn link_row(r: &PgRow) -> Result<Link> {
    Ok(Link {
        repository_id: r.get(0),
        repository: r.get(1),
        digest: parse(r.get(2))?,
    })
}

fn manifest_key_row(r: &PgRow) -> Result<ManifestKey> {
    let l = link_row(r)?;
    Ok(ManifestKey {
        repository_id: l.repository_id,
        repository: l.repository,
        digest: l.digest,
    })
}

/// `(repository ids, digests)` as two arrays, for `UNNEST`.
fn key_arrays<'a>(keys: impl Iterator<Item = (i64, &'a Digest)>) -> (Vec<i64>, Vec<String>) {
    keys.map(|(rid, d)| (rid, d.to_string())).unzip()
}

#[async_trait]
impl GcStore for PgMetaStore {
    async fn count_manifests_without_refs(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifests WHERE NOT refs_recorded")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn manifests_without_refs(&self, limit: usize) -> Result<Vec<PendingManifest>> {
        let rows = sqlx::query(
            "SELECT repository_id, digest, media_type, payload FROM manifests
             WHERE NOT refs_recorded ORDER BY repository_id, digest LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingManifest {
                    repository_id: r.get(0),
                    digest: parse(r.get(1))?,
                    media_type: r.get(2),
                    payload: Bytes::from(r.get::<Vec<u8>, _>(3)),
                })
            })
            .collect()
    }

    async fn record_manifest_refs(&self, batch: &[ManifestRefs]) -> Result<u64> {
        // Two statements for the whole batch, whatever its size.
        let mut rids = Vec::new();
        let mut manifests = Vec::new();
        let mut refs = Vec::new();
        let mut kinds = Vec::new();
        for m in batch {
            let digest = m.digest.to_string();
            let all = m.blobs.iter().map(|d| (d, "blob"));
            for (d, kind) in all.chain(m.manifests.iter().map(|d| (d, "manifest"))) {
                rids.push(m.repository_id);
                manifests.push(digest.clone());
                refs.push(d.to_string());
                kinds.push(kind);
            }
        }
        let (batch_rids, batch_digests) =
            key_arrays(batch.iter().map(|m| (m.repository_id, &m.digest)));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) ON CONFLICT DO NOTHING",
        )
        .bind(&rids)
        .bind(&manifests)
        .bind(&refs)
        .bind(&kinds)
        .execute(&mut *tx)
        .await?;
        let marked = sqlx::query(
            "UPDATE manifests m SET refs_recorded = TRUE FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d)
             WHERE m.repository_id = k.rid AND m.digest = k.d AND NOT m.refs_recorded",
        )
        .bind(&batch_rids)
        .bind(&batch_digests)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(marked)
    }

    async fn unreferenced_links(
        &self,
        linked_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Link>> {
        let (after_rid, after_digest) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT rb.repository_id, r.name, rb.digest FROM repository_blobs rb
             JOIN repositories r ON r.id = rb.repository_id
             WHERE rb.created_at < $1 AND (rb.repository_id, rb.digest) > ($2, $3::TEXT COLLATE \"C\")
               AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                               WHERE mr.repository_id = rb.repository_id AND mr.ref_digest = rb.digest)
             ORDER BY rb.repository_id, rb.digest COLLATE \"C\" LIMIT $4",
        )
        .bind(linked_before_ms)
        .bind(after_rid)
        .bind(after_digest)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_row).collect()
    }

    async fn unlink_unreferenced(&self, links: &[Link], linked_before_ms: i64) -> Result<u64> {
        let (rids, digests) = key_arrays(links.iter().map(|l| (l.repository_id, &l.digest)));
        let mut tx = self.pool.begin().await?;
        let locked: Vec<(i64, String)> = sqlx::query_as(
            "SELECT rb.repository_id, rb.digest FROM repository_blobs rb
             JOIN UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d) ON rb.repository_id = k.rid AND rb.digest = k.d
             WHERE rb.created_at < $3
             ORDER BY rb.repository_id, rb.digest FOR UPDATE OF rb SKIP LOCKED",
        )
        .bind(&rids)
        .bind(&digests)
        .bind(linked_before_ms)
        .fetch_all(&mut *tx)
        .await?;
        let (rids, digests): (Vec<i64>, Vec<String>) = locked.into_iter().unzip();
        // A new statement: it sees every reference committed before the locks were taken.
        let removed = sqlx::query(
            "DELETE FROM repository_blobs rb USING UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d)
             WHERE rb.repository_id = k.rid AND rb.digest = k.d
               AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.repository_id = k.rid AND mr.ref_digest = k.d)",
        )
        .bind(&rids)
        .bind(&digests)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }

    async fn unlinked_blobs(
        &self,
        created_before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>> {
        let rows = sqlx::query(
            "SELECT b.digest, b.size FROM blobs b
             WHERE b.created_at < $1 AND b.digest COLLATE \"C\" > $2
               AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
             ORDER BY b.digest COLLATE \"C\" LIMIT $3",
        )
        .bind(created_before_ms)
        .bind(after.unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((parse(r.get(0))?, r.get::<i64, _>(1) as u64)))
            .collect()
    }

    async fn delete_unlinked_blobs(
        &self,
        digests: &[Digest],
        created_before_ms: i64,
        delete_bytes: DeleteBytes,
    ) -> Result<BlobDeletion> {
        let digests: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
        let mut tx = self.pool.begin().await?;
        // Locked until the bytes are gone: an upload of the same digest waits to record
        // the blob, then finds its bytes missing and puts them back.
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM blobs WHERE digest = ANY($1) AND created_at < $2
             ORDER BY digest FOR UPDATE SKIP LOCKED",
        )
        .bind(&digests)
        .bind(created_before_ms)
        .fetch_all(&mut *tx)
        .await?;
        let unlinked: Vec<String> = sqlx::query_scalar(
            "SELECT d FROM UNNEST($1::TEXT[]) AS d
             WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = d)",
        )
        .bind(&locked)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcome = BlobDeletion::default();
        if unlinked.is_empty() {
            tx.rollback().await?;
            return Ok(outcome);
        }
        let unlinked = unlinked
            .into_iter()
            .map(parse)
            .collect::<Result<Vec<Digest>>>()?;
        let results = delete_bytes(unlinked.clone()).await;
        for (d, result) in unlinked.into_iter().zip(results) {
            match result {
                Ok(()) => outcome.deleted.push(d),
                Err(e) => outcome.failed.push((d, e)),
            }
        }
        let gone: Vec<String> = outcome.deleted.iter().map(|d| d.to_string()).collect();
        sqlx::query("DELETE FROM blobs WHERE digest = ANY($1)")
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn untagged_manifests(
        &self,
        created_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<ManifestKey>> {
        let (after_rid, after_digest) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT m.repository_id, r.name, m.digest FROM manifests m
             JOIN repositories r ON r.id = m.repository_id
             WHERE m.created_at < $1 AND (m.repository_id, m.digest) > ($2, $3::TEXT COLLATE \"C\") AND m.subject IS NULL
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest)
               AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                               WHERE mr.repository_id = m.repository_id AND mr.ref_digest = m.digest)
             ORDER BY m.repository_id, m.digest COLLATE \"C\" LIMIT $4",
        )
        .bind(created_before_ms)
        .bind(after_rid)
        .bind(after_digest)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(manifest_key_row).collect()
    }

    async fn delete_unused_manifests(
        &self,
        manifests: &[ManifestKey],
        created_before_ms: i64,
    ) -> Result<u64> {
        let (rids, digests) = key_arrays(manifests.iter().map(|m| (m.repository_id, &m.digest)));
        let mut tx = self.pool.begin().await?;
        let locked: Vec<(i64, String)> = sqlx::query_as(
            "SELECT m.repository_id, m.digest FROM manifests m
             JOIN UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d) ON m.repository_id = k.rid AND m.digest = k.d
             WHERE m.created_at < $3 AND m.subject IS NULL
             ORDER BY m.repository_id, m.digest FOR UPDATE OF m SKIP LOCKED",
        )
        .bind(&rids)
        .bind(&digests)
        .bind(created_before_ms)
        .fetch_all(&mut *tx)
        .await?;
        let (rids, digests): (Vec<i64>, Vec<String>) = locked.into_iter().unzip();
        let deleted = sqlx::query(
            "DELETE FROM manifests m USING UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d)
             WHERE m.repository_id = k.rid AND m.digest = k.d
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = k.rid AND t.manifest_digest = k.d)
               AND NOT EXISTS (SELECT 1 FROM manifest_refs mr WHERE mr.repository_id = k.rid AND mr.ref_digest = k.d)",
        )
        .bind(&rids)
        .bind(&digests)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Their summaries, in the same transaction (those still stored are kept).
        sqlx::query(
            "DELETE FROM manifest_summaries s USING UNNEST($1::BIGINT[], $2::TEXT[]) AS k(rid, d)
             WHERE s.repository_id = k.rid AND s.digest = k.d
               AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = k.rid AND m.digest = k.d)",
        )
        .bind(&rids)
        .bind(&digests)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}
