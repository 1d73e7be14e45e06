//! Metadata: repositories, which blobs each repository may use, manifests, tags and
//! upload sessions.
//!
//! The trait speaks in domain types and whole operations ("complete this upload",
//! "store this manifest and move this tag"), each one transaction, so that every
//! backend gives the same guarantees and the registry never sees SQL.

use async_trait::async_trait;
use bytes::Bytes;
use wharf_oci::{Digest, Reference, RepoName, Tag, UploadId};

pub mod accounts;
pub mod browse;
pub mod content_caches;
pub mod dump;
pub mod gc;
pub mod jobs;
pub mod journal;
pub mod postgres;
pub mod proxy;
pub mod replicas;
pub mod scan;
pub mod schema;
pub mod sqlite;
pub mod testsuite;

pub use accounts::AccountStore;
pub use browse::BrowseStore;
pub use content_caches::{ContentCacheRow, ContentCacheStore};
pub use dump::{BackupRecord, BackupStore};
pub use gc::GcStore;
pub use jobs::JobStore;
pub use journal::UpgradeJournal;
pub use postgres::PgMetaStore;
pub use proxy::{ProxiedManifest, ProxyConfig, ProxyStore};
pub use replicas::{ReplicaReport, ReplicaRow, ReplicaStore};
pub use scan::ScanStore;
pub use sqlite::SqliteMetaStore;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A manifest names a blob or manifest its repository does not have.
    #[error("{0} is not in the repository")]
    MissingReference(Digest),
    #[error("the metadata schema is at level {found}, newer than this wharf understands (level {supported}); run a wharf release that supports it")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("the metadata schema is at level {found} and this wharf needs level {supported}; run `wharf upgrade apply` first")]
    SchemaTooOld { found: u32, supported: u32 },
    /// A name that must be unique is taken, or a referenced row is missing.
    #[error("{0}")]
    Conflict(String),
    #[error("metadata store error: {0}")]
    Backend(String),
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// An upload session held by [`MetaStore::hold_upload`]; dropping it lets go.
pub struct UploadHold {
    /// Kept only to be dropped: that is the letting go.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl UploadHold {
    /// A hold that holds nothing.
    pub fn none() -> UploadHold {
        UploadHold { _guard: None }
    }

    /// A hold that lasts as long as `guard`.
    pub fn new(guard: impl Send + Sync + 'static) -> UploadHold {
        UploadHold {
            _guard: Some(Box::new(guard)),
        }
    }
}

/// An upload session, as every replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received and recorded so far: the next chunk must start here.
    pub size: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A manifest to store: its exact bytes and the fields the registry queries by.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Bytes,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// The manifest's top-level annotations as JSON, reported by the referrers API.
    pub annotations_json: Option<String>,
    /// Blobs and manifests that must be in the repository for the manifest to be stored.
    pub required_blobs: Vec<Digest>,
    pub required_manifests: Vec<Digest>,
    /// Queue a `scan` job with the manifest, in its transaction (scan on push).
    pub scan: Option<ScanOnPush>,
    /// What a list of tags shows of it, stored with it (schema level 3; `None` when it
    /// was not written, as by releases before 1.2.0: the `manifestsummaries` job fills
    /// it in).
    pub summary: Option<wharf_oci::ManifestSummary>,
    /// Stored by a pull-through proxy: the references are recorded (for GC) but not
    /// required, since the proxy fetches them from its upstream when they are asked for.
    pub references_on_demand: bool,
}

impl NewManifest {
    /// Whether storing it writes to schema level 3's tables (its scan, its summary).
    pub fn uses_level_3(&self) -> bool {
        self.scan.is_some() || self.summary.is_some()
    }
}

/// The `scan` job a manifest push queues, in the push's own transaction: a pushed image
/// is never stored without its scan queued, whatever happens to the replica after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOnPush {
    /// The job's parameters (`{"repository","digest"}`).
    pub params: String,
    /// The image manifests the job would scan: the manifest itself, or an index's
    /// platform images. No job is queued when each of them already has an inventory or
    /// a waiting or running `scan` job naming its digest (dedupe across repositories
    /// and replicas: pushes of the same digest are serialised on it).
    pub covers: Vec<Digest>,
}

