//! Checking an archive in full, then restoring from it: blobs first (a restored
//! manifest never points at a missing blob), then the metadata in one transaction.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use wharf_blobstore::BlobStore;
use wharf_metastore::dump::{Column, DumpItem, Value};
use wharf_metastore::MetaStore;
use wharf_oci::{Digest, Hasher, UploadId};

use crate::tar::TarReader;
use crate::{rows, Header, Progress, FORMAT, HEADER_ENTRY, SUMS_ENTRY};

const CHUNK: usize = 256 * 1024;

/// An archive whose every entry matched its checksum.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    /// `sha256:` of its `SHA256SUMS`, as recorded when it was written.
    pub checksum: String,
    pub entries: usize,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub bytes: u64,
}

async fn open(path: &Path) -> anyhow::Result<(TarReader<tokio::fs::File>, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().await?.len();
    Ok((TarReader::new(file), size))
}

/// Reads the rest of the current entry, at most `limit` bytes.
async fn read_small(
    r: &mut TarReader<tokio::fs::File>,
    limit: usize,
    what: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limit {
            bail!("{what} is implausibly large");
        }
    }
}

/// Reads the whole archive and checks it: a wharf backup, complete, every entry
/// matching `SHA256SUMS`, nothing extra. Touches nothing.
pub async fn verify(path: &Path, progress: &dyn Progress) -> anyhow::Result<Verified> {
    verify_inner(path, progress)
        .await
        .with_context(|| format!("{} is not a usable wharf backup", path.display()))
}

async fn verify_inner(path: &Path, progress: &dyn Progress) -> anyhow::Result<Verified> {
    let (mut r, size) = open(path).await?;
    progress.step("verify", Some(size));
    let first = r.next().await?.context("the archive is empty")?;
    if first.name != HEADER_ENTRY {
        bail!(
            "it does not start with {HEADER_ENTRY} (found {:?})",
            first.name
        );
    }
    let raw = read_small(&mut r, 1 << 20, HEADER_ENTRY).await?;
    let header: Header = serde_json::from_slice(&raw).context("its header is not readable")?;
    if header.format != FORMAT {
        bail!(
            "its format is {:?}; this wharf reads {FORMAT:?}",
            header.format
        );
    }
    let mut seen: HashMap<String, String> = HashMap::new();
    seen.insert(HEADER_ENTRY.into(), hex::encode(Sha256::digest(&raw)));
    let (mut blobs, mut blob_bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    let sums_text = loop {
        let entry = r
            .next()
            .await?
            .with_context(|| format!("it ends without {SUMS_ENTRY} (truncated?)"))?;
        if entry.name == SUMS_ENTRY {
            break String::from_utf8(read_small(&mut r, 1 << 30, SUMS_ENTRY).await?)
                .context("SHA256SUMS is not text")?;
        }
        let mut hash = Sha256::new();
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            progress.advance(n as u64);
        }
        if entry.name.starts_with("blobs/") {
            blobs += 1;
            blob_bytes += entry.size;
        }
        if seen
            .insert(entry.name.clone(), hex::encode(hash.finalize()))
            .is_some()
        {
            bail!("it holds {} twice", entry.name);
        }
    };
    if r.next().await?.is_some() {
        bail!("it has entries after {SUMS_ENTRY}");
    }
    r.expect_eof().await?;
    let mut listed = HashSet::new();
    for line in sums_text.lines() {
        let (sum, name) = line
            .split_once("  ")
            .context("SHA256SUMS has a malformed line")?;
        match seen.get(name) {
            None => bail!("it lacks {name}, which SHA256SUMS lists"),
            Some(actual) if actual != sum => {
                bail!("{name} is damaged: its SHA-256 is {actual}, SHA256SUMS says {sum}")
            }
            Some(_) => {}
        }
        listed.insert(name);
    }
    if let Some(extra) = seen.keys().find(|n| !listed.contains(n.as_str())) {
        bail!("{extra} is not listed in SHA256SUMS");
    }
    progress.finish(&format!("verified {} entries, {blobs} blobs", seen.len()));
    Ok(Verified {
        header,
        checksum: format!(
            "sha256:{}",
            hex::encode(Sha256::digest(sums_text.as_bytes()))
        ),
        entries: seen.len(),
        blobs,
        blob_bytes,
        bytes: size,
    })
}

