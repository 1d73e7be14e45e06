//! Reading image layers safely (design: docs/design/scanning-research.md §1).
//!
//! A layer is a tar stream, gzip- or zstd-compressed or not, and it comes from whoever
//! pushed the image: every size in it is hostile. So:
//! - the decompressor is picked by magic bytes (media types are often wrong);
//! - every decompressed byte and every entry counts against one [`Budget`] per image, so a
//!   decompression bomb fails whether its content is read or skipped;
//! - tar is read in raw mode and GNU long names and PAX headers are handled here with a size
//!   cap ([`Limits::ext_header`]): the tar crate's normal iterator reads them into memory
//!   unbounded;
//! - only the files a [`Selector`] wants are kept, each under its own cap;
//! - paths are cleaned, `..` entries are refused, and symbolic links are resolved inside the
//!   image's own file map. Nothing is ever written to, or looked up on, the host.
//!
//! Each layer gives a [`LayerDelta`] on its own, so layers can be read in parallel; the deltas
//! are then applied in order to an [`ImageFiles`].

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufReader, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::Package;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// The largest zstd window a frame may ask for (zstd's own default decoder limit,
/// window_log 27): a frame may otherwise ask for 2 GiB of window.
const ZSTD_MAX_WINDOW: u64 = 128 * MIB;

/// The size passed to [`Selector::want`] for a hard link: its header says 0, but its
/// content is its target's, of unknown size here.
pub const HARD_LINK_SIZE: u64 = u64::MAX;

/// How many symbolic links one lookup follows before giving up (Linux's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// What one image may cost to scan. Each limit fails the scan, or skips a file with a note,
/// rather than letting a hostile layer take the memory or the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes of all layers of the image together.
    pub total_bytes: u64,
    /// Tar entries of all layers of the image together.
    pub entries: u64,
    /// Largest file kept in memory as bytes (a big `rpmdb.sqlite` is tens of MB).
    pub captured_file: u64,
    /// Largest executable or archive buffered for analysis.
    pub binary: u64,
    /// Largest GNU long-name/long-link or PAX extension header.
    pub ext_header: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total_bytes: 16 * GIB,
            entries: 2_000_000,
            captured_file: 64 * MIB,
            binary: 256 * MIB,
            ext_header: 64 * KIB,
        }
    }
}

/// Why an image could not be scanned. Each limit has its own variant so that the job can
/// say which one was hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("the image's layers decompress to more than {} (limit total_bytes): refusing, possibly a decompression bomb", human_bytes(*.0))]
    TooManyBytes(u64),
    #[error(
        "the image's layers hold more than {0} files and directories (limit entries): refusing"
    )]
    TooManyEntries(u64),
    #[error("a layer has a tar long-name or PAX header of {} (limit ext_header): refusing, possibly an attempt to exhaust memory", human_bytes(*.0))]
    ExtHeaderTooLarge(u64),
    #[error("a layer is not a valid gzip, zstd or tar stream: {0}")]
    Corrupt(String),
    #[error("reading a layer failed: {0}")]
    Io(String),
}

/// `17179869184` → `16 GiB`, for messages an operator reads.
fn human_bytes(n: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// Decompressed bytes and entries used so far by one image, shared by the threads that read
/// its layers, so that the limits hold for the image and not per layer.
#[derive(Debug, Default)]
pub struct Budget {
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl Budget {
    pub fn new() -> Budget {
        Budget::default()
    }

    /// Decompressed bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Tar entries counted so far.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes; false once the total is over `limit`.
    fn spend_bytes(&self, n: u64, limit: u64) -> bool {
        self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n) <= limit
    }

    fn spend_entry(&self, limit: u64) -> bool {
        self.entries.fetch_add(1, Ordering::Relaxed) < limit
    }
}

/// What the layer reader does with a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Not needed: the content is skipped (but still decompressed and counted).
    Skip,
    /// Keep the bytes (up to [`Limits::captured_file`]).
    Keep,
    /// Buffer the file (up to [`Limits::binary`]), call [`Selector::analyse`] and keep only
    /// the packages it finds: binaries are too big to keep.
    Binary,
}

