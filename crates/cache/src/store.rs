//! The cache's blobs on disk: bounded in size, least recently used out first, never a
//! blob being served; one fill per missing blob however many clients want it.
//!
//! Layout under the cache's directory: `blobs/sha256/<hex>` for kept blobs, `tmp/` for
//! fills in progress (emptied at start: a fill that a crash cut short is never kept).
//! Kept blobs may live in a blob store instead (an S3 bucket and prefix: the cache's
//! `blobs` setting); fills are then still spooled in `tmp/`, and a verified one is
//! uploaded before it counts as kept.
//!
//! A fill writes into a temporary file with positioned writes and publishes how far it
//! got; readers read the same file with positioned reads up to that point, so every
//! client waiting for a blob streams it while it arrives. When the fill ends, its bytes
//! are kept (renamed into place) only if they hash to the digest and have the signed
//! size; a reader's open file survives the rename or the removal.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;
use wharf_blobstore::{BlobStore, ByteRange, ByteStream};
use wharf_oci::{Digest, UploadId};

use crate::metrics::Metrics;

/// How far a fill got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillProgress {
    /// Bytes written so far.
    Writing(u64),
    /// All `size` bytes are written and verified.
    Done,
    Failed(Arc<str>),
}

/// A blob being fetched from upstream.
pub struct Fill {
    pub digest: Digest,
    pub size: u64,
    file: Arc<std::fs::File>,
    temp: PathBuf,
    /// Whether space was reserved for it (else it is served and then dropped).
    keep: bool,
    progress: watch::Sender<FillProgress>,
}

impl Fill {
    /// Appends `data` at `offset` and tells the readers.
    pub async fn write_at(&self, offset: u64, data: Bytes) -> io::Result<()> {
        let file = self.file.clone();
        let len = data.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(io::Error::other)??;
        self.progress
            .send_replace(FillProgress::Writing(offset + len));
        Ok(())
    }

    /// `len` bytes of the spooled fill from `pos`, read on the blocking pool.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let file = self.file.clone();
        let buf = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, pos).map(|_| buf)
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Bytes::from(buf))
    }

    pub fn progress(&self) -> watch::Receiver<FillProgress> {
        self.progress.subscribe()
    }

    /// Waits until the fill has its first bytes (or ended): a client is answered with a
    /// status only once the upstream answered.
    pub async fn started(&self) -> Result<(), Arc<str>> {
        let mut rx = self.progress();
        loop {
            match &*rx.borrow_and_update() {
                FillProgress::Writing(n) if *n > 0 => return Ok(()),
                FillProgress::Done => return Ok(()),
                FillProgress::Failed(e) => return Err(e.clone()),
                FillProgress::Writing(_) => {}
            }
            if rx.changed().await.is_err() {
                return Err("the fill stopped".into());
            }
        }
    }

    /// The bytes `start..end`, as they arrive.
    pub fn reader(
        self: &Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let fill = self.clone();
        let rx = self.progress();
        futures_util::stream::try_unfold((start, rx), move |(pos, mut rx)| {
            let fill = fill.clone();
            async move {
                if pos >= end {
                    return Ok(None);
                }
                // The blob's last byte waits for the verification: a client reading to
                // the end never gets a complete body that did not match its digest.
                let limit = if end == fill.size { end - 1 } else { end };
                let available = loop {
                    let p = rx.borrow_and_update().clone();
                    match p {
                        FillProgress::Writing(n) if n.min(limit) > pos => break n.min(limit),
                        FillProgress::Done => break end,
                        FillProgress::Failed(e) => {
                            return Err(io::Error::other(format!("the upstream fetch failed: {e}")))
                        }
                        FillProgress::Writing(_) => {}
                    }
                    rx.changed()
                        .await
                        .map_err(|_| io::Error::other("the fill stopped"))?;
                };
                let want = (available - pos).min(CHUNK) as usize;
                let chunk = fill.read_at(pos, want).await?;
                Ok(Some((chunk, (pos + want as u64, rx))))
            }
        })
    }
}

const CHUNK: u64 = 1024 * 1024;