pub struct RestoreRequest<'a> {
    pub archive: &'a Path,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub wharf_version: &'a str,
    pub schema_level: u32,
    /// Overwrite a metadata store that holds data.
    pub replace: bool,
    /// Restore a backup that another wharf version (of the same schema level) wrote.
    pub allow_version_mismatch: bool,
    pub progress: &'a dyn Progress,
    /// The result of [`verify`] on this archive, when the caller has just run it
    /// (saves reading the archive once more); otherwise it is verified first.
    pub verified: Option<Verified>,
}

#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub verified: Verified,
    pub rows: u64,
    /// Blobs copied into the blob store, and those it already had.
    pub blobs_written: u64,
    pub blobs_present: u64,
    /// Blobs the metadata names that the blob store does not hold (a metadata-only
    /// backup restored without the blob store it belongs to).
    pub missing_blobs: Vec<Digest>,
}

/// Refuses a backup this wharf cannot or should not load, naming what to do instead.
pub fn check_version(
    h: &Header,
    version: &str,
    level: u32,
    allow_mismatch: bool,
) -> anyhow::Result<()> {
    if h.schema_level > level {
        bail!(
            "the backup was written by wharf {} at schema level {}, newer than this wharf {} understands (level {level}); restore it with wharf {} or later",
            h.wharf_version, h.schema_level, version, h.wharf_version
        );
    }
    if h.schema_level < level {
        bail!(
            "the backup was written by wharf {} at schema level {}; this wharf {version} needs level {level}. Restore it with wharf {}, then move to this version with `wharf upgrade apply`",
            h.wharf_version, h.schema_level, h.wharf_version
        );
    }
    if h.wharf_version != version && !allow_mismatch {
        bail!(
            "the backup was written by wharf {}, this is wharf {version} (both at schema level {level}); restore it with wharf {}, or pass --allow-version-mismatch to restore it with this one",
            h.wharf_version, h.wharf_version
        );
    }
    Ok(())
}

/// Refuses while any replica is serving from the store being restored.
async fn check_no_live_replica(meta: &dyn MetaStore) -> anyhow::Result<()> {
    let (rows, now) = meta.replicas().await.context("cannot read the replicas")?;
    for row in rows {
        let silent = now - row.heartbeat_at_ms;
        if silent <= 3 * row.report.heartbeat_interval_ms.max(1000) {
            bail!(
                "replica {} at {} is serving from this metadata store (it reported {} s ago); stop every replica before restoring",
                row.report.id,
                row.report.address,
                silent / 1000
            );
        }
    }
    Ok(())
}

