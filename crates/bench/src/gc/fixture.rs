//! The datasets of `wharf-bench gc`, built straight into the metadata store.
//!
//! Pushing 100,000 blobs through the API would take longer than what is measured, so the
//! rows are written with bulk SQL in a few large transactions — a benchmark fixture, not
//! how wharf writes. The rows are those wharf's own writes produce (the same tables,
//! columns and values: real SHA-256 digests, real OCI manifest JSON, manifest sizes,
//! artifact types), only older: every row is dated a week back, so no grace period
//! protects anything. The schema itself comes from the store's own `open`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wharf_oci::Digest;

use crate::data::random_bytes;
use crate::registry::OCI_MANIFEST;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Rows per statement when filling PostgreSQL (arrays bound to one UNNEST).
const PG_CHUNK: usize = 10_000;

pub struct BlobRow {
    pub digest: Digest,
    pub size: u64,
    /// Index into [`Dataset::repos`]: the one repository that links the blob.
    pub repo: usize,
}

pub struct ManifestRow {
    pub repo: usize,
    pub digest: Digest,
    pub media_type: &'static str,
    pub payload: Vec<u8>,
    /// The blobs it names (config first), each linked by its repository.
    pub refs: Vec<Digest>,
    /// The manifests it names (an index's children), stored in the same repository
    /// before it.
    pub manifest_refs: Vec<Digest>,
    /// `artifactType`, or an image manifest's config media type (as wharf records it).
    pub artifact_type: Option<String>,
    /// The manifest it refers to (a referrer: a signature, an SBOM).
    pub subject: Option<Digest>,
    /// Untagged manifests (a referrer, an index's children) have none.
    pub tag: Option<String>,
    /// `created_at` of the manifest and `updated_at` of its tag, milliseconds since
    /// the epoch.
    pub at_ms: i64,
}

/// What goes into the store, and the garbage the benchmark expects GC to free.
pub struct Dataset {
    pub repos: Vec<String>,
    pub blobs: Vec<BlobRow>,
    pub manifests: Vec<ManifestRow>,
    /// Whether `manifest_refs` is filled and the manifests marked (as 1.1.0 writes them),
    /// or left to the migration (as 1.0.0 left them).
    pub refs_recorded: bool,
    /// Blobs linked by their repository but referenced by no manifest: GC's to free.
    pub garbage: Vec<(Digest, u64)>,
    /// `created_at` of every row, milliseconds since the epoch.
    pub created_at_ms: i64,
}

impl Dataset {
    /// `blobs` blobs in `repos` repositories, `garbage` of them referenced by nothing.
    /// The others are grouped three by three (a config and two layers) into tagged OCI
    /// image manifests with their references recorded; a remainder of one or two makes a
    /// last, smaller manifest. Blob bytes are 256–1,279 pseudo-random bytes; `write_bytes`
    /// receives those of the garbage blobs (the only ones written to disk).
    pub fn gc(
        blobs: usize,
        garbage: usize,
        repos: usize,
        seed: u64,
        mut write_bytes: impl FnMut(&Digest, &[u8]) -> Result<()>,
    ) -> Result<Dataset> {
        if garbage > blobs || repos == 0 {
            bail!("cannot build {blobs} blobs with {garbage} garbage in {repos} repositories");
        }
        let referenced = blobs - garbage;
        let mut ds = Dataset::empty(repos, "gc", true);
        let mut k = 0u64;
        let mut next_blob = |repo: usize, ds: &mut Dataset| -> (Vec<u8>, Digest, u64) {
            k += 1;
            let data = random_bytes(256 + (k as usize * 7919) % 1024, seed ^ (k << 20));
            let digest = Digest::sha256_of(&data);
            let size = data.len() as u64;
            ds.blobs.push(BlobRow {
                digest: digest.clone(),
                size,
                repo,
            });
            (data.to_vec(), digest, size)
        };
        let mut m = 0usize;
        let mut left = referenced;
        // Bounded: `left` drops by at least one per pass.
        while left > 0 {
            let n = left.min(3);
            left -= n;
            let repo = m % repos;
            let parts: Vec<(Digest, u64)> = (0..n)
                .map(|_| {
                    let (_, d, s) = next_blob(repo, &mut ds);
                    (d, s)
                })
                .collect();
            ds.push_manifest(repo, m, &parts[0], &parts[1..]);
            m += 1;
        }
        for g in 0..garbage {
            let (data, digest, size) = next_blob(g % repos, &mut ds);
            write_bytes(&digest, &data)?;
            ds.garbage.push((digest, size));
        }
        Ok(ds)
    }

