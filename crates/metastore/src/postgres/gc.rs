//! [`GcStore`] on PostgreSQL. Each check-and-delete locks the row it may delete (`FOR
//! UPDATE`, which waits for writers holding it `FOR SHARE` or `FOR KEY SHARE`), then
//! checks in a new statement, which in READ COMMITTED sees everything committed until
//! then: a writer that got there first wins, one that comes later waits and finds the
//! row gone.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::Row;
use wharf_oci::Digest;

use super::{parse, PgMetaStore};
use crate::gc::{DeleteBytes, GcStore, Link, ManifestKey, ManifestRefs, PendingManifest};
use crate::{MetaError, Result};

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
        let mut tx = self.pool.begin().await?;
        let mut marked = 0;
        for m in batch {
            let digest = m.digest.to_string();
            let (refs, kinds): (Vec<String>, Vec<&str>) = m
                .blobs
                .iter()
                .map(|d| (d.to_string(), "blob"))
                .chain(m.manifests.iter().map(|d| (d.to_string(), "manifest")))
                .unzip();
            if !refs.is_empty() {
                sqlx::query(
                    "INSERT INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
                     SELECT $1, $2, d, k FROM UNNEST($3::TEXT[], $4::TEXT[]) AS u(d, k) ON CONFLICT DO NOTHING",
                )
                .bind(m.repository_id)
                .bind(&digest)
                .bind(&refs)
                .bind(&kinds)
                .execute(&mut *tx)
                .await?;
            }
            marked += sqlx::query(
                "UPDATE manifests SET refs_recorded = TRUE WHERE repository_id = $1 AND digest = $2 AND NOT refs_recorded",
            )
            .bind(m.repository_id)
            .bind(&digest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
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
        rows.iter()
            .map(|r| {
                Ok(Link {
                    repository_id: r.get(0),
                    repository: r.get(1),
                    digest: parse(r.get(2))?,
                })
            })
            .collect()
    }

    async fn unlink_if_unreferenced(&self, link: &Link, linked_before_ms: i64) -> Result<bool> {
        let digest = link.digest.to_string();
        let mut tx = self.pool.begin().await?;
        let locked: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2 AND created_at < $3 FOR UPDATE",
        )
        .bind(link.repository_id)
        .bind(&digest)
        .bind(linked_before_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let referenced: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM manifest_refs WHERE repository_id = $1 AND ref_digest = $2)",
        )
        .bind(link.repository_id)
        .bind(&digest)
        .fetch_one(&mut *tx)
        .await?;
        if locked.is_none() || referenced {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
            .bind(link.repository_id)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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

    async fn delete_blob_if_unlinked(
        &self,
        digest: &Digest,
        created_before_ms: i64,
        delete_bytes: DeleteBytes,
    ) -> Result<bool> {
        let digest = digest.to_string();
        let mut tx = self.pool.begin().await?;
        // Locked until the bytes are gone: an upload of the same digest waits to record
        // the blob, then finds its bytes missing and puts them back.
        let locked: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM blobs WHERE digest = $1 AND created_at < $2 FOR UPDATE",
        )
        .bind(&digest)
        .bind(created_before_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let linked: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1)")
                .bind(&digest)
                .fetch_one(&mut *tx)
                .await?;
        if locked.is_none() || linked {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Err(e) = delete_bytes().await {
            tx.rollback().await?;
            return Err(MetaError::Backend(format!(
                "cannot delete the bytes of {digest}: {e}"
            )));
        }
        sqlx::query("DELETE FROM blobs WHERE digest = $1")
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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
        rows.iter()
            .map(|r| {
                Ok(ManifestKey {
                    repository_id: r.get(0),
                    repository: r.get(1),
                    digest: parse(r.get(2))?,
                })
            })
            .collect()
    }

    async fn delete_manifest_if_unused(
        &self,
        m: &ManifestKey,
        created_before_ms: i64,
    ) -> Result<bool> {
        let digest = m.digest.to_string();
        let mut tx = self.pool.begin().await?;
        let locked: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM manifests WHERE repository_id = $1 AND digest = $2 AND created_at < $3
               AND subject IS NULL FOR UPDATE",
        )
        .bind(m.repository_id)
        .bind(&digest)
        .bind(created_before_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let used: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tags WHERE repository_id = $1 AND manifest_digest = $2)
                 OR EXISTS (SELECT 1 FROM manifest_refs WHERE repository_id = $1 AND ref_digest = $2)",
        )
        .bind(m.repository_id)
        .bind(&digest)
        .fetch_one(&mut *tx)
        .await?;
        if locked.is_none() || used {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(m.repository_id)
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
