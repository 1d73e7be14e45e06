//! [`BackupStore`] on SQLite. The export reads inside one transaction, which in WAL
//! mode is a snapshot that concurrent writers do not disturb; the import is one
//! immediate transaction on a connection of its own.

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{params, params_from_iter, Connection, TransactionBehavior};
use tokio::sync::mpsc;

use super::{backend, connect, SqliteMetaStore};
use crate::dump::{
    coerce, match_columns, BackupRecord, BackupStore, Column, ColumnType, DumpItem, Value, TABLES,
};
use crate::{now_ms, MetaError, Result};

/// The table's columns, typed by their declared SQL type.
fn columns(conn: &Connection, table: &str) -> Result<Vec<Column>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let cols = st.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    let mut out = Vec::new();
    for c in cols {
        let (name, declared) = c?;
        let ty = match declared.to_ascii_uppercase().as_str() {
            "INTEGER" | "BIGINT" => {
                // Booleans are integers here; the dump says what they mean.
                if BOOLEAN_COLUMNS.contains(&(table, name.as_str())) {
                    ColumnType::Bool
                } else {
                    ColumnType::Int
                }
            }
            "TEXT" => ColumnType::Text,
            "BLOB" => ColumnType::Bytes,
            other => {
                return Err(MetaError::Backend(format!(
                    "{table}.{name} has type {other}, which backups do not know"
                )))
            }
        };
        out.push(Column { name, ty });
    }
    if out.is_empty() {
        return Err(MetaError::Backend(format!("no table {table}")));
    }
    Ok(out)
}

/// SQLite has no boolean type: these integer columns hold booleans.
const BOOLEAN_COLUMNS: &[(&str, &str)] = &[
    ("users", "is_admin"),
    ("users", "disabled"),
    ("org_members", "is_admin"),
    ("crons", "enabled"),
    ("manifests", "refs_recorded"),
];

fn export_blocking(conn: &mut Connection, to: &mpsc::Sender<DumpItem>) -> Result<()> {
    let gone = || MetaError::Backend("the backup stopped reading".into());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    // The first read fixes the snapshot, before anything is sent.
    tx.query_row("SELECT COUNT(*) FROM wharf_schema", [], |r| {
        r.get::<_, i64>(0)
    })?;
    for table in TABLES {
        // A store at an older schema level (backed up before an upgrade) lacks the
        // newer tables.
        if !table_exists(&tx, table)? {
            continue;
        }
        let cols = columns(&tx, table)?;
        let list = cols
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        to.blocking_send(DumpItem::Table {
            name: table.to_string(),
            columns: cols.clone(),
        })
        .map_err(|_| gone())?;
        let mut st = tx.prepare(&format!("SELECT {list} FROM {table}"))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(cols.len());
            for (i, c) in cols.iter().enumerate() {
                row.push(match (r.get_ref(i)?, c.ty) {
                    (ValueRef::Null, _) => Value::Null,
                    (ValueRef::Integer(v), ColumnType::Bool) => Value::Bool(v != 0),
                    (ValueRef::Integer(v), _) => Value::Int(v),
                    (ValueRef::Text(t), _) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    (ValueRef::Blob(b), _) => Value::Bytes(b.to_vec()),
                    (ValueRef::Real(_), _) => {
                        return Err(MetaError::Backend(format!(
                            "{table}.{} holds a real number",
                            c.name
                        )))
                    }
                });
            }
            to.blocking_send(DumpItem::Row(row)).map_err(|_| gone())?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn to_sql(v: Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Int(i) => V::Integer(i),
        Value::Bool(b) => V::Integer(b as i64),
        Value::Text(t) => V::Text(t),
        Value::Bytes(b) => V::Blob(b),
    }
}

fn table_exists(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
        [table],
        |r| r.get(0),
    )?)
}

fn is_empty(conn: &Connection) -> Result<bool> {
    for table in TABLES {
        // A store at an older schema level (a rehearsal's scratch store) lacks the
        // later levels' tables.
        if !table_exists(conn, table)? {
            continue;
        }
        let any: bool =
            conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                r.get(0)
            })?;
        if any {
            return Ok(false);
        }
    }
    Ok(true)
}

fn import_blocking(
    conn: &mut Connection,
    mut from: mpsc::Receiver<DumpItem>,
    replace: bool,
) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if replace {
        for table in TABLES.iter().rev() {
            tx.execute(&format!("DELETE FROM {table}"), [])?;
        }
    } else if !is_empty(&tx)? {
        return Err(MetaError::Conflict(
            "the metadata store already holds data (restore with --replace to overwrite it)".into(),
        ));
    }
    let mut loaded = 0u64;
    // The current table: its name, store columns, and the dump-to-store column order.
    let mut current: Option<(String, Vec<Column>, Vec<usize>, String)> = None;
    while let Some(item) = from.blocking_recv() {
        match item {
            DumpItem::Table {
                name,
                columns: dumped,
            } => {
                let store_cols = columns(&tx, &name)?;
                let order = match_columns(&name, &dumped, &store_cols)?;
                let names: Vec<&str> = order.iter().map(|&i| store_cols[i].name.as_str()).collect();
                let sql = format!(
                    "INSERT INTO {name} ({}) VALUES ({})",
                    names.join(", "),
                    vec!["?"; names.len()].join(", ")
                );
                current = Some((name, store_cols, order, sql));
            }
            DumpItem::Row(values) => {
                let Some((table, cols, order, sql)) = &current else {
                    return Err(MetaError::Conflict(
                        "the backup has a row before any table".into(),
                    ));
                };
                if values.len() != order.len() {
                    return Err(MetaError::Conflict(format!(
                        "the backup has a malformed row in {table}"
                    )));
                }
                let mut bound = Vec::with_capacity(values.len());
                for (v, &i) in values.into_iter().zip(order) {
                    bound.push(to_sql(coerce(table, &cols[i].name, v, cols[i].ty)?));
                }
                tx.prepare_cached(sql)?.execute(params_from_iter(bound))?;
                loaded += 1;
            }
        }
    }
    tx.commit()?;
    Ok(loaded)
}

#[async_trait]
impl BackupStore for SqliteMetaStore {
    async fn export(&self, to: mpsc::Sender<DumpItem>) -> Result<()> {
        let path = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || export_blocking(&mut connect(&path)?, &to))
            .await
            .map_err(backend)?
    }

    async fn import(&self, from: mpsc::Receiver<DumpItem>, replace: bool) -> Result<u64> {
        let path = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || import_blocking(&mut connect(&path)?, from, replace))
            .await
            .map_err(backend)?
    }

    async fn is_empty(&self) -> Result<bool> {
        self.read(is_empty).await
    }

    async fn record_backup(&self, r: &BackupRecord) -> Result<()> {
        let r = r.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO backups (finished_at, scope, wharf_version, schema_level, location, bytes, checksum)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                params![now_ms(), r.scope, r.wharf_version, r.schema_level, r.location, r.bytes as i64, r.checksum],
            )?;
            Ok(())
        })
        .await
    }

    async fn backups(&self, limit: usize) -> Result<Vec<BackupRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT finished_at, scope, wharf_version, schema_level, location, bytes, checksum
                 FROM backups ORDER BY finished_at DESC, id DESC LIMIT ?",
            )?;
            let rows = st.query_map([limit as i64], |r| {
                Ok(BackupRecord {
                    finished_at_ms: r.get(0)?,
                    scope: r.get(1)?,
                    wharf_version: r.get(2)?,
                    schema_level: r.get(3)?,
                    location: r.get(4)?,
                    bytes: r.get::<_, i64>(5)? as u64,
                    checksum: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