    /// `manifests` tagged one-layer OCI image manifests in `repos` repositories, as an
    /// older release stored them: each config and layer exists and is linked, but no
    /// references are recorded and no manifest is marked. No garbage.
    pub fn migration(manifests: usize, repos: usize, seed: u64) -> Result<Dataset> {
        if repos == 0 {
            bail!("at least one repository is needed");
        }
        let mut ds = Dataset::empty(repos, "migration", false);
        for m in 0..manifests {
            let repo = m % repos;
            let mut part = |salt: u64| {
                let k = (m as u64) * 2 + salt;
                let data = random_bytes(256 + (k as usize * 7919) % 1024, seed ^ (k << 20));
                let d = Digest::sha256_of(&data);
                ds.blobs.push(BlobRow {
                    digest: d.clone(),
                    size: data.len() as u64,
                    repo,
                });
                (d, data.len() as u64)
            };
            let (config, layer) = (part(0), part(1));
            ds.push_manifest(repo, m, &config, &[layer]);
        }
        Ok(ds)
    }

    pub fn empty(repos: usize, what: &str, refs_recorded: bool) -> Dataset {
        Dataset {
            repos: (0..repos).map(|r| format!("bench/{what}-{r}")).collect(),
            blobs: Vec::new(),
            manifests: Vec::new(),
            refs_recorded,
            garbage: Vec::new(),
            created_at_ms: wharf_metastore::now_ms() - 7 * 24 * 3600 * 1000,
        }
    }

    fn push_manifest(
        &mut self,
        repo: usize,
        m: usize,
        config: &(Digest, u64),
        layers: &[(Digest, u64)],
    ) {
        let payload = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config.0.to_string(),
                "size": config.1,
            },
            "layers": layers.iter().map(|(d, s)| serde_json::json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": d.to_string(),
                "size": s,
            })).collect::<Vec<_>>(),
        }))
        .expect("JSON value serializes");
        self.manifests.push(ManifestRow {
            repo,
            digest: Digest::sha256_of(&payload),
            media_type: OCI_MANIFEST,
            payload,
            refs: std::iter::once(&config.0)
                .chain(layers.iter().map(|(d, _)| d))
                .cloned()
                .collect(),
            manifest_refs: Vec::new(),
            artifact_type: Some(CONFIG_MEDIA_TYPE.to_string()),
            subject: None,
            tag: Some(format!("m{m:06}")),
            at_ms: self.created_at_ms,
        });
    }

    pub fn garbage_bytes(&self) -> u64 {
        self.garbage.iter().map(|(_, s)| s).sum()
    }

    #[cfg(test)]
    pub fn ref_rows(&self) -> usize {
        self.manifests.iter().map(|m| m.refs.len()).sum()
    }
}

/// Where `FsBlobStore` keeps a blob's bytes under its root.
pub fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs")
        .join(d.algorithm().as_str())
        .join(&d.hex()[..2])
        .join(d.hex())
}

