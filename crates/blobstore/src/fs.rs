//! Blobs as files in a directory: `blobs/<alg>/<2 hex>/<hex>` and `uploads/<id>`.
//!
//! Crash safety comes from the filesystem's atomic link: an upload is written under
//! `uploads/`, fsynced, then hard-linked into `blobs/` and the directory fsynced. A blob
//! path therefore only ever holds complete, durable content. The upload's own name stays
//! until the registry deletes it, so a commit can be repeated.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::spawn_blocking;
use wharf_oci::{Digest, UploadId};

use crate::{BlobStore, ByteRange, ByteStream, Result, StoreError, UploadWriter};

/// Read size for streaming blobs out: large enough that per-chunk costs vanish,
/// small enough that many concurrent pulls stay cheap in memory.
const READ_CHUNK: usize = 512 * 1024;

#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("uploads"))?;
        // The 256 sha256 prefix directories up front: otherwise the first blob under
        // each costs a mkdir and two directory fsyncs during a push.
        let sha256 = root.join("blobs").join("sha256");
        if !sha256.join("ff").is_dir() {
            for prefix in 0..=255u8 {
                fs::create_dir_all(sha256.join(format!("{prefix:02x}")))?;
            }
            sync_dir(&sha256)?;
            sync_dir(&root.join("blobs"))?;
        }
        Ok(FsBlobStore { root })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match spawn_blocking(f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(e) => Err(StoreError::Io(io::Error::other(e))),
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Streams `len` bytes of `file` from its current position, reading on a blocking
/// thread one chunk ahead of the consumer.
/// Streams `len` bytes of `file` from its current position: one blocking thread reads
/// ahead in large chunks while the consumer sends (the content cache serves its hits
/// this way too).
pub fn stream_file(mut file: File, mut len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
    spawn_blocking(move || {
        while len > 0 {
            let n = len.min(READ_CHUNK as u64) as usize;
            let mut buf = BytesMut::zeroed(n);
            let res = file.read_exact(&mut buf).map(|_| buf.freeze());
            let failed = res.is_err();
            if tx.blocking_send(res).is_err() || failed {
                return; // the client went away, or the read failed and was reported
            }
            len -= n as u64;
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        blocking(move || Ok(not_found_as_none(fs::metadata(path))?.map(|m| m.len()))).await
    }

    async fn read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let opened = blocking(move || {
            let Some(mut file) = not_found_as_none(File::open(path))? else {
                return Ok(None);
            };
            let size = file.metadata()?.len();
            let (start, end) = match range {
                None => (0, size),
                Some(r) => (r.start, r.end),
            };
            if start > end || end > size {
                return Ok(Some(Err((start, end, size))));
            }
            file.seek(SeekFrom::Start(start))?;
            Ok(Some(Ok((file, end - start))))
        })
        .await?;
        match opened {
            None => Err(StoreError::NotFound),
            Some(Err((start, end, size))) => Err(StoreError::InvalidRange { start, end, size }),
            Some(Ok((file, len))) => Ok(stream_file(file, len)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        blocking(move || Ok(not_found_as_none(fs::remove_file(path))?.is_some())).await
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in not_found_as_none(fs::read_dir(&root))?
                .into_iter()
                .flatten()
            {
                let alg = alg?;
                for prefix in fs::read_dir(alg.path())? {
                    for blob in fs::read_dir(prefix?.path())? {
                        let blob = blob?;
                        let name = format!(
                            "{}:{}",
                            alg.file_name().to_string_lossy(),
                            blob.file_name().to_string_lossy()
                        );
                        // Anything that is not a digest is not ours; leave it alone.
                        if let Ok(d) = name.parse() {
                            out.push(d);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn upload_writer(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        let path = self.upload_path(id);
        let file = blocking(move || {
            let mut file = OpenOptions::new()
                .write(true)
                .create(offset == 0)
                .truncate(false)
                .open(&path);
            if offset != 0 {
                file = file.map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        io::Error::new(io::ErrorKind::NotFound, "upload has no data")
                    } else {
                        e
                    }
                });
            }
            let mut file = not_found_as_none(file)?;
            if let Some(f) = file.as_mut() {
                if f.metadata()?.len() < offset {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upload data is shorter than its recorded offset",
                    ));
                }
                f.set_len(offset)?;
                f.seek(SeekFrom::Start(offset))?;
            }
            Ok(file)
        })
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Box::new(FsUploadWriter {
            file: Some(file),
            size: offset,
            written_back: offset,
        }))
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let path = self.upload_path(id);
        let opened = blocking(move || {
            let Some(file) = not_found_as_none(File::open(path))? else {
                return Ok(None);
            };
            let len = file.metadata()?.len();
            Ok(Some((file, len)))
        })
        .await?;
        let (file, len) = opened.ok_or(StoreError::NotFound)?;
        Ok(stream_file(file, len))
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        let blobs_root = self.root.join("blobs");
        blocking(move || {
            let file = not_found_as_none(File::open(&from))?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "upload has no data"))?;
            file.sync_all()?;
            drop(file);
            let dir = to.parent().expect("blob paths have a parent");
            if !dir.exists() {
                fs::create_dir_all(dir)?;
                // Make the new directories themselves durable, up to the blobs root.
                let mut d = dir;
                while d != blobs_root {
                    let parent = d.parent().expect("inside the blobs root");
                    sync_dir(parent)?;
                    d = parent;
                }
            }
            // A hard link, not a rename: the upload keeps its data until the caller
            // deletes it, so the commit can be repeated if garbage collection removed
            // the blob in between. If the blob is there already (same digest, same
            // verified bytes), the stored copy stays: readers may be streaming it.
            match fs::hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // Also when it existed: its own commit may not have made the entry durable.
            sync_dir(dir)?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Io(io) if io.kind() == io::ErrorKind::NotFound => StoreError::NotFound,
            other => other,
        })
    }

    async fn upload_delete(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        blocking(move || not_found_as_none(fs::remove_file(path)).map(|_| ())).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadId>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for e in fs::read_dir(dir)? {
                if let Ok(id) = e?.file_name().to_string_lossy().parse() {
                    out.push(id);
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }
}

/// Written data is handed to the disk in steps of this size while the upload goes on.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Asks the kernel to start writing `[offset, offset + len)` to disk now, without
/// waiting for it. The fsync at commit then finds little left to write, so a large
/// upload's durability costs little beyond receiving it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own; failing only loses the hint.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

struct FsUploadWriter {
    /// Moved to a blocking thread for each write and back.
    file: Option<File>,
    size: u64,
    /// Data before this offset has been handed to the disk.
    written_back: u64,
}

#[async_trait]
impl UploadWriter for FsUploadWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let mut file = self.file.take().expect("writer used after a failed write");
        let len = chunk.len() as u64;
        let end = self.size + len;
        let from = self.written_back;
        let step = end - from >= WRITEBACK_STEP;
        let file = blocking(move || {
            file.write_all(&chunk)?;
            if step {
                start_writeback(&file, from, end - from);
            }
            Ok(file)
        })
        .await?;
        if step {
            self.written_back = end;
        }
        self.file = Some(file);
        self.size = end;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        // Durability is paid once, at commit; a crash before that loses only an
        // unfinished upload, which the client restarts. But the tail written since the
        // last step goes to the disk now: a chunked push's next PATCH starts a new
        // writer, and without this hint half of every 16 MiB chunk stayed dirty until
        // the final fsync.
        let (from, size) = (self.written_back, self.size);
        if size > from {
            let file = self.file.take().expect("writer used after a failed write");
            blocking(move || {
                start_writeback(&file, from, size - from);
                Ok(())
            })
            .await?;
        }
        Ok(size)
    }
}
