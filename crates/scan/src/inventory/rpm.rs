//! rpm's SQLite database (`rpmdb.sqlite`, RHEL 9+, Fedora 33+), opened from memory.
//! The Berkeley DB (`Packages`, RHEL 8, CentOS 7) and NDB (SUSE) formats are not read.

use std::collections::BTreeMap;

use super::{purl, Os};
use crate::Package;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The string and INT32 tags of an rpm header blob as rpmdb.sqlite stores it (without the
/// 8-byte lead magic):
///
/// ```text
/// be32 il, be32 dl, il × {be32 tag, be32 type, be32 offset, be32 count}, dl bytes of data
/// ```
///
/// String arrays give their first string. `None` when the blob is malformed.
pub fn parse_header(blob: &[u8]) -> Option<BTreeMap<u32, String>> {
    let be32 = |at: usize| -> Option<u32> {
        let bytes = blob.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    };
    let index_len = be32(0)? as usize;
    let data_len = be32(4)? as usize;
    if index_len > 100_000 {
        return None;
    }
    let data_start = 8 + index_len * 16;
    let data = blob.get(data_start..data_start.checked_add(data_len)?)?;
    let mut tags = BTreeMap::new();
    for i in 0..index_len {
        let entry = 8 + i * 16;
        let (tag, kind, offset) = (be32(entry)?, be32(entry + 4)?, be32(entry + 8)? as usize);
        let value = match kind {
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => {
                let rest = data.get(offset..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                String::from_utf8_lossy(&rest[..end]).into_owned()
            }
            TYPE_INT32 => {
                let bytes = data.get(offset..offset.checked_add(4)?)?;
                u32::from_be_bytes(bytes.try_into().ok()?).to_string()
            }
            _ => continue,
        };
        tags.insert(tag, value);
    }
    Some(tags)
}

/// `openssl-3.0.7-27.el9.src.rpm` → (`openssl`, `3.0.7`, `27.el9`).
pub fn split_source_rpm(file: &str) -> Option<(&str, &str, &str)> {
    let stem = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let mut parts = stem.rsplitn(3, '-');
    let release = parts.next()?;
    let version = parts.next()?;
    let name = parts.next()?;
    (!name.is_empty() && !version.is_empty() && !release.is_empty())
        .then_some((name, version, release))
}

/// One installed package from its header's tags; `None` for imported signing keys
/// (`gpg-pubkey`, stored as headers too) and headers without name or version.
pub fn package_from_header(
    tags: &BTreeMap<u32, String>,
    location: &str,
    ecosystem: &str,
    os: Option<&Os>,
) -> Option<Package> {
    let name = tags.get(&TAG_NAME)?.clone();
    if name == "gpg-pubkey" {
        return None;
    }
    let epoch = tags.get(&TAG_EPOCH).map(String::as_str).unwrap_or("");
    let with_epoch = |v: String| {
        if epoch.is_empty() {
            v
        } else {
            format!("{epoch}:{v}")
        }
    };
    let version_release = match tags.get(&TAG_RELEASE) {
        Some(release) => format!("{}-{release}", tags.get(&TAG_VERSION)?),
        None => tags.get(&TAG_VERSION)?.clone(),
    };
    let arch = tags.get(&TAG_ARCH).map(String::as_str).unwrap_or("");
    let source = tags.get(&TAG_SOURCERPM).and_then(|s| split_source_rpm(s));
    let (match_name, match_version) = match source {
        Some((source, version, release)) => (
            source.to_string(),
            with_epoch(format!("{version}-{release}")),
        ),
        None => (name.clone(), with_epoch(version_release.clone())),
    };
    let namespace = os.map(|os| os.id.as_str()).unwrap_or("redhat");
    let upstream = tags.get(&TAG_SOURCERPM).map(String::as_str).unwrap_or("");
    let distro = purl::distro(os);
    let purl = purl::build(
        "rpm",
        Some(namespace),
        &name,
        &version_release,
        &[
            ("arch", arch),
            ("distro", &distro),
            ("epoch", epoch),
            ("upstream", upstream),
        ],
    );
    Some(Package {
        ecosystem: ecosystem.to_string(),
        version: with_epoch(version_release),
        name,
        match_name,
        match_version,
        purl,
        location: location.to_string(),
    })
}

/// The packages of an `rpmdb.sqlite`, opened from memory: nothing is written to disk.
pub fn parse_rpmdb(
    bytes: &[u8],
    location: &str,
    ecosystem: &str,
    os: Option<&Os>,
) -> Result<Vec<Package>, String> {
    let connection = open_in_memory(bytes).map_err(|e| e.to_string())?;
    let mut statement = connection
        .prepare("SELECT blob FROM Packages")
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .map_err(|e| e.to_string())?;
    let mut packages = Vec::new();
    let mut unreadable = 0;
    for blob in rows {
        let blob = blob.map_err(|e| e.to_string())?;
        match parse_header(&blob) {
            Some(tags) => packages.extend(package_from_header(&tags, location, ecosystem, os)),
            None => unreadable += 1,
        }
    }
    if packages.is_empty() && unreadable > 0 {
        return Err(format!("{unreadable} package headers are malformed"));
    }
    Ok(packages)
}

/// A read-only in-memory SQLite connection over a copy of `bytes`.
fn open_in_memory(bytes: &[u8]) -> rusqlite::Result<rusqlite::Connection> {
    const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
    if bytes.len() < 100 || !bytes.starts_with(SQLITE_MAGIC) {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some("not an SQLite database".to_string()),
        ));
    }
    let mut connection = rusqlite::Connection::open_in_memory()?;
    // SAFETY: rusqlite 0.32's OwnedData must own memory from sqlite3_malloc64, of `len`
    // bytes; the copy below fills exactly that many.
    let data = unsafe {
        let raw = rusqlite::ffi::sqlite3_malloc64(bytes.len() as u64) as *mut u8;
        let Some(raw) = std::ptr::NonNull::new(raw) else {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOMEM),
                None,
            ));
        };
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.as_ptr(), bytes.len());
        // rpm leaves its database in WAL mode (header bytes 18/19 = 2), which an in-memory
        // database cannot open (SQLITE_CANTOPEN): read it as a rollback-journal database.
        *raw.as_ptr().add(18) = 1;
        *raw.as_ptr().add(19) = 1;
        rusqlite::serialize::OwnedData::from_raw_nonnull(raw, bytes.len())
    };
    connection.deserialize(rusqlite::DatabaseName::Main, data, true)?;
    Ok(connection)
}