struct Entry {
    size: u64,
    last_used: u64,
    /// Responses reading it now: it is not evicted while any are.
    readers: u32,
}

#[derive(Default)]
struct State {
    entries: HashMap<Digest, Entry>,
    /// Bytes of kept blobs.
    stored: u64,
    /// Bytes reserved for fills in progress that will be kept.
    reserved: u64,
    /// The LRU clock: each use takes the next tick.
    clock: u64,
    fills: HashMap<Digest, Arc<Fill>>,
}

/// What a request for a blob found.
pub enum Lookup {
    Hit(Held),
    /// Another request's fill is under way: read it.
    Join(Arc<Fill>),
    /// This request started the fill: the caller runs it (see [`BlobCache::finish`]).
    Start(Arc<Fill>),
}

/// A kept blob held for a response: not evicted until dropped.
pub struct Held {
    cache: Arc<BlobCache>,
    pub digest: Digest,
    pub size: u64,
}

impl Held {
    /// The bytes `start..end` of the kept blob.
    pub async fn read(&self, start: u64, end: u64) -> io::Result<ByteStream> {
        match &self.cache.kept {
            Kept::Dir => {
                let path = self.cache.blob_path(&self.digest);
                let file = tokio::task::spawn_blocking(move || {
                    use std::io::Seek;
                    let mut f = std::fs::File::open(path)?;
                    f.seek(std::io::SeekFrom::Start(start))?;
                    Ok::<_, io::Error>(f)
                })
                .await
                .map_err(io::Error::other)??;
                // Read ahead by one thread, as the registry serves its own blob files.
                Ok(wharf_blobstore::fs::stream_file(file, end - start))
            }
            Kept::Store { store, .. } => store
                .read(&self.digest, Some(ByteRange { start, end }))
                .await
                .map_err(io::Error::other),
        }
    }
}

/// Where kept blobs live.
enum Kept {
    /// `blobs/` under the cache's directory.
    Dir,
    /// A blob store; evicted blobs are deleted from it by tasks on `runtime`.
    Store {
        store: Arc<dyn BlobStore>,
        runtime: tokio::runtime::Handle,
    },
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut st = self.cache.lock();
        if let Some(e) = st.entries.get_mut(&self.digest) {
            e.readers = e.readers.saturating_sub(1);
        }
    }
}

pub struct BlobCache {
    dir: PathBuf,
    kept: Kept,
    max_bytes: u64,
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl BlobCache {
    /// Opens the cache at `dir`: kept blobs are found again (oldest file first out),
    /// leftovers of cut-short fills removed, and the bound enforced.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> io::Result<Arc<BlobCache>> {
        Self::empty_spool(dir)?;
        let blobs = dir.join("blobs");
        std::fs::create_dir_all(blobs.join("sha256"))?;
        let mut found = Vec::new();
        for algorithm in std::fs::read_dir(&blobs)? {
            let algorithm = algorithm?;
            let alg = algorithm.file_name().to_string_lossy().into_owned();
            for entry in std::fs::read_dir(algorithm.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(digest) = format!("{alg}:{name}").parse::<Digest>() else {
                    continue;
                };
                let meta = entry.metadata()?;
                found.push((meta.modified().ok(), digest, meta.len()));
            }
        }
        found.sort_by_key(|f| f.0);
        Ok(Self::with_found(
            dir,
            Kept::Dir,
            max_bytes,
            metrics,
            found.into_iter().map(|(_, d, size)| (d, size)),
        ))
    }

