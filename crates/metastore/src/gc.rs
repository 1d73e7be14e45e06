//! What online garbage collection and the `metadatastoremigration` job need from the
//! metadata store. Every deletion re-checks, inside its own transaction and under the
//! locks that writers take, that nothing refers to what it deletes: a manifest PUT
//! that needs a blob and a sweep that would delete it cannot both win.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use wharf_oci::Digest;

use crate::Result;

/// A manifest stored before references were recorded (by release 1.0.0).
#[derive(Debug, Clone)]
pub struct PendingManifest {
    pub repository_id: i64,
    pub digest: Digest,
    pub media_type: String,
    pub payload: Bytes,
}

/// The references of one manifest, to record.
#[derive(Debug, Clone)]
pub struct ManifestRefs {
    pub repository_id: i64,
    pub digest: Digest,
    pub blobs: Vec<Digest>,
    pub manifests: Vec<Digest>,
}

/// A repository's link to a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub repository_id: i64,
    pub repository: String,
    pub digest: Digest,
}

/// A manifest in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestKey {
    pub repository_id: i64,
    pub repository: String,
    pub digest: Digest,
}

/// Deletes the bytes of the given blobs; runs while the store holds their rows locked,
/// so no writer can start using them meanwhile. Returns one result per digest, in order.
pub type DeleteBytes = Box<
    dyn FnOnce(
            Vec<Digest>,
        )
            -> Pin<Box<dyn Future<Output = Vec<std::result::Result<(), String>>> + Send>>
        + Send,
>;

/// What one batch of blob deletions did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobDeletion {
    /// Row and bytes gone.
    pub deleted: Vec<Digest>,
    /// Bytes could not be deleted: the row stays, and a later run tries again.
    pub failed: Vec<(Digest, String)>,
}

#[async_trait]
pub trait GcStore: Send + Sync {
    /// Manifests whose references are not recorded yet.
    async fn count_manifests_without_refs(&self) -> Result<u64>;
    /// Up to `limit` of them, in key order.
    async fn manifests_without_refs(&self, limit: usize) -> Result<Vec<PendingManifest>>;
    /// Records references and marks the manifests done, in one transaction; returns how
    /// many manifests this marked (those already marked are left as they are, so
    /// running a batch twice counts nothing twice).
    async fn record_manifest_refs(&self, batch: &[ManifestRefs]) -> Result<u64>;

    /// Links older than `linked_before_ms` that no manifest of their repository refers
    /// to, after `after` (repository id, digest), in key order.
    async fn unreferenced_links(
        &self,
        linked_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Link>>;
    /// Removes those of `links` that, checked again now under lock, are still older
    /// than the cutoff and unreferenced; returns how many it removed. Links a writer
    /// holds at the moment are skipped (they are in use), not waited for.
    async fn unlink_unreferenced(&self, links: &[Link], linked_before_ms: i64) -> Result<u64>;

    /// Blobs no repository links, created before `created_before_ms`, after `after`.
    async fn unlinked_blobs(
        &self,
        created_before_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(Digest, u64)>>;
    /// Deletes those of `digests` that, checked again under lock, are still older than
    /// the cutoff and linked by no repository: their bytes first (`delete_bytes`, once,
    /// for all of them, while their rows are locked), then the rows of those whose bytes
    /// went. Blobs a writer holds at the moment are skipped.
    async fn delete_unlinked_blobs(
        &self,
        digests: &[Digest],
        created_before_ms: i64,
        delete_bytes: DeleteBytes,
    ) -> Result<BlobDeletion>;

    /// Untagged manifests created before the cutoff that no other manifest refers to
    /// and that do not refer to a subject (signatures, SBOMs and other referrers stay
    /// with their subject), after `after`, in key order.
    async fn untagged_manifests(
        &self,
        created_before_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<ManifestKey>>;
    /// Deletes those of `manifests` that, checked again under lock, are still untagged
    /// and unreferenced; returns how many it deleted.
    async fn delete_unused_manifests(
        &self,
        manifests: &[ManifestKey],
        created_before_ms: i64,
    ) -> Result<u64>;
}
