//! Reading and deleting blobs in a repository.

use bytes::Bytes;
use wharf_oci::{Digest, Reference, RepoName};

use crate::error::{RegistryError, Result};
use crate::{ByteRange, ByteStream, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// Whether its bytes are in the blob store (a manifest read as a blob is not): only
    /// those can be sent to a content cache.
    pub in_store: bool,
}

pub enum BlobBody {
    Stream(ByteStream),
    /// Manifests are also readable as blobs (as the reference registry allows); their
    /// bytes come from the metadata store.
    Bytes(Bytes),
}

impl Registry {
    /// The size of a blob `repo` may serve.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobInfo> {
        if let Some(size) = self.meta.repo_blob(repo, digest).await? {
            return Ok(BlobInfo {
                size,
                in_store: true,
            });
        }
        match self
            .meta
            .get_manifest(repo, &Reference::Digest(digest.clone()), false)
            .await?
        {
            Some(m) => Ok(BlobInfo {
                size: m.size,
                in_store: false,
            }),
            None => Err(RegistryError::BlobUnknown(digest.clone())),
        }
    }

    /// A blob's bytes, or a range of them. Call [`Registry::stat_blob`] first to
    /// resolve the range against the size.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobBody> {
        if self.meta.repo_blob(repo, digest).await?.is_some() {
            return match self.blobs.read(digest, range).await {
                Ok(s) => Ok(BlobBody::Stream(s)),
                Err(wharf_blobstore::StoreError::NotFound) => {
                    // Metadata says stored, the store disagrees: never serve a blob we
                    // cannot back, and make the inconsistency loud.
                    tracing::error!(%digest, %repo, "blob is recorded but missing from the blob store");
                    Err(RegistryError::BlobUnknown(digest.clone()))
                }
                Err(e) => Err(e.into()),
            };
        }
        let m = self
            .meta
            .get_manifest(repo, &Reference::Digest(digest.clone()), true)
            .await?
            .ok_or_else(|| RegistryError::BlobUnknown(digest.clone()))?;
        let payload = m.payload.unwrap_or_default();
        let r = range.unwrap_or(ByteRange {
            start: 0,
            end: payload.len() as u64,
        });
        if r.start > r.end || r.end > payload.len() as u64 {
            return Err(RegistryError::RangeInvalid {
                start: r.start,
                end: r.end,
                size: payload.len() as u64,
            });
        }
        Ok(BlobBody::Bytes(
            payload.slice(r.start as usize..r.end as usize),
        ))
    }

    /// Removes the blob from `repo`. Its bytes stay until garbage collection proves
    /// nothing else needs them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown(digest.clone()))
        }
    }
}
