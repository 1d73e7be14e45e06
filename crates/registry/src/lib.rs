//! The registry's use cases, independent of HTTP and of any storage engine.
//!
//! Rules that hold everywhere:
//! - A digest is verified before anything is stored under it.
//! - Blob bytes are durable before the metadata that makes them visible is committed.
//! - A repository only serves the blobs and manifests pushed (or mounted) into it.

use std::sync::Arc;
use std::time::Duration;

use wharf_blobstore::BlobStore;
use wharf_metastore::MetaStore;

mod blobs;
mod error;
mod ingest;
mod listing;
mod manifests;
mod scan_policy;
mod uploads;

pub use blobs::{BlobBody, BlobInfo};
pub use error::{RegistryError, Result};
pub use listing::Page;
pub use manifests::{ManifestContent, PushedManifest};
pub use scan_policy::{policy_from_row, EffectivePolicy, POLICY_CACHE_TTL};
pub use uploads::{Chunk, ChunkRange, UploadStarted};
pub use wharf_blobstore::{ByteRange, ByteStream};
pub use wharf_metastore::UploadSession;

/// Limits that protect the registry from oversized or abusive input.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest accepted, in bytes (the distribution spec suggests 4 MiB).
    pub max_manifest_bytes: u64,
    /// An upload session with no activity for this long is treated as abandoned.
    pub upload_expiry: Duration,
    /// Largest page of tags or repositories one request returns.
    pub max_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 << 20,
            upload_expiry: Duration::from_secs(24 * 3600),
            max_page: 10_000,
        }
    }
}

/// The registry: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Registry {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    limits: Limits,
    uploads: Arc<uploads::LiveUploads>,
    policies: Arc<scan_policy::PolicyCache>,
}

impl Registry {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, limits: Limits) -> Self {
        Registry {
            meta,
            blobs,
            limits,
            uploads: Default::default(),
            policies: Default::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.meta
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
}
