//! Backups of a wharf registry, and restoring from them.
//!
//! An archive is a plain tar file (list it with `tar -tvf`):
//!
//! | entry | what |
//! |---|---|
//! | `wharf-backup.json` | [`Header`]: format, wharf version, schema level, scope |
//! | `metadata/NN-TABLE.jsonl` | one table: a line naming its typed columns, then one JSON array per row |
//! | `blobs/ALG/HEX` | each blob the metadata refers to (scope `metadata+blobs`) |
//! | `SHA256SUMS` | the SHA-256 of every entry above, as `sha256sum -c` reads it |
//!
//! The metadata comes from one snapshot of the store, taken while the registry serves
//! (see [`wharf_metastore::BackupStore`]); blobs are content-addressed and never
//! change, so the blobs that snapshot names are the consistent set to copy.
//!
//! A restore reads the whole archive and checks every checksum before it touches
//! anything; a truncated or damaged archive is refused with the reason.

mod archive;
mod restore;
pub mod tar;

pub use archive::{create, BackupRequest, BackupSummary};
pub use restore::{check_version, restore, verify, RestoreRequest, RestoreSummary, Verified};

/// The first entry of every archive.
pub const HEADER_ENTRY: &str = "wharf-backup.json";
/// The last entry: the checksums of all the others.
pub const SUMS_ENTRY: &str = "SHA256SUMS";
pub const FORMAT: &str = "wharf-backup/1";

/// What an archive is, written first so a restore can refuse early.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub format: String,
    pub wharf_version: String,
    pub schema_level: u32,
    /// `metadata` or `metadata+blobs`.
    pub scope: String,
    /// The kind of metadata store it was taken from (`sqlite`, `postgres`).
    pub source: String,
    pub created_at_ms: i64,
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Metadata,
    MetadataAndBlobs,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Metadata => "metadata",
            Scope::MetadataAndBlobs => "metadata+blobs",
        }
    }
}

/// Reports progress of long steps; the CLI draws bars on a terminal.
pub trait Progress: Send + Sync {
    /// A new step, with the bytes it will handle when known.
    fn step(&self, name: &str, total_bytes: Option<u64>);
    fn advance(&self, bytes: u64);
    /// The step is over; `summary` says what it did.
    fn finish(&self, summary: &str);
}

/// Progress that nobody watches.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: &str) {}
}

mod rows {
    //! Rows as JSON lines: the column line, then arrays of values; bytes in base64.

    use anyhow::{bail, Context};
    use base64::Engine;
    use serde_json::Value as Json;
    use wharf_metastore::dump::{Column, ColumnType, Value};

    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct TableLine {
        pub table: String,
        pub columns: Vec<Column>,
    }

    pub fn encode(row: &[Value]) -> Json {
        Json::Array(
            row.iter()
                .map(|v| match v {
                    Value::Null => Json::Null,
                    Value::Int(i) => Json::from(*i),
                    Value::Text(t) => Json::from(t.as_str()),
                    Value::Bool(b) => Json::from(*b),
                    Value::Bytes(b) => {
                        Json::from(base64::engine::general_purpose::STANDARD.encode(b))
                    }
                })
                .collect(),
        )
    }

    pub fn decode(line: &[u8], columns: &[Column]) -> anyhow::Result<Vec<Value>> {
        let Json::Array(values) = serde_json::from_slice(line).context("a row is not JSON")? else {
            bail!("a row is not a JSON array");
        };
        if values.len() != columns.len() {
            bail!(
                "a row has {} values for {} columns",
                values.len(),
                columns.len()
            );
        }
        values
            .into_iter()
            .zip(columns)
            .map(|(v, c)| {
                Ok(match (v, c.ty) {
                    (Json::Null, _) => Value::Null,
                    (Json::Number(n), ColumnType::Int) => {
                        Value::Int(n.as_i64().context("an integer out of range")?)
                    }
                    (Json::String(s), ColumnType::Text) => Value::Text(s),
                    (Json::Bool(b), ColumnType::Bool) => Value::Bool(b),
                    (Json::String(s), ColumnType::Bytes) => Value::Bytes(
                        base64::engine::general_purpose::STANDARD
                            .decode(s)
                            .context("bytes that are not base64")?,
                    ),
                    (v, ty) => bail!("column {} holds {v}, not {ty:?}", c.name),
                })
            })
            .collect()
    }
}
