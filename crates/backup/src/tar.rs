//! Just enough of the POSIX tar (ustar) format for backup archives: regular files with
//! short names, written and read as async streams. An operator can list or unpack an
//! archive with any `tar`.
//!
//! The writer does not need sizes up front: it writes a placeholder header, streams the
//! data, then seeks back to fill the header in (archives are regular files). Sizes from
//! 8 GiB up use GNU's base-256 size field, which GNU tar and bsdtar read.

use std::io::SeekFrom;

use anyhow::{bail, Context};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn header(name: &str, size: u64, mtime: u64) -> anyhow::Result<[u8; BLOCK]> {
    if name.len() > 100 {
        bail!("archive entry name too long: {name}");
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    if size < 8u64.pow(11) {
        octal(&mut h[124..136], size);
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h[136..148], mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Writes entries one after another into a seekable file.
pub struct TarWriter<W> {
    out: BufWriter<W>,
    /// Where the current entry's header is, and its name.
    open: Option<(u64, String)>,
    size: u64,
    pos: u64,
    mtime: u64,
}

impl<W: AsyncWrite + AsyncSeekExt + Unpin> TarWriter<W> {
    pub fn new(out: W) -> Self {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        TarWriter {
            out: BufWriter::with_capacity(1 << 20, out),
            open: None,
            size: 0,
            pos: 0,
            mtime,
        }
    }

    /// Starts an entry; its data follows through [`Self::write`].
    pub async fn begin(&mut self, name: &str) -> anyhow::Result<()> {
        assert!(self.open.is_none(), "an entry is still open");
        header(name, 0, self.mtime)?;
        self.open = Some((self.pos, name.to_string()));
        self.out.write_all(&[0u8; BLOCK]).await?;
        self.pos += BLOCK as u64;
        self.size = 0;
        Ok(())
    }

    pub async fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(data).await?;
        self.size += data.len() as u64;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Ends the entry: pads it and fills in its header. Returns its size.
    pub async fn end(&mut self) -> anyhow::Result<u64> {
        let (at, name) = self.open.take().expect("no entry is open");
        let pad = padding(self.size);
        self.out.write_all(&vec![0u8; pad]).await?;
        self.pos += pad as u64;
        let h = header(&name, self.size, self.mtime)?;
        self.out.seek(SeekFrom::Start(at)).await?;
        self.out.write_all(&h).await?;
        self.out.seek(SeekFrom::Start(self.pos)).await?;
        Ok(self.size)
    }

    /// Writes the end-of-archive marker and flushes; returns the underlying writer and
    /// the archive's size.
    pub async fn finish(mut self) -> anyhow::Result<(W, u64)> {
        assert!(self.open.is_none(), "an entry is still open");
        self.out.write_all(&[0u8; 2 * BLOCK]).await?;
        self.pos += 2 * BLOCK as u64;
        self.out.flush().await?;
        Ok((self.out.into_inner(), self.pos))
    }
}

/// An entry's name and size, as its header gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
}

/// Reads entries in order; refuses damaged headers and archives that end early.
pub struct TarReader<R> {
    input: BufReader<R>,
    /// Data left in the current entry, then its padding.
    remaining: u64,
    pad: usize,
}

fn parse_octal(field: &[u8], what: &str) -> anyhow::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut v = 0u64;
        for &b in &field[field.len() - 8..] {
            v = (v << 8) | b as u64;
        }
        return Ok(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let s = s.trim_start();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).with_context(|| format!("damaged archive: bad {what} field"))
}

impl<R: AsyncRead + Unpin> TarReader<R> {
    pub fn new(input: R) -> Self {
        TarReader {
            input: BufReader::with_capacity(1 << 20, input),
            remaining: 0,
            pad: 0,
        }
    }

    async fn read_block(&mut self, block: &mut [u8; BLOCK]) -> anyhow::Result<()> {
        self.input
            .read_exact(block)
            .await
            .map_err(|e| truncated_or(e, "reading an entry header"))?;
        Ok(())
    }

    /// The next entry, or `None` at the end-of-archive marker. Skips whatever is left
    /// of the previous entry's data.
    pub async fn next(&mut self) -> anyhow::Result<Option<Entry>> {
        self.skip_rest().await?;
        let mut h = [0u8; BLOCK];
        self.read_block(&mut h).await?;
        if h.iter().all(|&b| b == 0) {
            self.read_block(&mut h).await?;
            if h.iter().any(|&b| b != 0) {
                bail!("damaged archive: data after an end-of-archive block");
            }
            return Ok(None);
        }
        let stored = parse_octal(&h[148..156], "checksum")?;
        let mut copy = h;
        copy[148..156].fill(b' ');
        let sum: u64 = copy.iter().map(|&b| b as u64).sum();
        if sum != stored {
            bail!("damaged archive: an entry header fails its checksum");
        }
        if h[156] != b'0' && h[156] != 0 {
            bail!("unexpected entry type {:?} in the archive", h[156] as char);
        }
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name =
            String::from_utf8(h[..name_len].to_vec()).context("damaged archive: entry name")?;
        let size = parse_octal(&h[124..136], "size")?;
        self.remaining = size;
        self.pad = padding(size);
        Ok(Some(Entry { name, size }))
    }

    /// Reads up to `buf.len()` bytes of the current entry; 0 at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> anyhow::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = self
            .input
            .read(&mut buf[..want])
            .await
            .context("reading the archive")?;
        if n == 0 {
            bail!("the archive is truncated: it ends inside an entry");
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    async fn skip_rest(&mut self) -> anyhow::Result<()> {
        let mut sink = vec![0u8; 64 * 1024];
        while self.remaining > 0 {
            self.read(&mut sink).await?;
        }
        if self.pad > 0 {
            let mut pad = vec![0u8; self.pad];
            self.input
                .read_exact(&mut pad)
                .await
                .map_err(|e| truncated_or(e, "reading padding"))?;
            self.pad = 0;
        }
        Ok(())
    }

    /// After the end-of-archive marker: there must be nothing but zero padding.
    pub async fn expect_eof(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.input.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            if buf[..n].iter().any(|&b| b != 0) {
                bail!("damaged archive: data after its end");
            }
        }
    }
}

fn truncated_or(e: std::io::Error, doing: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        anyhow::anyhow!("the archive is truncated (it ends while {doing})")
    } else {
        anyhow::Error::new(e).context(format!("{doing} in the archive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut w = TarWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.begin(name).await.unwrap();
            for chunk in data.chunks(7) {
                w.write(chunk).await.unwrap();
            }
            w.end().await.unwrap();
        }
        let (cursor, size) = w.finish().await.unwrap();
        let bytes = cursor.into_inner();
        assert_eq!(bytes.len() as u64, size);
        bytes
    }

    async fn read(bytes: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next().await? {
            let mut data = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            assert_eq!(data.len() as u64, e.size);
            out.push((e.name, data));
        }
        r.expect_eof().await?;
        Ok(out)
    }

    #[tokio::test]
    async fn round_trip_and_gnu_tar_agrees() {
        let entries = vec![
            ("a.json", b"{}".to_vec()),
            ("empty", Vec::new()),
            ("blobs/sha256/exact", vec![7u8; 1024]),
            ("odd", (0..1000u32).map(|i| i as u8).collect()),
        ];
        let bytes = write(&entries).await;
        let back = read(&bytes).await.unwrap();
        let expected: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        assert_eq!(back, expected);
        // Any tar reads it: list it with GNU tar when it is there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(out) = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let listing = String::from_utf8_lossy(&out.stdout);
            for (name, data) in &entries {
                let line = listing
                    .lines()
                    .find(|l| l.ends_with(name))
                    .unwrap_or_else(|| panic!("{listing}"));
                assert!(line.contains(&format!(" {} ", data.len())), "{line}");
            }
        }
    }

    #[tokio::test]
    async fn truncation_and_damage_are_refused() {
        let bytes = write(&[("x", vec![1u8; 3000]), ("y", vec![2u8; 10])]).await;
        for cut in [100, 512, 2000, bytes.len() - 1024 - 1, bytes.len() - 1] {
            let err = read(&bytes[..cut]).await.unwrap_err().to_string();
            assert!(err.contains("truncated"), "cut at {cut}: {err}");
        }
        let mut damaged = bytes.clone();
        damaged[3] ^= 0x20; // in the first header's name
        let err = read(&damaged).await.unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn large_sizes_use_base_256() {
        let h = header("big", 10 << 30, 0).unwrap();
        assert_eq!(h[124], 0x80);
        assert_eq!(parse_octal(&h[124..136], "size").unwrap(), 10 << 30);
        let h = header("small", 8u64.pow(11) - 1, 0).unwrap();
        assert_eq!(parse_octal(&h[124..136], "size").unwrap(), 8u64.pow(11) - 1);
    }
}