    /// Opens a cache whose kept blobs live in `store` (fills are spooled under `dir`):
    /// the blobs there are found again (in the store's listing order: it keeps no
    /// times), uploads a crash cut short are removed, and the bound enforced.
    pub async fn open_with_store(
        dir: &Path,
        store: Arc<dyn BlobStore>,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> io::Result<Arc<BlobCache>> {
        Self::empty_spool(dir)?;
        for id in store.upload_list().await.map_err(io::Error::other)? {
            store.upload_delete(&id).await.map_err(io::Error::other)?;
        }
        let mut found = Vec::new();
        for digest in store.list().await.map_err(io::Error::other)? {
            if let Some(size) = store.stat(&digest).await.map_err(io::Error::other)? {
                found.push((digest, size));
            }
        }
        let kept = Kept::Store {
            store,
            runtime: tokio::runtime::Handle::current(),
        };
        Ok(Self::with_found(dir, kept, max_bytes, metrics, found))
    }

    /// `tmp/`, emptied: a fill that a crash cut short is never kept.
    fn empty_spool(dir: &Path) -> io::Result<()> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)
    }

    /// The cache over the blobs `found` (oldest first), trimmed to the bound.
    fn with_found(
        dir: &Path,
        kept: Kept,
        max_bytes: u64,
        metrics: Arc<Metrics>,
        found: impl IntoIterator<Item = (Digest, u64)>,
    ) -> Arc<BlobCache> {
        let mut st = State::default();
        for (digest, size) in found {
            st.clock += 1;
            st.stored += size;
            st.entries.insert(
                digest,
                Entry {
                    size,
                    last_used: st.clock,
                    readers: 0,
                },
            );
        }
        let cache = Arc::new(BlobCache {
            dir: dir.to_path_buf(),
            kept,
            max_bytes,
            metrics,
            state: Mutex::new(st),
        });
        let evicted = {
            let mut st = cache.lock();
            cache.evict_for(&mut st, 0)
        };
        cache.remove_kept(evicted);
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let text = digest.to_string();
        let (algorithm, hex) = text.split_once(':').expect("a digest has an algorithm");
        self.dir.join("blobs").join(algorithm).join(hex)
    }

    /// Kept bytes, the bound, and how many blobs.
    pub fn usage(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.stored, self.max_bytes, st.entries.len() as u64)
    }

    /// Whether `digest` is kept (for tests and HEAD requests).
    pub fn holds(&self, digest: &Digest) -> bool {
        self.lock().entries.contains_key(digest)
    }

    /// A kept blob, without counting a hit or a miss (HEAD requests).
    pub fn size_of(&self, digest: &Digest) -> Option<u64> {
        self.lock().entries.get(digest).map(|e| e.size)
    }

    /// Finds `digest`, or joins or starts its fill (`size` is the signed size).
    pub fn lookup(self: &Arc<Self>, digest: &Digest, size: u64) -> io::Result<Lookup> {
        let evicted;
        let found = {
            let mut st = self.lock();
            st.clock += 1;
            let tick = st.clock;
            if let Some(e) = st.entries.get_mut(digest) {
                e.last_used = tick;
                e.readers += 1;
                let size = e.size;
                Metrics::add(&self.metrics.hits, 1);
                return Ok(Lookup::Hit(Held {
                    cache: self.clone(),
                    digest: digest.clone(),
                    size,
                }));
            }
            if let Some(f) = st.fills.get(digest) {
                // A fill whose bytes are all in and verified (only being synced and
                // recorded) serves this request without the upstream: a hit.
                let done = matches!(*f.progress.borrow(), FillProgress::Done);
                Metrics::add(
                    if done {
                        &self.metrics.hits
                    } else {
                        &self.metrics.misses
                    },
                    1,
                );
                return Ok(Lookup::Join(f.clone()));
            }
            Metrics::add(&self.metrics.misses, 1);
            evicted = self.evict_for(&mut st, size);
            let keep = st.stored + st.reserved + size <= self.max_bytes;
            if keep {
                st.reserved += size;
            }
            let temp = self
                .dir
                .join("tmp")
                .join(uuid::Uuid::new_v4().simple().to_string());
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp);
            match file {
                Ok(file) => {
                    let (progress, _) = watch::channel(FillProgress::Writing(0));
                    let fill = Arc::new(Fill {
                        digest: digest.clone(),
                        size,
                        file: Arc::new(file),
                        temp,
                        keep,
                        progress,
                    });
                    st.fills.insert(digest.clone(), fill.clone());
                    Metrics::add(&self.metrics.fills, 1);
                    Ok(Lookup::Start(fill))
                }
                Err(e) => {
                    if keep {
                        st.reserved -= size;
                    }
                    Err(e)
                }
            }
        };
        self.remove_kept(evicted);
        found
    }

    /// Evicts least recently used blobs no one reads until `extra` more bytes fit;
    /// returns the blobs to remove (outside the lock).
    fn evict_for(&self, st: &mut State, extra: u64) -> Vec<Digest> {
        let mut out = Vec::new();
        while st.stored + st.reserved + extra > self.max_bytes {
            let victim = st
                .entries
                .iter()
                .filter(|(_, e)| e.readers == 0)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| d.clone());
            let Some(d) = victim else { break };
            let e = st.entries.remove(&d).expect("just found");
            st.stored -= e.size;
            Metrics::add(&self.metrics.evictions, 1);
            out.push(d);
        }
        out
    }

    /// Removes evicted blobs: files at once, objects in a store by a task (the bound
    /// counts them gone already; a failed delete leaves an object the next start finds).
    fn remove_kept(&self, digests: Vec<Digest>) {
        if digests.is_empty() {
            return;
        }
        match &self.kept {
            Kept::Dir => {
                for d in digests {
                    let p = self.blob_path(&d);
                    if let Err(e) = std::fs::remove_file(&p) {
                        if e.kind() != io::ErrorKind::NotFound {
                            tracing::warn!(path = %p.display(), error = %e, "could not remove an evicted blob");
                        }
                    }
                }
            }
            Kept::Store { store, runtime } => {
                let store = store.clone();
                let metrics = self.metrics.clone();
                Metrics::add(&metrics.deletes_pending, digests.len() as u64);
                runtime.spawn(async move {
                    for d in digests {
                        if let Err(e) = store.delete(&d).await {
                            tracing::warn!(digest = %d, error = %e, "could not delete an evicted blob from the store");
                        }
                        metrics
                            .deletes_pending
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        }
    }

    /// Ends a fill: `Ok` when all its bytes were written and verified (then it is kept
    /// if space was reserved), `Err` otherwise (nothing is kept). Readers are told.
    pub async fn finish(&self, fill: &Arc<Fill>, outcome: Result<(), String>) {
        // Readers hear first: a verified blob's last byte goes out while it is made
        // durable and kept, not after.
        let verified = outcome.is_ok();
        fill.progress.send_replace(match outcome {
            Ok(()) => FillProgress::Done,
            Err(e) => FillProgress::Failed(e.into()),
        });
        let kept = verified
            && fill.keep
            && {
                let result = match &self.kept {
                    Kept::Dir => {
                        let (file, temp) = (fill.file.clone(), fill.temp.clone());
                        let path = self.blob_path(&fill.digest);
                        tokio::task::spawn_blocking(move || {
                            file.sync_data()?;
                            std::fs::create_dir_all(path.parent().expect("under blobs/"))?;
                            std::fs::rename(temp, &path)
                        })
                        .await
                        .map_err(io::Error::other)
                        .and_then(|r| r)
                    }
                    Kept::Store { store, .. } => upload(store.as_ref(), fill).await,
                };
                result
                .map_err(|e| tracing::warn!(digest = %fill.digest, error = %e, "a verified blob could not be kept"))
                .is_ok()
            };
        {
            let mut st = self.lock();
            st.fills.remove(&fill.digest);
            if fill.keep {
                st.reserved -= fill.size;
            }
            if kept {
                st.clock += 1;
                let tick = st.clock;
                st.stored += fill.size;
                st.entries.insert(
                    fill.digest.clone(),
                    Entry {
                        size: fill.size,
                        last_used: tick,
                        readers: 0,
                    },
                );
            }
        }
        if !kept || !matches!(self.kept, Kept::Dir) {
            let _ = std::fs::remove_file(&fill.temp);
        }
    }
}

/// Copies a verified fill from its spool file into `store` as the blob itself.
async fn upload(store: &dyn BlobStore, fill: &Fill) -> io::Result<()> {
    let id = UploadId::new_unchecked(uuid::Uuid::new_v4().to_string());
    let result = async {
        let mut writer = store
            .upload_writer(&id, 0)
            .await
            .map_err(io::Error::other)?;
        let mut pos = 0;
        while pos < fill.size {
            let want = (fill.size - pos).min(UPLOAD_CHUNK) as usize;
            let chunk = fill.read_at(pos, want).await?;
            writer.write(chunk).await.map_err(io::Error::other)?;
            pos += want as u64;
        }
        writer.finish().await.map_err(io::Error::other)?;
        store
            .upload_commit(&id, &fill.digest)
            .await
            .map_err(io::Error::other)
    }
    .await;
    if let Err(e) = store.upload_delete(&id).await {
        tracing::warn!(error = %e, "could not remove an upload to the store");
    }
    result
}

/// The pieces a verified fill is uploaded to a store in (S3 parts need 5 MiB at least).
const UPLOAD_CHUNK: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn digest_of(data: &[u8]) -> Digest {
        Digest::sha256_of(data)
    }

    async fn fill(cache: &Arc<BlobCache>, data: &[u8], outcome: Result<(), String>) {
        let d = digest_of(data);
        let Lookup::Start(f) = cache.lookup(&d, data.len() as u64).unwrap() else {
            panic!("expected a new fill");
        };
        f.write_at(0, Bytes::copy_from_slice(data)).await.unwrap();
        cache.finish(&f, outcome).await;
    }

    fn open(dir: &Path, max: u64) -> Arc<BlobCache> {
        BlobCache::open(dir, max, Arc::new(Metrics::default())).unwrap()
    }

    #[tokio::test]
    async fn least_recently_used_goes_first_but_never_one_being_read() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 30);
        let (a, b, c) = (vec![1u8; 10], vec![2u8; 10], vec![3u8; 10]);
        fill(&cache, &a, Ok(())).await;
        fill(&cache, &b, Ok(())).await;
        fill(&cache, &c, Ok(())).await;
        // a is the oldest, but a response holds it: b goes instead.
        let Lookup::Hit(held) = cache.lookup(&digest_of(&a), 10).unwrap() else {
            panic!("a is kept")
        };
        fill(&cache, &[4u8; 10], Ok(())).await;
        assert!(cache.holds(&digest_of(&a)) && !cache.holds(&digest_of(&b)));
        drop(held);
        // Now a was used after c: c is the least recently used.
        fill(&cache, &[5u8; 10], Ok(())).await;
        assert!(cache.holds(&digest_of(&a)) && !cache.holds(&digest_of(&c)));
        assert_eq!(cache.usage().0, 30);
        // Reopened, it finds the same blobs again.
        drop(cache);
        let again = open(tmp.path(), 30);
        assert_eq!(again.usage(), (30, 30, 3));
    }

    #[tokio::test]
    async fn a_failed_fill_keeps_nothing_and_tells_its_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 1000);
        let data = vec![9u8; 100];
        let d = digest_of(&data);
        let Lookup::Start(f) = cache.lookup(&d, 100).unwrap() else {
            panic!()
        };
        let Lookup::Join(joined) = cache.lookup(&d, 100).unwrap() else {
            panic!("a second request joins the fill")
        };
        let reader = joined.reader(0, 100);
        f.write_at(0, Bytes::copy_from_slice(&data)).await.unwrap();
        cache
            .finish(&f, Err("bytes hash to something else".into()))
            .await;
        let read: Vec<_> = reader.collect::<Vec<_>>().await;
        assert!(read.iter().any(|r| r.is_err()), "the reader is told");
        let whole: usize = read
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| b.len())
            .sum();
        assert!(whole < 100, "the last byte waits for the verification");
        assert_eq!(cache.usage(), (0, 1000, 0));
        assert_eq!(
            std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn a_blob_larger_than_the_bound_is_served_but_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = open(tmp.path(), 10);
        let data = vec![7u8; 50];
        let d = digest_of(&data);
        let Lookup::Start(f) = cache.lookup(&d, 50).unwrap() else {
            panic!()
        };
        let reader = f.reader(0, 50);
        f.write_at(0, Bytes::copy_from_slice(&data)).await.unwrap();
        cache.finish(&f, Ok(())).await;
        let got: Vec<u8> = reader
            .map(|r| r.unwrap().to_vec())
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(got, data);
        assert_eq!(cache.usage(), (0, 10, 0));
    }
}
