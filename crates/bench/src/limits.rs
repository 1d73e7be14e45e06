//! What this machine can do at all, measured in the same repeats as the pushes, so a
//! push figure can be read as a fraction of it: a sequential write + fsync of the same
//! number of bytes in the directory the servers write to, and SHA-256 and SHA-512 of the
//! same bytes on one core (the implementation wharf uses).
//!
//! And the flush between timed operations: a server that acknowledges a push before its
//! bytes are on disk leaves them dirty in the page cache, and the kernel writes them
//! back during whatever is timed next. `flush` writes them back, untimed for the push,
//! but its duration is that server's deferred cost and is reported with its push.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use wharf_oci::{Algorithm, Hasher};

/// One repeat's limits, in MB/s.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub write_fsync: f64,
    pub sha256: f64,
    pub sha512: f64,
}

impl Limits {
    /// The most a durable, verified push of these bytes could reach: it has to be
    /// written to disk and hashed.
    pub fn durable_push(&self) -> f64 {
        self.write_fsync.min(self.sha256)
    }
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

/// Measures the limits for `data` in `dir` (blocking: call from a blocking thread).
pub fn measure(dir: &Path, data: &[u8]) -> Result<Limits> {
    let path = dir.join(format!("wharf-bench-limit-{}", std::process::id()));
    let started = Instant::now();
    let written = (|| {
        let mut f = File::create(&path)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    let write_secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    written.with_context(|| format!("write+fsync of {} bytes in {}", data.len(), dir.display()))?;
    flush(dir);
    let hash = |algorithm| {
        let started = Instant::now();
        let mut h = Hasher::new(algorithm);
        h.update(data);
        std::hint::black_box(h.finish());
        mb_per_s(data.len(), started.elapsed().as_secs_f64())
    };
    Ok(Limits {
        write_fsync: mb_per_s(data.len(), write_secs),
        sha256: hash(Algorithm::Sha256),
        sha512: hash(Algorithm::Sha512),
    })
}

/// Writes back every dirty page of the file system holding `dir` (`syncfs`) and returns
/// how long that took, in seconds.
pub fn flush(dir: &Path) -> f64 {
    use std::os::fd::AsRawFd;
    let started = Instant::now();
    if let Ok(d) = File::open(dir) {
        // SAFETY: a plain syscall on a descriptor that `d` keeps open for the call.
        unsafe {
            libc::syncfs(d.as_raw_fd());
        }
    }
    started.elapsed().as_secs_f64()
}
