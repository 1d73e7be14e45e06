//! Writing a backup: header, the metadata snapshot table by table, the blobs it names,
//! then the checksums. Written to `FILE.partial` and renamed when complete and synced,
//! so an interrupted backup never looks like a finished one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use wharf_blobstore::BlobStore;
use wharf_metastore::dump::{BackupRecord, DumpItem, Value};
use wharf_metastore::MetaStore;
use wharf_oci::digest::{Algorithm, Hasher};
use wharf_oci::Digest;

use crate::tar::TarWriter;
use crate::{rows, Header, Progress, Scope, FORMAT, HEADER_ENTRY, SUMS_ENTRY};

pub struct BackupRequest<'a> {
    pub meta: Arc<dyn MetaStore>,
    /// The blob store, to copy blobs from (scope `metadata+blobs`).
    pub blobs: Option<Arc<dyn BlobStore>>,
    pub out: &'a Path,
    pub wharf_version: &'a str,
    pub schema_level: u32,
    /// The kind of metadata store (`sqlite`, `postgres`), for the header.
    pub source: &'a str,
    pub progress: &'a dyn Progress,
}

#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub scope: Scope,
    pub bytes: u64,
    /// `sha256:` of the archive's `SHA256SUMS`: names the archive's whole content.
    pub checksum: String,
    pub tables: usize,
    pub rows: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// One archive entry's checksum, for `SHA256SUMS`.
struct Sums(Vec<(String, String)>);

impl Sums {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(name, sum)| format!("{sum}  {name}\n"))
            .collect()
    }
}

/// Writes `data` as one entry and notes its checksum.
async fn small_entry(
    w: &mut TarWriter<tokio::fs::File>,
    sums: &mut Sums,
    name: &str,
    data: &[u8],
) -> anyhow::Result<()> {
    w.begin(name).await?;
    w.write(data).await?;
    w.end().await?;
    sums.0
        .push((name.to_string(), hex::encode(Sha256::digest(data))));
    Ok(())
}

pub async fn create(req: BackupRequest<'_>) -> anyhow::Result<BackupSummary> {
    let scope = if req.blobs.is_some() {
        Scope::MetadataAndBlobs
    } else {
        Scope::Metadata
    };
    let partial = partial_path(req.out);
    let file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let result = write_archive(&req, scope, file).await;
    let (file, bytes, sums, counts) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    file.sync_all()
        .await
        .context("cannot sync the backup to disk")?;
    drop(file);
    tokio::fs::rename(&partial, req.out)
        .await
        .with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                req.out.display()
            )
        })?;
    if let Some(dir) = req.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = tokio::fs::File::open(dir).await {
            let _ = d.sync_all().await;
        }
    }
    let checksum = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(sums.text().as_bytes()))
    );
    // The archive exists now, so the canonical path resolves `..` and symlinks: the
    // location recorded and printed is one an operator can paste anywhere.
    let location = std::fs::canonicalize(req.out)
        .or_else(|_| std::path::absolute(req.out))
        .unwrap_or_else(|_| req.out.to_path_buf());
    req.meta
        .record_backup(&BackupRecord {
            finished_at_ms: 0,
            scope: scope.as_str().into(),
            wharf_version: req.wharf_version.into(),
            schema_level: req.schema_level,
            location: location.display().to_string(),
            bytes,
            checksum: checksum.clone(),
        })
        .await
        .context("the backup is written, but recording it in the metadata store failed")?;
    Ok(BackupSummary {
        path: location,
        scope,
        bytes,
        checksum,
        tables: counts.tables,
        rows: counts.rows,
        blobs: counts.blobs,
        blob_bytes: counts.blob_bytes,
    })
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

#[derive(Default)]
struct Counts {
    tables: usize,
    rows: u64,
    blobs: u64,
    blob_bytes: u64,
}

