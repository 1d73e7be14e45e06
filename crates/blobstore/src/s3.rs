//! Blobs in an S3-compatible object store (through the `object_store` crate), for
//! several replicas sharing one store.
//!
//! Objects appear whole or not at all, so a half-written blob is never visible. S3
//! cannot append, so an upload session is a set of objects, one per chunk written,
//! named by the offset it starts at: `uploads/<id>/<offset>`, next to a marker object
//! that says the session exists. Committing copies a single chunk server-side, or
//! concatenates several into the blob with a multipart upload.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use wharf_oci::{Digest, UploadId};

use crate::{BlobStore, ByteRange, ByteStream, Result, StoreError, UploadWriter};

/// Where and how to reach the store. Credentials come from here or, when absent, from
/// the usual AWS environment variables.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, so several registries can share one.
    pub prefix: String,
    /// For S3-compatible servers (MinIO, Ceph, …); AWS otherwise.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The largest object committed with one server-side copy; a larger single chunk
    /// is streamed into a multipart upload instead. `None`: S3's own limit, 5 GiB.
    pub max_copy_bytes: Option<u64>,
}

/// S3 refuses a server-side copy (CopyObject) of more than 5 GiB.
pub const S3_MAX_COPY_BYTES: u64 = 5 << 30;

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    max_copy_bytes: u64,
}

const MARKER: &str = "session";

fn err(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Io(std::io::Error::other(other)),
    }
}

impl S3BlobStore {
    pub fn open(config: &S3Config) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(r) = &config.region {
            b = b.with_region(r);
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &config.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let store = b.build().map_err(err)?;
        Ok(S3BlobStore {
            store: Arc::new(store),
            prefix: config.prefix.trim_matches('/').to_string(),
            max_copy_bytes: config.max_copy_bytes.unwrap_or(S3_MAX_COPY_BYTES),
        })
    }