/// Decides which files a scan needs, and turns buffered binaries into packages. It is
/// shared by the threads that read layers in parallel.
pub trait Selector: Sync {
    /// `path` is cleaned (no leading `/`), `mode` the tar permission bits, `size` the
    /// size the header claims ([`HARD_LINK_SIZE`] for a hard link).
    fn want(&self, path: &str, mode: u32, size: u64) -> Want;
    /// The packages in a file that [`Selector::want`] called [`Want::Binary`].
    fn analyse(&self, path: &str, bytes: &[u8]) -> Vec<Package>;
}

/// One path of the image as the scanner keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A kept file's bytes.
    File(Arc<[u8]>),
    /// What [`Selector::analyse`] found in a binary (possibly nothing).
    Packages(Arc<[Package]>),
    /// A symbolic link's target, as written (relative to the link's directory, or absolute
    /// meaning the image's root).
    Symlink(String),
    /// A hard link whose target (a cleaned image path) was not kept.
    Hardlink(String),
}

/// What one layer changes, computed without looking at any other layer.
#[derive(Debug, Default)]
pub struct LayerDelta {
    /// Paths (and everything under them) deleted by `.wh.<name>` entries.
    pub whiteouts: Vec<String>,
    /// Directories whose lower-layer content is hidden (`.wh..wh..opq`).
    pub opaque_dirs: Vec<String>,
    /// Paths this layer replaces with something not kept (a directory, an unwanted file,
    /// a file over a cap): a lower layer's node there (say a symbolic link) is stale.
    /// Bounded by [`Limits::entries`].
    pub shadowed: Vec<String>,
    /// The kept files, binaries' packages and links of this layer.
    pub nodes: BTreeMap<String, Node>,
    /// What was skipped and why.
    pub notes: Vec<String>,
    /// Tar entries read (extension headers included).
    pub entries: u64,
}

/// `./a/b`, `/a/b`, `a//b/` → `a/b`. `None` when a component is `..`: such an entry is
/// refused rather than resolved against anything.
pub fn clean_path(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Whether `path` is `dir` or inside it (`dir` empty means the root).
fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Remembers whether the layer's own source failed, so that an I/O error (network, blob
/// store) is not reported as a corrupt layer.
struct SourceTap<R> {
    inner: R,
    failure: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for SourceTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                *self.failure.borrow_mut() = Some(e.to_string());
            }
        })
    }
}

/// Counts decompressed bytes against the image's [`Budget`].
struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("decompressed-bytes budget exceeded"));
        }
        let n = self.inner.read(buf)?;
        if !self.budget.spend_bytes(n as u64, self.limit) {
            self.exceeded = true;
            return Err(io::Error::other("decompressed-bytes budget exceeded"));
        }
        Ok(n)
    }
}

/// ruzstd decodes one frame per decoder; zstd:chunked layers are many frames with skippable
/// frames between them, so go on frame after frame until the input ends.
struct MultiFrameZstd<R: Read> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: Read> MultiFrameZstd<R> {
    fn new(source: R) -> Self {
        let mut decoder = ruzstd::decoding::FrameDecoder::new();
        decoder.set_max_window_size(ZSTD_MAX_WINDOW);
        MultiFrameZstd {
            source,
            decoder,
            in_frame: false,
        }
    }
}

impl<R: Read> Read for MultiFrameZstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError as F, ReadFrameHeaderError as H};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                match self.decoder.init(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(F::ReadFrameHeaderError(H::SkipFrame { length, .. })) => {
                        let skipped = io::copy(
                            &mut (&mut self.source).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        if skipped < u64::from(length) {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "zstd: truncated skippable frame",
                            ));
                        }
                        continue;
                    }
                    Err(F::ReadFrameHeaderError(H::MagicNumberReadError(e)))
                        if e.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(0);
                    }
                    Err(e) => return Err(io::Error::other(format!("zstd: {e}"))),
                }
            }
            while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
                    )
                    .map_err(|e| io::Error::other(format!("zstd: {e}")))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// Picks the decompressor by the stream's first bytes: gzip `1f 8b`, zstd `28 b5 2f fd`,