impl ScanOnPush {
    /// The pushed manifest's digest, from the job's parameters: a waiting or running job
    /// naming it covers it too (an index's job names the index, not its platforms).
    pub fn own_digest(&self) -> Option<String> {
        let params: serde_json::Value = serde_json::from_str(&self.params).ok()?;
        params["digest"].as_str().map(str::to_string)
    }
}

/// The attempts a scan-on-push job gets.
pub const SCAN_ON_PUSH_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Present when asked for.
    pub payload: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations_json: Option<String>,
}

#[async_trait]
pub trait MetaStore:
    AccountStore
    + BrowseStore
    + ReplicaStore
    + BackupStore
    + JobStore
    + GcStore
    + ScanStore
    + ContentCacheStore
    + ProxyStore
    + UpgradeJournal
    + Send
    + Sync
    + 'static
{
    /// The schema level of the data this store holds.
    async fn schema_level(&self) -> Result<u32>;

    // --- repositories ---
    /// Repository names in lexical order, after `after`, at most `limit`.
    async fn list_repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>>;

    // --- blobs ---
    /// The size of `digest` if `repo` may use it.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;
    /// The size of `digest` if any repository has it (its bytes are stored).
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Repositories that may use `digest`, at most `limit`, in name order.
    async fn repositories_with_blob(&self, digest: &Digest, limit: usize) -> Result<Vec<RepoName>>;
    /// Lets `repo` use a blob that is already stored (a cross-repository mount).
    /// `false` if the blob is not stored.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    /// Removes `repo`'s use of a blob; `false` if it had none. The bytes stay for GC.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    // --- upload sessions ---
    async fn create_upload(&self, session: &UploadSession) -> Result<()>;
    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>>;
    /// Sessions idle since before `before_ms`, oldest first, at most `limit`.
    async fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<UploadSession>>;
    /// Records that the session grew from `from` to `to` bytes; `false` if its size was
    /// no longer `from` (another request got there first) or it is gone.
    async fn advance_upload(&self, id: &UploadId, from: u64, to: u64) -> Result<bool>;
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;
    /// Waits for, then holds, an upload session exclusively among every replica that
    /// shares this store, until the returned hold is dropped. The registry holds it
    /// around each append and each commit and reads the session's record under it, so
    /// a chunk racing the commit through another replica either lands before it (and
    /// is verified with it) or finds the session gone: a committed blob's bytes never
    /// change, and a session takes nothing after its commit. A store that one process
    /// serves alone (SQLite) holds nothing: the registry serialises a session's
    /// requests within the process.
    async fn hold_upload(&self, _id: &UploadId) -> Result<UploadHold> {
        Ok(UploadHold::none())
    }
    /// In one transaction: records the stored blob, lets the session's repository use
    /// it, ends the session. Call only once the blob's bytes are durable.
    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()>;

    // --- manifests and tags ---
    /// In one transaction: checks the required blobs and manifests are in `repo`,
    /// stores the manifest (a no-op if already stored) and points `tag` at it.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &NewManifest,
        tag: Option<&Tag>,
    ) -> Result<()>;
    /// Queues `scan`'s job on its own, with the same dedupe as a push's (every image it
    /// covers already has an inventory or a waiting or running scan job: nothing is
    /// queued). `true` if a job was queued. For "rescan all", which must not queue a
    /// second scan of an image a push has queued already.
    async fn queue_scan(&self, scan: &ScanOnPush) -> Result<bool>;
    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_payload: bool,
    ) -> Result<Option<StoredManifest>>;
    /// Deletes a manifest and every tag pointing at it; `false` if it was not there.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;
    /// Tags in lexical order after `after`, at most `limit`; `None` if the repository
    /// does not exist.
    async fn list_tags(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<Tag>>>;
    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
