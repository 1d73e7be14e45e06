//! An in-memory store for tests and for trying things out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use wharf_oci::{Digest, UploadId};

use crate::{BlobStore, ByteRange, ByteStream, Result, StoreError, UploadWriter};

#[derive(Debug, Default, Clone)]
pub struct MemoryBlobStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    blobs: BTreeMap<Digest, Bytes>,
    uploads: BTreeMap<UploadId, Vec<u8>>,
}

impl MemoryBlobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn once(b: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(b)]))
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.lock().blobs.get(digest).map(|b| b.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let blob = self
            .lock()
            .blobs
            .get(digest)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let size = blob.len() as u64;
        let r = range.unwrap_or(ByteRange {
            start: 0,
            end: size,
        });
        if r.start > r.end || r.end > size {
            return Err(StoreError::InvalidRange {
                start: r.start,
                end: r.end,
                size,
            });
        }
        Ok(once(blob.slice(r.start as usize..r.end as usize)))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        Ok(self.lock().blobs.remove(digest).is_some())
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        Ok(self.lock().blobs.keys().cloned().collect())
    }

    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        let mut inner = self.lock();
        if offset == 0 {
            inner.uploads.entry(id.clone()).or_default().clear();
        } else {
            let data = inner.uploads.get_mut(id).ok_or(StoreError::NotFound)?;
            if (data.len() as u64) < offset {
                return Err(StoreError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upload data is shorter than its recorded offset",
                )));
            }
            data.truncate(offset as usize);
        }
        Ok(Box::new(MemoryUploadWriter {
            store: self.clone(),
            id: id.clone(),
        }))
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let data = self
            .lock()
            .uploads
            .get(id)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        Ok(once(Bytes::from(data)))
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let mut inner = self.lock();
        let data = inner.uploads.get(id).ok_or(StoreError::NotFound)?.clone();
        inner
            .blobs
            .entry(digest.clone())
            .or_insert_with(|| Bytes::from(data));
        Ok(())
    }

    async fn upload_delete(&self, id: &UploadId) -> Result<()> {
        self.lock().uploads.remove(id);
        Ok(())
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>> {
        Ok(self.lock().uploads.keys().cloned().collect())
    }
}

struct MemoryUploadWriter {
    store: MemoryBlobStore,
    id: UploadId,
}

#[async_trait]
impl UploadWriter for MemoryUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut inner = self.store.lock();
        let data = inner
            .uploads
            .get_mut(&self.id)
            .ok_or(StoreError::NotFound)?;
        data.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let inner = self.store.lock();
        Ok(inner.uploads.get(&self.id).map_or(0, |d| d.len() as u64))
    }
}