/// anything else is read as plain tar.
fn decompressed<'a, R: Read + 'a>(mut source: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match source.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = io::Cursor::new(magic[..got].to_vec()).chain(source);
    let buffered = BufReader::with_capacity(64 * 1024, whole);
    Ok(if magic[..got].starts_with(&[0x1f, 0x8b]) {
        // Multi-member: estargz layers are many gzip members end to end.
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic[..got] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(MultiFrameZstd::new(buffered))
    } else {
        Box::new(buffered)
    })
}

/// Reads one layer (gzip, zstd or plain tar) into its delta, keeping what `selector` wants.
/// Layers are independent: call this on several threads with the same `budget`.
pub fn read_layer<R: Read>(
    r: R,
    limits: &Limits,
    budget: &Budget,
    selector: &dyn Selector,
) -> Result<LayerDelta, ScanError> {
    let source_failure = Rc::new(RefCell::new(None));
    let tapped = SourceTap {
        inner: r,
        failure: Rc::clone(&source_failure),
    };
    // Tells apart the three reasons a read can fail: the budget, the source, the content.
    let classify = |e: io::Error, exceeded: bool| -> ScanError {
        if exceeded || budget.bytes() > limits.total_bytes {
            ScanError::TooManyBytes(limits.total_bytes)
        } else if let Some(failure) = source_failure.borrow().clone() {
            ScanError::Io(failure)
        } else {
            ScanError::Corrupt(e.to_string())
        }
    };
    let stream = decompressed(tapped).map_err(|e| classify(e, false))?;
    let metered = Metered {
        inner: stream,
        budget,
        limit: limits.total_bytes,
        exceeded: false,
    };
    let mut archive = tar::Archive::new(metered);
    let result = read_entries(&mut archive, limits, budget, selector);
    let exceeded = archive.into_inner().exceeded;
    result.map_err(|e| match e {
        EntryError::Scan(e) => e,
        EntryError::Io(e) => classify(e, exceeded),
    })
}

/// An error while walking the entries: either already decided, or an I/O error to classify.
enum EntryError {
    Scan(ScanError),
    Io(io::Error),
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Io(e)
    }
}

impl From<ScanError> for EntryError {
    fn from(e: ScanError) -> Self {
        EntryError::Scan(e)
    }
}

/// The extension headers that describe the next entry.
#[derive(Default)]
struct PendingExtensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

