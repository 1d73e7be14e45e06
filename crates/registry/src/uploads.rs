//! Upload sessions: start, append chunks, finish with a digest, cancel; and
//! cross-repository mounts.
//!
//! Session state (repository, bytes received) lives in the metadata store, so any
//! process can continue a session. What stays in this process is an optimisation:
//! the running hash of the bytes received so far, so finishing a chunked upload does
//! not read the data back. When it is missing (another replica took the earlier
//! chunks, or this process restarted) the data is hashed again from the blob store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use wharf_metastore::{now_ms, UploadSession};
use wharf_oci::{Digest, Hasher, RepoName, UploadId};

use crate::error::{RegistryError, Result};
use crate::ingest::ingest;
use crate::{ByteStream, Registry};

/// Hash state kept for at most this many live sessions; beyond it, finishing an upload
/// re-reads its data instead. Bounds memory whatever clients do.
const MAX_TRACKED_SESSIONS: usize = 10_000;

/// How many repositories holding a blob are considered for a mount without `from`.
const MOUNT_CANDIDATES: usize = 100;

/// Per-session serialisation and running hash, for sessions this process is serving.
#[derive(Default)]
pub(crate) struct LiveUploads {
    sessions: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<HashState>>>>,
}

/// The hash of the first `upto` bytes of a session, if known.
#[derive(Default)]
struct HashState {
    upto: u64,
    hasher: Option<Hasher>,
}

impl LiveUploads {
    fn get(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<HashState>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED_SESSIONS && !map.contains_key(id) {
            map.retain(|_, s| Arc::strong_count(s) > 1); // drop idle entries
        }
        map.entry(id.clone()).or_default().clone()
    }

    fn forget(&self, id: &UploadId) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// The `Content-Range` of a PATCH: inclusive first and last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub first: u64,
    pub last: u64,
}

/// A piece of an upload as a request carries it.
pub struct Chunk {
    pub body: ByteStream,
    /// The request's `Content-Range`, if any.
    pub range: Option<ChunkRange>,
    /// The request's `Content-Length`, if any.
    pub len: Option<u64>,
}

impl Chunk {
    /// Checks the chunk continues a session of `size` bytes and returns how many bytes
    /// it must bring, when that is known.
    fn expected_len(&self, size: u64) -> Result<Option<u64>> {
        let Some(r) = self.range else {
            return Ok(self.len);
        };
        if r.first != size || r.last < r.first {
            return Err(RegistryError::ChunkOutOfOrder {
                expected: size,
                got: r.first,
            });
        }
        let len = r.last - r.first + 1;
        match self.len {
            Some(l) if l != len => Err(RegistryError::SizeMismatch {
                expected: len,
                actual: l,
            }),
            _ => Ok(Some(len)),
        }
    }
}

/// What `POST /blobs/uploads/` led to.
#[derive(Debug)]
pub enum UploadStarted {
    /// A session to send data to.
    Session(UploadSession),
    /// The blob was mounted from another repository; nothing to upload.
    Mounted(Digest),
    /// The whole blob came with the request and is stored.
    Complete(Digest),
}

fn new_id() -> UploadId {
    UploadId::new_unchecked(uuid::Uuid::new_v4().to_string())
}

impl Registry {
    /// Opens an upload session for `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadSession> {
        let now = now_ms();
        let session = UploadSession {
            id: new_id(),
            repo: repo.clone(),
            size: 0,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.meta.create_upload(&session).await?;
        Ok(session)
    }

    /// Repositories holding `digest`: where a mount without `from` may take it from,
    /// once the caller's read access to them is checked.
    pub async fn mount_candidates(&self, digest: &Digest) -> Result<Vec<RepoName>> {
        Ok(self
            .meta
            .repositories_with_blob(digest, MOUNT_CANDIDATES)
            .await?)
    }

    /// `POST ?mount=<digest>`: links the blob into `repo` from the first of `sources`
    /// (repositories the caller may read) that has it; otherwise opens an ordinary
    /// session, as the spec asks.
    pub async fn mount_or_start(
        &self,
        repo: &RepoName,
        digest: &Digest,
        sources: &[RepoName],
    ) -> Result<UploadStarted> {
        for source in sources {
            if self.meta.repo_blob(source, digest).await?.is_some() {
                if self.meta.link_blob(repo, digest).await? {
                    return Ok(UploadStarted::Mounted(digest.clone()));
                }
                break;
            }
        }
        Ok(UploadStarted::Session(self.start_upload(repo).await?))
    }

    /// `POST ?digest=<digest>` with the whole blob as the body.
    pub async fn upload_whole(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<UploadStarted> {
        let session = self.start_upload(repo).await?;
        match self
            .finish_upload(
                repo,
                &session.id,
                digest,
                Some(Chunk {
                    body,
                    range: None,
                    len: expected_len,
                }),
            )
            .await
        {
            Ok(()) => Ok(UploadStarted::Complete(digest.clone())),
            Err(e) => {
                self.discard(&session.id).await;
                Err(e)
            }
        }
    }

    /// The session, if it belongs to `repo` and is still alive.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadSession> {
        let s = self
            .meta
            .get_upload(id)
            .await?
            .ok_or(RegistryError::UploadUnknown)?;
        if &s.repo != repo {
            return Err(RegistryError::UploadUnknown);
        }
        let idle_ms = now_ms().saturating_sub(s.updated_at_ms);
        if idle_ms > self.limits.upload_expiry.as_millis() as i64 {
            self.discard(id).await;
            return Err(RegistryError::UploadUnknown);
        }
        Ok(s)
    }