async fn write_archive(
    req: &BackupRequest<'_>,
    scope: Scope,
    file: tokio::fs::File,
) -> anyhow::Result<(tokio::fs::File, u64, Sums, Counts)> {
    let mut w = TarWriter::new(file);
    let mut sums = Sums(Vec::new());
    let mut counts = Counts::default();
    let header = Header {
        format: FORMAT.into(),
        wharf_version: req.wharf_version.into(),
        schema_level: req.schema_level,
        scope: scope.as_str().into(),
        source: req.source.into(),
        created_at_ms: wharf_metastore::now_ms(),
    };
    small_entry(
        &mut w,
        &mut sums,
        HEADER_ENTRY,
        &serde_json::to_vec_pretty(&header)?,
    )
    .await?;

    // The metadata, streamed from one snapshot. Each table is an entry; its checksum
    // is computed as it is written.
    req.progress.step("metadata", None);
    let (tx, mut rx) = mpsc::channel(1024);
    let meta = req.meta.clone();
    let export = tokio::spawn(async move { meta.export(tx).await });
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    let mut table: Option<(String, Sha256, Vec<String>)> = None;
    let mut line = Vec::with_capacity(4096);
    while let Some(item) = rx.recv().await {
        match item {
            DumpItem::Table { name, columns } => {
                if let Some((name, hash, _)) = table.take() {
                    w.end().await?;
                    sums.0.push((name, hex::encode(hash.finalize())));
                }
                counts.tables += 1;
                let entry = format!("metadata/{:02}-{name}.jsonl", counts.tables);
                w.begin(&entry).await?;
                let names = columns.iter().map(|c| c.name.clone()).collect();
                line.clear();
                serde_json::to_writer(
                    &mut line,
                    &rows::TableLine {
                        table: name,
                        columns,
                    },
                )?;
                line.push(b'\n');
                let mut hash = Sha256::new();
                hash.update(&line);
                w.write(&line).await?;
                table = Some((entry, hash, names));
            }
            DumpItem::Row(row) => {
                let Some((entry, hash, names)) = table.as_mut() else {
                    bail!("the metadata export sent a row before a table");
                };
                if entry.ends_with("-blobs.jsonl") {
                    blobs.push(blob_of(names, &row)?);
                }
                line.clear();
                serde_json::to_writer(&mut line, &rows::encode(&row))?;
                line.push(b'\n');
                hash.update(&line);
                w.write(&line).await?;
                counts.rows += 1;
                req.progress.advance(line.len() as u64);
            }
        }
    }
    export
        .await
        .context("the metadata export stopped")?
        .context("cannot read the metadata store")?;
    if let Some((name, hash, _)) = table.take() {
        w.end().await?;
        sums.0.push((name, hex::encode(hash.finalize())));
    }
    req.progress.finish(&format!(
        "metadata: {} tables, {} rows",
        counts.tables, counts.rows
    ));

    if let Some(store) = &req.blobs {
        let total: u64 = blobs.iter().map(|(_, s)| s).sum();
        req.progress.step("blobs", Some(total));
        for (digest, size) in &blobs {
            let sum = copy_blob(&mut w, store.as_ref(), digest, *size, req.progress).await?;
            sums.0.push((blob_entry(digest), sum));
            counts.blobs += 1;
            counts.blob_bytes += size;
        }
        req.progress.finish(&format!(
            "blobs: {} ({} bytes)",
            counts.blobs, counts.blob_bytes
        ));
    }

    let text = sums.text();
    w.begin(SUMS_ENTRY).await?;
    w.write(text.as_bytes()).await?;
    w.end().await?;
    let (file, bytes) = w.finish().await?;
    Ok((file, bytes, sums, counts))
}

pub(crate) fn blob_entry(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// The digest and size of a row of the `blobs` table.
fn blob_of(names: &[String], row: &[Value]) -> anyhow::Result<(Digest, u64)> {
    let col = |n: &str| {
        names
            .iter()
            .position(|c| c == n)
            .with_context(|| format!("the blobs table has no {n} column"))
    };
    let (Value::Text(d), Value::Int(size)) = (&row[col("digest")?], &row[col("size")?]) else {
        bail!("a row of the blobs table is malformed");
    };
    Ok((
        d.parse()
            .with_context(|| format!("a stored digest {d:?} is invalid"))?,
        *size as u64,
    ))
}

/// Streams one blob into the archive, checking it against its digest on the way (a
/// backup must not preserve a damaged blob as if it were good). Returns the entry's
/// SHA-256.
async fn copy_blob(
    w: &mut TarWriter<tokio::fs::File>,
    store: &dyn BlobStore,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> anyhow::Result<String> {
    let mut stream = match store.read(digest, None).await {
        Ok(s) => s,
        Err(wharf_blobstore::StoreError::NotFound) => bail!(
            "blob {digest} is in the metadata but not in the blob store; the backup is not written"
        ),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read blob {digest}"))),
    };
    w.begin(&blob_entry(digest)).await?;
    let mut sha256 = Sha256::new();
    let mut other =
        (digest.algorithm() != Algorithm::Sha256).then(|| Hasher::new(digest.algorithm()));
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("cannot read blob {digest}"))?;
        sha256.update(&chunk);
        if let Some(h) = other.as_mut() {
            h.update(&chunk);
        }
        w.write(&chunk).await?;
        written += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    w.end().await?;
    let sum = hex::encode(sha256.finalize());
    let actual = match other {
        Some(h) => h.finish().hex().to_string(),
        None => sum.clone(),
    };
    if written != size || actual != digest.hex() {
        bail!("blob {digest} in the blob store is damaged ({written} bytes, content {actual}); the backup is not written");
    }
    Ok(sum)
}