fn read_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    limits: &Limits,
    budget: &Budget,
    selector: &dyn Selector,
) -> Result<LayerDelta, EntryError> {
    let mut delta = LayerDelta::default();
    let mut pending = PendingExtensions::default();
    // One buffer reused for every binary, so a layer of many executables does not
    // allocate each time.
    let mut binary_buffer = Vec::new();
    // Raw: the tar crate must not read long-name and PAX data itself (it would, unbounded).
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        delta.entries += 1;
        if !budget.spend_entry(limits.entries) {
            return Err(ScanError::TooManyEntries(limits.entries).into());
        }
        let kind = entry.header().entry_type();
        let header_size = entry.header().entry_size()?;
        if kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions() {
            if header_size > limits.ext_header {
                return Err(ScanError::ExtHeaderTooLarge(header_size).into());
            }
            let mut data = Vec::with_capacity(header_size as usize);
            entry.read_to_end(&mut data)?;
            if kind.is_gnu_longname() || kind.is_gnu_longlink() {
                while data.last() == Some(&0) {
                    data.pop();
                }
            }
            if kind.is_gnu_longname() {
                pending.long_name = Some(data);
            } else if kind.is_gnu_longlink() {
                pending.long_link = Some(data);
            } else {
                pending.pax = Some(data);
            }
            continue;
        }
        if kind.is_pax_global_extensions() {
            // Global headers carry defaults (mtime, charset) that change nothing here.
            continue;
        }
        let mut name = pending
            .long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let mut link = pending
            .long_link
            .take()
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        if let Some(pax) = pending.pax.take() {
            for extension in tar::PaxExtensions::new(&pax).flatten() {
                match extension.key() {
                    Ok("path") => name = extension.value_bytes().to_vec(),
                    Ok("linkpath") => link = Some(extension.value_bytes().to_vec()),
                    Ok("size") => {
                        // The raw iterator steps over the header's size; a PAX size that
                        // disagrees would make this reader and the runtime see different
                        // files, so such a layer is refused rather than misread.
                        let pax_size = extension.value().ok().and_then(|v| v.parse::<u64>().ok());
                        if pax_size != Some(header_size) {
                            return Err(ScanError::Corrupt(format!(
                                "a PAX size ({}) differs from its tar header's ({header_size}); not supported",
                                extension.value().unwrap_or("?")
                            ))
                            .into());
                        }
                    }
                    _ => {}
                }
            }
        }
        let Some(path) = clean_path(&name) else {
            delta.notes.push(format!(
                "skipped an entry with an unsafe path: {:?}",
                String::from_utf8_lossy(&name)
            ));
            continue;
        };
        if path.is_empty() {
            continue; // the root directory itself
        }
        let (dir, base) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path.as_str()),
        };
        if base == ".wh..wh..opq" {
            delta.opaque_dirs.push(dir.to_string());
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            delta.whiteouts.push(if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            });
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0);
        if kind.is_symlink() {
            match link {
                Some(target) => {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    delta.nodes.insert(path, Node::Symlink(target));
                }
                None => delta
                    .notes
                    .push(format!("{path}: symbolic link without a target")),
            }
        } else if kind.is_hard_link() {
            // A hard link names another path of the image, from the root (not from the
            // link's directory), and shares its content.
            let Some(target) = link
                .as_deref()
                .and_then(clean_path)
                .filter(|t| !t.is_empty())
            else {
                delta.notes.push(format!(
                    "skipped the hard link {path}: its target {:?} is unsafe",
                    String::from_utf8_lossy(link.as_deref().unwrap_or_default())
                ));
                continue;
            };
            if let Some(node) = delta.nodes.get(&target).cloned() {
                delta.nodes.insert(path, node);
            } else if selector.want(&path, mode, HARD_LINK_SIZE) != Want::Skip {
                // The target is in a lower layer, or was not kept: `apply` decides.
                delta.nodes.insert(path, Node::Hardlink(target));
            } else {
                delta.nodes.remove(&path);
                delta.shadowed.push(path);
            }
        } else if kind.is_file() || kind.is_contiguous() {
            match selector.want(&path, mode, header_size) {
                Want::Skip => {
                    // Replaces an earlier entry of this layer, or a lower layer's node.
                    delta.nodes.remove(&path);
                    delta.shadowed.push(path);
                }
                Want::Keep if header_size > limits.captured_file => {
                    delta.notes.push(format!(
                        "skipped {path}: {} bytes, over the captured_file limit of {}",
                        header_size,
                        human_bytes(limits.captured_file)
                    ));
                    delta.nodes.remove(&path);
                    delta.shadowed.push(path);
                }
                Want::Keep => {
                    let mut bytes = Vec::with_capacity(header_size as usize);
                    (&mut entry).take(header_size).read_to_end(&mut bytes)?;
                    delta.nodes.insert(path, Node::File(bytes.into()));
                }
                Want::Binary if header_size > limits.binary => {
                    delta.notes.push(format!(
                        "not analysed {path}: {} bytes, over the binary limit of {}",
                        header_size,
                        human_bytes(limits.binary)
                    ));
                    delta.nodes.remove(&path);
                    delta.shadowed.push(path);
                }
                Want::Binary => {
                    binary_buffer.clear();
                    (&mut entry)
                        .take(header_size)
                        .read_to_end(&mut binary_buffer)?;
                    let packages = selector.analyse(&path, &binary_buffer);
                    delta.nodes.insert(path, Node::Packages(packages.into()));
                }
            }
        } else {
            // Directories, devices, FIFOs: nothing to keep, but they replace whatever a
            // lower layer had at this exact path (a directory does not hide what is under
            // it in lower layers: overlays merge directories).
            delta.nodes.remove(&path);
            delta.shadowed.push(path);
        }
    }
    Ok(delta)
}