    /// Appends a chunk (PATCH). With a `Content-Range`, it must start exactly where the
    /// session ends; without one the chunk is appended (streamed upload).
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &UploadId,
        chunk: Chunk,
    ) -> Result<UploadSession> {
        let live = self.uploads.get(id);
        let mut state = live.lock().await;
        let (_hold, session) = self.hold_session(repo, id).await?;
        let expected_len = chunk.expected_len(session.size)?;
        let added = self
            .append(&session, &mut state, chunk.body, expected_len)
            .await?;
        let new_size = session.size + added;
        if !self.meta.advance_upload(id, session.size, new_size).await? {
            // Another replica appended concurrently; our bytes were not recorded.
            state.hasher = None;
            return Err(RegistryError::ChunkOutOfOrder {
                expected: new_size,
                got: session.size,
            });
        }
        Ok(UploadSession {
            size: new_size,
            updated_at_ms: now_ms(),
            ..session
        })
    }

    async fn append(
        &self,
        session: &UploadSession,
        state: &mut HashState,
        body: ByteStream,
        expected_len: Option<u64>,
    ) -> Result<u64> {
        if session.size == 0 {
            state.upto = 0;
            state.hasher = Some(Hasher::new(wharf_oci::Algorithm::Sha256));
        } else if state.upto != session.size {
            state.hasher = None; // earlier bytes were taken elsewhere: rehash at the end
        }
        let mut writer = self
            .blobs
            .upload_writer(&session.id, session.size)
            .await
            .map_err(|e| match e {
                wharf_blobstore::StoreError::NotFound => RegistryError::UploadUnknown,
                other => other.into(),
            })?;
        let result = ingest(body, writer.as_mut(), &mut state.hasher).await;
        let added = match result {
            Ok(n) => n,
            Err(e) => {
                state.hasher = None;
                return Err(e);
            }
        };
        writer.finish().await?;
        if let Some(expected) = expected_len {
            if expected != added {
                state.hasher = None;
                return Err(RegistryError::SizeMismatch {
                    expected,
                    actual: added,
                });
            }
        }
        state.upto = session.size + added;
        Ok(added)
    }

    /// Finishes a session (PUT ?digest=), with an optional last chunk: verifies the
    /// digest, makes the blob durable, then records it.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<Chunk>,
    ) -> Result<()> {
        let live = self.uploads.get(id);
        let mut state = live.lock().await;
        // Held until the session is recorded complete and its data deleted: a chunk
        // sent at the same time through another replica waits, then finds it gone.
        let (hold, mut session) = self.hold_session(repo, id).await?;
        if let Some(chunk) = last_chunk {
            let expected_len = chunk.expected_len(session.size)?;
            let added = self
                .append(&session, &mut state, chunk.body, expected_len)
                .await?;
            if added > 0 {
                // Record the bytes so a failed verification leaves a consistent session.
                if !self
                    .meta
                    .advance_upload(id, session.size, session.size + added)
                    .await?
                {
                    return Err(RegistryError::UploadUnknown);
                }
                session.size += added;
            }
        }
        let actual = match state.hasher.take() {
            Some(h) if state.upto == session.size && h.algorithm() == digest.algorithm() => {
                h.finish()
            }
            _ => self.rehash(id, digest.algorithm()).await?,
        };
        if &actual != digest {
            // Content that failed verification can never become this blob: end the session.
            drop(state);
            self.discard(id).await;
            return Err(RegistryError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        self.blobs
            .upload_commit(id, digest)
            .await
            .map_err(|e| match e {
                wharf_blobstore::StoreError::NotFound => RegistryError::UploadUnknown,
                other => other.into(),
            })?;
        self.meta
            .complete_upload(id, repo, digest, session.size)
            .await?;
        // Garbage collection may have deleted an older, unreferenced copy of this blob
        // between our commit and our record (it deletes bytes only while holding the
        // blob's record, which our record waited for). The record now protects the
        // blob; if its bytes went, put ours back.
        if self.blobs.stat(digest).await?.is_none() {
            tracing::info!(%digest, "blob was garbage-collected during its upload; storing it again");
            self.blobs.upload_commit(id, digest).await?;
        }
        if let Err(e) = self.blobs.upload_delete(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete the upload's data; purge_uploads will");
        }
        drop(hold);
        drop(state);
        self.uploads.forget(id);
        Ok(())
    }

    /// Holds the session against every other replica (see
    /// [`wharf_metastore::MetaStore::hold_upload`]) and reads its record under the
    /// hold, where no commit or append elsewhere can be half-way.
    async fn hold_session(
        &self,
        repo: &RepoName,
        id: &UploadId,
    ) -> Result<(wharf_metastore::UploadHold, UploadSession)> {
        let hold = self.meta.hold_upload(id).await?;
        let session = self.upload_status(repo, id).await?;
        Ok((hold, session))
    }

    async fn rehash(&self, id: &UploadId, algorithm: wharf_oci::Algorithm) -> Result<Digest> {
        let mut stream = self.blobs.upload_read(id).await.map_err(|e| match e {
            wharf_blobstore::StoreError::NotFound => RegistryError::UploadUnknown,
            other => other.into(),
        })?;
        let mut hasher = Hasher::new(algorithm);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Storage(e.to_string()))?;
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        }
        Ok(hasher.finish())
    }

    /// Cancels a session (DELETE).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let live = self.uploads.get(id);
        let _state = live.lock().await;
        let (_hold, _) = self.hold_session(repo, id).await?;
        self.discard(id).await;
        Ok(())
    }

    /// Removes a session's record and data; failures are logged, not returned, since
    /// the purge job will retry them.
    async fn discard(&self, id: &UploadId) {
        if let Err(e) = self.meta.delete_upload(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload session record");
        }
        if let Err(e) = self.blobs.upload_delete(id).await {
            tracing::warn!(upload = %id, error = %e, "could not delete upload session data");
        }
        self.uploads.forget(id);
    }
}