/// Writes the dataset into the SQLite file `path`, whose schema the store's `open` has
/// created (no store may have it open meanwhile). One transaction, `synchronous=OFF`;
/// the WAL is checkpointed and truncated afterwards, so the measurement starts from a
/// plain database file.
pub fn load_sqlite(path: &Path, ds: &Dataset) -> Result<()> {
    use rusqlite::params;
    let mut c =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "OFF")?;
    // Checked as wharf checks them: a fixture row that breaks a reference fails here.
    c.pragma_update(None, "foreign_keys", "ON")?;
    let tx = c.transaction()?;
    let ts = ds.created_at_ms;
    let mut repo_ids = Vec::with_capacity(ds.repos.len());
    for name in &ds.repos {
        tx.execute(
            "INSERT INTO repositories (name, created_at) VALUES (?, ?)",
            params![name, ts],
        )?;
        repo_ids.push(tx.last_insert_rowid());
    }
    {
        let mut blob =
            tx.prepare("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?)")?;
        let mut link = tx.prepare(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?)",
        )?;
        for b in &ds.blobs {
            let d = b.digest.to_string();
            blob.execute(params![d, b.size as i64, ts])?;
            link.execute(params![repo_ids[b.repo], d, ts])?;
        }
        let mut man = tx.prepare(
            "INSERT INTO manifests (repository_id, digest, media_type, size, payload, artifact_type,
                                    subject, annotations, created_at, refs_recorded)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        )?;
        let mut mref = tx.prepare(
            "INSERT INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
             VALUES (?, ?, ?, ?)",
        )?;
        let mut tag = tx.prepare(
            "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (?, ?, ?, ?)",
        )?;
        for m in &ds.manifests {
            let (rid, d) = (repo_ids[m.repo], m.digest.to_string());
            man.execute(params![
                rid,
                d,
                m.media_type,
                m.payload.len() as i64,
                m.payload,
                m.artifact_type,
                m.subject.as_ref().map(Digest::to_string),
                m.at_ms,
                ds.refs_recorded
            ])?;
            if ds.refs_recorded {
                for r in &m.refs {
                    mref.execute(params![rid, d, r.to_string(), "blob"])?;
                }
                for r in &m.manifest_refs {
                    mref.execute(params![rid, d, r.to_string(), "manifest"])?;
                }
            }
            if let Some(t) = &m.tag {
                tag.execute(params![rid, t, d, m.at_ms])?;
            }
        }
    }
    tx.commit()?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Writes the dataset into PostgreSQL through `pool` (a store's, schema created): one
/// transaction, rows bound as arrays to `INSERT … SELECT FROM UNNEST`, 10,000 a
/// statement. Then `VACUUM ANALYZE`, so the planner has the statistics and the
/// visibility map a database that grew to this size would have from autovacuum.
pub async fn load_postgres(pool: &sqlx::PgPool, ds: &Dataset) -> Result<()> {
    let ts = ds.created_at_ms;
    let mut tx = pool.begin().await?;
    let mut repo_ids = Vec::with_capacity(ds.repos.len());
    for chunk in ds.repos.chunks(PG_CHUNK) {
        // RETURNING gives no order: the ids are matched to the names.
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO repositories (name, created_at) SELECT n, $2 FROM UNNEST($1::TEXT[]) AS u(n)
             RETURNING id, name",
        )
        .bind(chunk)
        .bind(ts)
        .fetch_all(&mut *tx)
        .await?;
        let ids: std::collections::HashMap<String, i64> =
            rows.into_iter().map(|(id, n)| (n, id)).collect();
        for name in chunk {
            repo_ids.push(*ids.get(name).context("a repository row went missing")?);
        }
    }
    for chunk in ds.blobs.chunks(PG_CHUNK) {
        let digests: Vec<String> = chunk.iter().map(|b| b.digest.to_string()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|b| b.size as i64).collect();
        let rids: Vec<i64> = chunk.iter().map(|b| repo_ids[b.repo]).collect();
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) SELECT d, s, $3 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS u(d, s)",
        )
        .bind(&digests)
        .bind(&sizes)
        .bind(ts)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) SELECT r, d, $3 FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS u(r, d)",
        )
        .bind(&rids)
        .bind(&digests)
        .bind(ts)
        .execute(&mut *tx)
        .await?;
    }
    for chunk in ds.manifests.chunks(PG_CHUNK) {
        let rids: Vec<i64> = chunk.iter().map(|m| repo_ids[m.repo]).collect();
        let digests: Vec<String> = chunk.iter().map(|m| m.digest.to_string()).collect();
        let types: Vec<&str> = chunk.iter().map(|m| m.media_type).collect();
        let sizes: Vec<i64> = chunk.iter().map(|m| m.payload.len() as i64).collect();
        let payloads: Vec<Vec<u8>> = chunk.iter().map(|m| m.payload.clone()).collect();
        let artifact: Vec<Option<String>> = chunk.iter().map(|m| m.artifact_type.clone()).collect();
        let subjects: Vec<Option<String>> = chunk
            .iter()
            .map(|m| m.subject.as_ref().map(Digest::to_string))
            .collect();
        let at: Vec<i64> = chunk.iter().map(|m| m.at_ms).collect();
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, size, payload, artifact_type,
                                    subject, annotations, created_at, refs_recorded)
             SELECT r, d, t, s, p, a, sub, NULL, c, $9
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BYTEA[],
                         $6::TEXT[], $7::TEXT[], $8::BIGINT[]) AS u(r, d, t, s, p, a, sub, c)",
        )
        .bind(&rids)
        .bind(&digests)
        .bind(&types)
        .bind(&sizes)
        .bind(&payloads)
        .bind(&artifact)
        .bind(&subjects)
        .bind(&at)
        .bind(ds.refs_recorded)
        .execute(&mut *tx)
        .await?;
        let (mut tr, mut tn, mut td, mut ta) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for m in chunk {
            if let Some(t) = &m.tag {
                tr.push(repo_ids[m.repo]);
                tn.push(t.clone());
                td.push(m.digest.to_string());
                ta.push(m.at_ms);
            }
        }
        sqlx::query(
            "INSERT INTO tags (repository_id, name, manifest_digest, updated_at)
             SELECT r, t, d, a FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[]) AS u(r, t, d, a)",
        )
        .bind(&tr)
        .bind(&tn)
        .bind(&td)
        .bind(&ta)
        .execute(&mut *tx)
        .await?;
        if ds.refs_recorded {
            let (mut r, mut md, mut rd, mut kind) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for m in chunk {
                let blobs = m.refs.iter().map(|d| (d, "blob"));
                for (d, k) in blobs.chain(m.manifest_refs.iter().map(|d| (d, "manifest"))) {
                    r.push(repo_ids[m.repo]);
                    md.push(m.digest.to_string());
                    rd.push(d.to_string());
                    kind.push(k);
                }
            }
            sqlx::query(
                "INSERT INTO manifest_refs (repository_id, manifest_digest, ref_digest, kind)
                 SELECT r, m, d, k FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[]) AS u(r, m, d, k)",
            )
            .bind(&r)
            .bind(&md)
            .bind(&rd)
            .bind(&kind)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_dataset_has_the_asked_shape() {
        let mut written = 0;
        let ds = Dataset::gc(100, 10, 4, 1, |d, data| {
            assert!(d.matches(data));
            written += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(ds.blobs.len(), 100);
        assert_eq!(ds.garbage.len(), 10);
        assert_eq!(written, 10);
        // 90 referenced blobs, three a manifest.
        assert_eq!(ds.manifests.len(), 30);
        assert_eq!(ds.ref_rows(), 90);
        let parsed = wharf_oci::Manifest::parse(Some(OCI_MANIFEST), &ds.manifests[0].payload)
            .expect("a valid OCI manifest");
        let refs: Vec<_> = parsed.required_blobs().cloned().collect();
        assert_eq!(refs, ds.manifests[0].refs);
        assert!(ds.manifests[0].digest.matches(&ds.manifests[0].payload));
        let mut all: Vec<_> = ds.blobs.iter().map(|b| b.digest.to_string()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100, "blob digests are distinct");
    }

    #[test]
    fn a_remainder_makes_a_smaller_last_manifest() {
        let ds = Dataset::gc(12, 1, 2, 1, |_, _| Ok(())).unwrap();
        assert_eq!(ds.manifests.len(), 4);
        assert_eq!(ds.manifests[3].refs.len(), 2);
        assert_eq!(ds.ref_rows(), 11);
    }

    #[test]
    fn migration_dataset_names_two_blobs_per_manifest() {
        let ds = Dataset::migration(50, 3, 2).unwrap();
        assert_eq!(ds.manifests.len(), 50);
        assert_eq!(ds.blobs.len(), 100);
        assert!(!ds.refs_recorded);
        for m in &ds.manifests {
            let parsed = wharf_oci::Manifest::parse(Some(OCI_MANIFEST), &m.payload).unwrap();
            assert_eq!(parsed.required_blobs().count(), 2);
        }
    }
}
