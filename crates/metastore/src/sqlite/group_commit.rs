//! Group commit for SQLite: concurrent durable writes share one flush of the WAL.
//!
//! With `synchronous=FULL` every commit fsyncs the WAL while it holds the write lock,
//! so eight clients pushing at once wait for eight fsyncs in a row, and nobody can
//! even append meanwhile. Here the writer commits with `synchronous=NORMAL` (the
//! commit's frames are written to the WAL, not flushed) and numbers the commit; a
//! durable write then waits until a flush has covered its number. The first waiter
//! runs the flush, an `fdatasync` of the WAL file outside the write lock; writers that
//! commit while it runs are covered by the next one, which one of them runs. One
//! fsync serves every commit made before it started.
//!
//! Why flushing the WAL file ourselves is as durable as `synchronous=FULL`: a commit
//! is complete in the WAL once its frames are written (SQLite pads nothing extra in
//! FULL mode on Linux, where it assumes power-safe overwrite), recovery replays the
//! WAL up to its last valid commit frame, and `fdatasync` on any descriptor of the
//! file persists every frame written so far. A checkpoint in between syncs the WAL
//! before it copies frames into the database and the database after, so a commit it
//! moved is durable there. The WAL file is never deleted while this store holds its
//! connections open.
//!
//! A commit is visible to readers before it is flushed. Acknowledgements come only
//! after the flush, and anything that acts outside the store on what it read
//! (garbage collection deleting bytes) calls [`WalFlusher::flush_all`] first.

use std::fs::File;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::{MetaError, Result};

pub(crate) struct WalFlusher {
    /// The WAL file, opened read-only: enough for fdatasync.
    wal: File,
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Default)]
struct State {
    /// Commits numbered so far (by [`WalFlusher::record_commit`]).
    committed: u64,
    /// Every commit up to this number is on disk.
    synced: u64,
    /// A flush is running.
    flushing: bool,
    /// Flushes run so far.
    flushes: u64,
    /// A flush failed: after a failed fsync the kernel may have dropped the dirty
    /// pages, so a later fsync that "succeeds" proves nothing. Durable writes are
    /// refused from then on; a restart recovers from the WAL on disk.
    failed: Option<String>,
}

impl WalFlusher {
    /// Opens the WAL of the database at `db`, which must be in WAL mode with a WAL
    /// file present (any committed write creates it).
    pub(crate) fn open(db: &Path) -> Result<Self> {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        let wal = File::open(&name).map_err(|e| {
            MetaError::Backend(format!("cannot open {}: {e}", Path::new(&name).display()))
        })?;
        Ok(WalFlusher {
            wal,
            state: Mutex::new(State::default()),
            flushed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers a commit just made. Call it while still holding the write lock, so
    /// that numbers follow the order of the commits in the WAL.
    pub(crate) fn record_commit(&self) -> u64 {
        let mut st = self.lock();
        st.committed += 1;
        st.committed
    }

    /// The number of the latest commit.
    pub(crate) fn committed(&self) -> u64 {
        self.lock().committed
    }

    /// Returns once commit `n` (and so every commit before it) is on disk.
    pub(crate) fn flush_through(&self, n: u64) -> Result<()> {
        let mut st = self.lock();
        loop {
            if let Some(e) = &st.failed {
                return Err(MetaError::Backend(format!(
                    "the metadata store's log could not be written to disk ({e}); \
                     restart wharf once the disk is healthy"
                )));
            }
            if st.synced >= n {
                return Ok(());
            }
            if st.flushing {
                st = self.flushed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead a flush covering everything committed so far.
            st.flushing = true;
            let target = st.committed;
            drop(st);
            let result = self.wal.sync_data();
            st = self.lock();
            st.flushing = false;
            st.flushes += 1;
            match result {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    tracing::error!(error = %e, "fdatasync of the SQLite WAL failed");
                    st.failed = Some(e.to_string());
                }
            }
            self.flushed.notify_all();
        }
    }

    /// Returns once every commit made so far is on disk.
    pub(crate) fn flush_all(&self) -> Result<()> {
        self.flush_through(self.committed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn flusher() -> (tempfile::TempDir, WalFlusher) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        std::fs::write(dir.path().join("metadata.db-wal"), b"frames").unwrap();
        let f = WalFlusher::open(&db).unwrap();
        (dir, f)
    }

    #[test]
    fn one_flush_serves_every_commit_made_before_it() {
        let (_dir, wal) = flusher();
        let wal = Arc::new(wal);
        // Eight writers have committed; each now waits for durability at once.
        let numbers: Vec<u64> = (0..8).map(|_| wal.record_commit()).collect();
        let barrier = Arc::new(std::sync::Barrier::new(numbers.len()));
        let waiters: Vec<_> = numbers
            .into_iter()
            .map(|n| {
                let (wal, barrier) = (wal.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    wal.flush_through(n)
                })
            })
            .collect();
        for w in waiters {
            w.join().unwrap().unwrap();
        }
        let st = wal.lock();
        assert_eq!((st.synced, st.flushes), (8, 1));
    }

    #[test]
    fn a_commit_after_a_flush_needs_another() {
        let (_dir, wal) = flusher();
        let first = wal.record_commit();
        wal.flush_through(first).unwrap();
        wal.flush_through(first).unwrap(); // already durable: no second flush
        assert_eq!(wal.lock().flushes, 1);
        let second = wal.record_commit();
        wal.flush_all().unwrap();
        let st = wal.lock();
        assert_eq!((second, st.synced, st.flushes), (2, 2, 2));
    }

    #[test]
    fn nothing_new_to_flush_costs_no_fsync() {
        let (_dir, wal) = flusher();
        wal.flush_all().unwrap(); // nothing committed yet
        let n = wal.record_commit();
        wal.flush_through(n).unwrap();
        wal.flush_through(wal.committed()).unwrap(); // what a no-change write waits for
        assert_eq!(wal.lock().flushes, 1);
    }

    #[test]
    fn a_missing_wal_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = WalFlusher::open(&dir.path().join("metadata.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("metadata.db-wal"), "{err}");
    }
}