pub async fn restore(req: RestoreRequest<'_>) -> anyhow::Result<RestoreSummary> {
    let verified = match req.verified.clone() {
        Some(v) => v,
        None => verify(req.archive, req.progress).await?,
    };
    check_version(
        &verified.header,
        req.wharf_version,
        req.schema_level,
        req.allow_version_mismatch,
    )?;
    check_no_live_replica(req.meta.as_ref()).await?;
    if !req.replace
        && !req
            .meta
            .is_empty()
            .await
            .context("cannot read the metadata store")?
    {
        bail!("the metadata store already holds data; restore into an empty one, or pass --replace to overwrite it");
    }

    // Blobs first: once the metadata is in, every blob it names is there.
    let (mut r, _) = open(req.archive).await?;
    req.progress.step("blobs", Some(verified.blob_bytes));
    let (mut written, mut present) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK];
    while let Some(entry) = r.next().await? {
        let Some(rest) = entry.name.strip_prefix("blobs/") else {
            continue;
        };
        let digest: Digest = rest
            .replacen('/', ":", 1)
            .parse()
            .with_context(|| format!("the archive entry {} names no digest", entry.name))?;
        if req.blobs.stat(&digest).await? == Some(entry.size) {
            present += 1;
            req.progress.advance(entry.size);
            continue;
        }
        let id = UploadId::new_unchecked(uuid::Uuid::new_v4().to_string());
        let mut writer = req.blobs.upload_writer(&id, 0).await?;
        let mut hasher = Hasher::new(digest.algorithm());
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            writer.write(Bytes::copy_from_slice(&buf[..n])).await?;
            req.progress.advance(n as u64);
        }
        writer.finish().await?;
        if hasher.finish() != digest {
            let _ = req.blobs.upload_delete(&id).await;
            bail!("blob {digest} changed in the archive since it was verified");
        }
        req.blobs
            .upload_commit(&id, &digest)
            .await
            .with_context(|| format!("cannot store blob {digest}"))?;
        req.blobs.upload_delete(&id).await?;
        written += 1;
    }
    req.progress.finish(&format!(
        "blobs: {written} restored, {present} already there"
    ));

    // The metadata, in one transaction.
    let (mut r, _) = open(req.archive).await?;
    let meta_bytes = verified.bytes - verified.blob_bytes;
    req.progress.step("metadata", Some(meta_bytes));
    let (tx, rx) = mpsc::channel(1024);
    let meta = req.meta.clone();
    let replace = req.replace;
    let import = tokio::spawn(async move { meta.import(rx, replace).await });
    let fed = feed_metadata(&mut r, &tx, req.progress).await;
    drop(tx);
    let loaded = import.await.context("the metadata import stopped")?;
    let blob_digests = fed?;
    let rows = loaded.context("cannot load the metadata; nothing was changed")?;
    req.progress.finish(&format!("metadata: {rows} rows"));

    let mut missing = Vec::new();
    for d in blob_digests {
        if req.blobs.stat(&d).await?.is_none() {
            missing.push(d);
        }
    }
    Ok(RestoreSummary {
        verified,
        rows,
        blobs_written: written,
        blobs_present: present,
        missing_blobs: missing,
    })
}

/// Sends the archive's tables to the import; returns the digests of the `blobs` table.
async fn feed_metadata(
    r: &mut TarReader<tokio::fs::File>,
    tx: &mpsc::Sender<DumpItem>,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<Digest>> {
    let stopped = || anyhow::anyhow!("the metadata import stopped early");
    let mut digests = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    while let Some(entry) = r.next().await? {
        if !entry.name.starts_with("metadata/") {
            continue;
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut columns: Option<(Vec<Column>, Option<usize>)> = None;
        loop {
            let n = r.read(&mut buf).await?;
            progress.advance(n as u64);
            if n == 0 {
                if !pending.is_empty() {
                    bail!("{} does not end with a newline", entry.name);
                }
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
                let line = &pending[start..start + nl];
                start += nl + 1;
                match &columns {
                    None => {
                        let t: rows::TableLine =
                            serde_json::from_slice(line).with_context(|| {
                                format!("{} does not start with its columns", entry.name)
                            })?;
                        let digest_col = (t.table == "blobs")
                            .then(|| t.columns.iter().position(|c| c.name == "digest"))
                            .flatten();
                        columns = Some((t.columns.clone(), digest_col));
                        tx.send(DumpItem::Table {
                            name: t.table,
                            columns: t.columns,
                        })
                        .await
                        .map_err(|_| stopped())?;
                    }
                    Some((cols, digest_col)) => {
                        let row = rows::decode(line, cols)
                            .with_context(|| format!("in {}", entry.name))?;
                        if let Some(Value::Text(d)) = digest_col.map(|i| &row[i]) {
                            digests
                                .push(d.parse().with_context(|| {
                                    format!("a stored digest {d:?} is invalid")
                                })?);
                        }
                        tx.send(DumpItem::Row(row)).await.map_err(|_| stopped())?;
                    }
                }
            }
            pending.drain(..start);
        }
    }
    Ok(digests)
}