    fn key(&self, rest: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    fn upload_dir(&self, id: &UploadId) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    fn chunk_key(&self, id: &UploadId, offset: u64) -> Path {
        self.key(&format!("uploads/{id}/{offset:020}"))
    }

    /// The session's chunks as (offset, size, key), in order; `NotFound` if there is
    /// no such session.
    async fn chunks(&self, id: &UploadId) -> Result<Vec<(u64, u64, Path)>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.upload_dir(id)))
            .try_collect()
            .await
            .map_err(err)?;
        let mut found_marker = false;
        let mut chunks = Vec::new();
        for meta in listed {
            let name = meta.location.filename().unwrap_or("").to_string();
            if name == MARKER {
                found_marker = true;
            } else if let Ok(offset) = name.parse::<u64>() {
                chunks.push((offset, meta.size, meta.location));
            }
        }
        if !found_marker {
            return Err(StoreError::NotFound);
        }
        chunks.sort_by_key(|c| c.0);
        Ok(chunks)
    }

    async fn stream_chunks(&self, chunks: Vec<(u64, u64, Path)>) -> ByteStream {
        let store = self.store.clone();
        let s = futures_util::stream::iter(chunks)
            .then(move |(_, _, key)| {
                let store = store.clone();
                async move { store.get(&key).await.map(|r| r.into_stream()) }
            })
            .map_ok(|s| s.map_err(std::io::Error::other))
            .map_err(std::io::Error::other)
            .try_flatten();
        Box::pin(s)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// One GET, whole or ranged: its answer carries the size that checks the range.
    /// Only an empty or refused range costs a HEAD, to report the size.
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let key = self.blob_key(digest);
        let invalid = |r: ByteRange, size: u64| StoreError::InvalidRange {
            start: r.start,
            end: r.end,
            size,
        };
        if let Some(r) = range.filter(|r| r.start >= r.end) {
            let size = self.store.head(&key).await.map_err(err)?.size;
            if r.start > r.end || r.end > size {
                return Err(invalid(r, size));
            }
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let opts = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&key, opts).await {
            Ok(got) => {
                if let Some(r) = range.filter(|r| r.end > got.meta.size) {
                    return Err(invalid(r, got.meta.size)); // S3 clips an end past the size
                }
                Ok(Box::pin(got.into_stream().map_err(std::io::Error::other)))
            }
            // A start past the end is refused (416): say so with the size.
            Err(e @ object_store::Error::NotFound { .. }) => Err(err(e)),
            Err(e) => match (range, self.store.head(&key).await) {
                (Some(r), Ok(meta)) if r.end > meta.size => Err(invalid(r, meta.size)),
                _ => Err(err(e)),
            },
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(&self.blob_key(digest))
            .await
            .map_err(err)?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.key("blobs")))
            .try_collect()
            .await
            .map_err(err)?;
        let mut out: Vec<Digest> = listed
            .iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.parts().collect();
                let n = parts.len();
                (n >= 2).then(|| format!("{}:{}", parts[n - 2].as_ref(), parts[n - 1].as_ref()))
            })
            .filter_map(|s| s.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        if offset == 0 {
            // A new session (or a restart from zero): clear anything left, mark it.
            self.upload_delete(id).await?;
            self.store
                .put(
                    &self.key(&format!("uploads/{id}/{MARKER}")),
                    PutPayload::new(),
                )
                .await
                .map_err(err)?;
        } else {
            let chunks = self.chunks(id).await?;
            let end = chunks.last().map_or(0, |c| c.0 + c.1);
            if end < offset {
                return Err(StoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upload data is shorter than its recorded offset",
                )));
            }
            // Discard data past `offset`: whole chunks, or the tail of one.
            for (start, size, key) in chunks {
                if start >= offset {
                    self.store.delete(&key).await.map_err(err)?;
                } else if start + size > offset {
                    let head = self
                        .store
                        .get_range(&key, 0..offset - start)
                        .await
                        .map_err(err)?;
                    self.store
                        .put(&key, PutPayload::from(head))
                        .await
                        .map_err(err)?;
                }
            }
        }
        let upload = self
            .store
            .put_multipart(&self.chunk_key(id, offset))
            .await
            .map_err(err)?;
        Ok(Box::new(S3UploadWriter {
            writer: Some(WriteMultipart::new(upload)),
            written: 0,
            offset,
        }))
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let chunks = self.chunks(id).await?;
        Ok(self.stream_chunks(chunks).await)
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let chunks = self.chunks(id).await?;
        let target = self.blob_key(digest);
        if self.stat(digest).await?.is_none() {
            match chunks.len() {
                0 => {
                    self.store
                        .put(&target, PutPayload::new())
                        .await
                        .map_err(err)?;
                }
                // One server-side copy while S3 allows it (5 GiB); a larger single
                // chunk goes the way of several, streamed into a multipart upload.
                1 if chunks[0].1 <= self.max_copy_bytes => {
                    self.store.copy(&chunks[0].2, &target).await.map_err(err)?
                }
                _ => {
                    let mut w =
                        WriteMultipart::new(self.store.put_multipart(&target).await.map_err(err)?);
                    let mut data = self.stream_chunks(chunks).await;
                    while let Some(bytes) = data.next().await {
                        w.wait_for_capacity(8).await.map_err(err)?;
                        w.put(bytes.map_err(StoreError::Io)?);
                    }
                    w.finish().await.map_err(err)?;
                }
            }
        }
        Ok(())
    }

    async fn upload_delete(&self, id: &UploadId) -> Result<()> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.upload_dir(id)))
            .try_collect()
            .await
            .map_err(err)?;
        for meta in listed {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.key("uploads")))
            .await
            .map_err(err)?;
        let mut out: Vec<UploadId> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|n| n.parse().ok()))
            .collect();
        out.sort();
        Ok(out)
    }
}

struct S3UploadWriter {
    writer: Option<WriteMultipart>,
    written: u64,
    offset: u64,
}

#[async_trait]
impl UploadWriter for S3UploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let w = self.writer.as_mut().expect("writer used after finish");
        // Bounded buffering: at most a few parts in flight.
        w.wait_for_capacity(4).await.map_err(err)?;
        self.written += chunk.len() as u64;
        w.put(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let w = self.writer.take().expect("finish once");
        if self.written == 0 {
            // Nothing to store: no empty chunk objects.
            w.abort().await.map_err(err)?;
        } else {
            w.finish().await.map_err(err)?;
        }
        Ok(self.offset + self.written)
    }
}