/// The image's merged file system, as far as the scanner keeps it: the deltas of all its
/// layers applied in order.
#[derive(Debug, Default)]
pub struct ImageFiles {
    nodes: BTreeMap<String, Node>,
    notes: Vec<String>,
}

impl ImageFiles {
    pub fn new() -> ImageFiles {
        ImageFiles::default()
    }

    /// Applies the next layer up: its whiteouts and opaque directories remove lower-layer
    /// paths, then its own nodes go in.
    pub fn apply(&mut self, delta: LayerDelta) {
        let LayerDelta {
            whiteouts,
            opaque_dirs,
            shadowed,
            nodes,
            notes,
            entries: _,
        } = delta;
        self.notes.extend(notes);
        for whiteout in &whiteouts {
            self.remove_under(whiteout, true);
        }
        for dir in &opaque_dirs {
            self.remove_under(dir, false);
        }
        for path in shadowed {
            self.nodes.remove(&path);
        }
        for (path, node) in nodes {
            let node = match node {
                Node::Hardlink(target) => match self.nodes.get(&target) {
                    Some(found) => found.clone(),
                    None => {
                        self.notes.push(format!(
                            "{path} is a hard link to {target}, which was not kept: not read"
                        ));
                        Node::Hardlink(target)
                    }
                },
                node => node,
            };
            self.nodes.insert(path, node);
        }
    }

    /// Removes the paths under `dir` (and `dir` itself if `itself`). Paths that start with
    /// `dir` are one contiguous range of the map, so this does not walk the whole map.
    fn remove_under(&mut self, dir: &str, itself: bool) {
        let doomed: Vec<String> = self
            .nodes
            .range::<str, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .filter(|path| is_under(path, dir) && (itself || path.as_str() != dir))
            .cloned()
            .collect();
        for path in doomed {
            self.nodes.remove(&path);
        }
    }

    /// The node stored at exactly `path` (no links followed).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The bytes of the file at `path`, following symbolic links (also in the directories
    /// of the path) inside the image only: `..` stops at the image's root, and a chain of
    /// more than 40 links reads as missing.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(&self.resolve(path)?)? {
            Node::File(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The image path that `path` names once every symbolic link is followed.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop(); // at the root, ".." stays at the root
                    continue;
                }
                _ => resolved.push(part),
            }
            let here = resolved.join("/");
            match self.nodes.get(&here) {
                Some(Node::Symlink(target)) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return None;
                    }
                    resolved.pop();
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    for part in target.split('/').rev() {
                        pending.push_front(part.to_string());
                    }
                }
                Some(Node::File(_) | Node::Packages(_) | Node::Hardlink(_))
                    if !pending.iter().all(|p| p.is_empty() || p == ".") =>
                {
                    return None; // a file used as a directory
                }
                _ => {}
            }
        }
        Some(resolved.join("/"))
    }

    /// Every kept file and its bytes, by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.nodes.iter().filter_map(|(path, node)| match node {
            Node::File(bytes) => Some((path.as_str(), &bytes[..])),
            _ => None,
        })
    }

    /// The packages found in analysed binaries, by the binary's path.
    pub fn analysed(&self) -> impl Iterator<Item = (&str, &[Package])> {
        self.nodes.iter().filter_map(|(path, node)| match node {
            Node::Packages(packages) => Some((path.as_str(), &packages[..])),
            _ => None,
        })
    }

    /// What was skipped or could not be read, in layer order.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Adds a note of the caller's (e.g. a whole layer that was unreadable but optional).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}
