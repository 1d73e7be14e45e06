//! Blob storage: the bytes of layers and configs, addressed by digest, and the
//! in-progress bytes of upload sessions.
//!
//! A backend only moves bytes. It does not hash, validate or decide anything: the
//! registry crate verifies digests while data streams through it. What every backend
//! must guarantee is written on the trait and checked by [`testsuite`].

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use wharf_oci::{Digest, UploadId};

pub mod fs;
pub mod memory;
pub mod s3;
pub mod testsuite;

pub use fs::FsBlobStore;
pub use memory::MemoryBlobStore;
pub use s3::{S3BlobStore, S3Config};

/// A stream of blob bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("byte range {start}-{end} is outside the blob of {size} bytes")]
    InvalidRange { start: u64, end: u64, size: u64 },
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A small blob read whole (an image configuration, say): at most `limit` bytes, an
/// error beyond.
pub async fn read_small(store: &dyn BlobStore, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
    use futures_util::StreamExt;
    let mut stream = store.read(digest, None).await?;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() as u64 > limit {
            return Err(StoreError::Io(io::Error::other(format!(
                "blob {digest} is larger than {limit} bytes"
            ))));
        }
    }
    Ok(buf)
}

/// A half-open byte range `[start, end)` of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The size of a stored blob, or `None` if it is not stored.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// The blob's bytes, whole or a range of them. `NotFound` if absent,
    /// `InvalidRange` if the range does not lie inside the blob.
    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream>;

    /// Removes a blob; `false` if it was not there.
    async fn delete(&self, digest: &Digest) -> Result<bool>;

    /// Every stored blob.
    async fn list(&self) -> Result<Vec<Digest>>;

    /// Opens an upload session's data for appending at `offset`, creating it when
    /// `offset` is 0. Bytes past `offset` (left by an interrupted write whose offset was
    /// never recorded) are discarded first.
    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>>;

    /// The bytes an upload session holds so far.
    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream>;

    /// Makes an upload's bytes the blob `digest`, durably and atomically: once this
    /// returns, the blob survives a crash, and before it returns no reader can see a
    /// partial blob. Committing a digest that is already stored is not an error (two
    /// clients pushing the same layer at once both succeed). The upload keeps its data
    /// until [`Self::upload_delete`], so a commit can be repeated.
    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()>;

    /// Discards an upload session's bytes; not an error if there are none.
    async fn upload_delete(&self, id: &UploadId) -> Result<()>;

    /// Upload sessions that have data, for purging abandoned ones.
    async fn upload_list(&self) -> Result<Vec<UploadId>>;
}

/// Appends to an upload session. Dropping it without `finish` may leave part of the
/// written data behind; the registry records the offset only after `finish`.
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Flushes and returns the session's total size.
    async fn finish(self: Box<Self>) -> Result<u64>;
}
