//! [`BackupStore`] on PostgreSQL. The export reads in one `REPEATABLE READ READ ONLY`
//! transaction, a snapshot that concurrent pushes do not disturb; the import is one
//! transaction, loading rows in multi-row batches, then moving the id sequences past
//! the loaded ids.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};
use tokio::sync::mpsc;

use super::{lock, PgMetaStore, DB_NOW_MS, LOCK_MIGRATIONS};
use crate::dump::{
    coerce, match_columns, BackupRecord, BackupStore, Column, ColumnType, DumpItem, Value, TABLES,
};
use crate::{MetaError, Result};

/// At most this many bound parameters in one statement (PostgreSQL allows 65535).
const MAX_PARAMS: usize = 30_000;
const MAX_BATCH_ROWS: usize = 1_000;

async fn columns(conn: &mut PgConnection, table: &str) -> Result<Vec<Column>> {
    let rows = sqlx::query(
        "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let ty = match r.get::<String, _>(1).as_str() {
            "bigint" | "integer" | "smallint" => ColumnType::Int,
            "text" => ColumnType::Text,
            "boolean" => ColumnType::Bool,
            "bytea" => ColumnType::Bytes,
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

fn gone() -> MetaError {
    MetaError::Backend("the backup stopped reading".into())
}

async fn is_empty(conn: &mut PgConnection) -> Result<bool> {
    for table in TABLES {
        // A database at an older schema level (a rehearsal's scratch database) lacks
        // the later levels' tables.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(*table)
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            continue;
        }
        let any: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut *conn)
        .await?;
        if any {
            return Ok(false);
        }
    }
    Ok(true)
}

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

fn bind(q: Query<'_>, v: Value, ty: ColumnType) -> Query<'_> {
    match (v, ty) {
        (Value::Null, ColumnType::Int) => q.bind(None::<i64>),
        (Value::Null, ColumnType::Text) => q.bind(None::<String>),
        (Value::Null, ColumnType::Bool) => q.bind(None::<bool>),
        (Value::Null, ColumnType::Bytes) => q.bind(None::<Vec<u8>>),
        (Value::Int(i), _) => q.bind(i),
        (Value::Text(t), _) => q.bind(t),
        (Value::Bool(b), _) => q.bind(b),
        (Value::Bytes(b), _) => q.bind(b),
    }
}

/// Rows of one table waiting to be inserted together.
struct Batch {
    table: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
}

impl Batch {
    fn full(&self) -> bool {
        self.rows.len() >= MAX_BATCH_ROWS || (self.rows.len() + 1) * self.columns.len() > MAX_PARAMS
    }

    async fn flush(&mut self, conn: &mut PgConnection) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let n = names.len();
        let tuples: Vec<String> = (0..self.rows.len())
            .map(|r| {
                let params: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            names.join(", "),
            tuples.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in self.rows.drain(..) {
            for (v, c) in row.into_iter().zip(&self.columns) {
                q = bind(q, v, c.ty);
            }
        }
        q.execute(conn).await?;
        Ok(())
    }
}

#[async_trait]
impl BackupStore for PgMetaStore {
    async fn export(&self, to: mpsc::Sender<DumpItem>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        for table in TABLES {
            // A store at an older schema level (backed up before an upgrade) lacks the
            // newer tables.
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(*table)
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                continue;
            }
            let cols = columns(&mut tx, table).await?;
            // Integers of any width come out as BIGINT.
            let list: Vec<String> = cols
                .iter()
                .map(|c| match c.ty {
                    ColumnType::Int => format!("{}::BIGINT", c.name),
                    _ => c.name.clone(),
                })
                .collect();
            to.send(DumpItem::Table {
                name: table.to_string(),
                columns: cols.clone(),
            })
            .await
            .map_err(|_| gone())?;
            let sql = format!("SELECT {} FROM {table}", list.join(", "));
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                let mut row = Vec::with_capacity(cols.len());
                for (i, c) in cols.iter().enumerate() {
                    let v = match c.ty {
                        ColumnType::Int => r.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                        ColumnType::Text => r.try_get::<Option<String>, _>(i)?.map(Value::Text),
                        ColumnType::Bool => r.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
                        ColumnType::Bytes => r.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
                    };
                    row.push(v.unwrap_or(Value::Null));
                }
                to.send(DumpItem::Row(row)).await.map_err(|_| gone())?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn import(&self, mut from: mpsc::Receiver<DumpItem>, replace: bool) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // One restore at a time, and not while a replica creates the schema.
        lock(&mut tx, LOCK_MIGRATIONS).await?;
        if replace {
            sqlx::query(AssertSqlSafe(format!("TRUNCATE {}", TABLES.join(", "))))
                .execute(&mut *tx)
                .await?;
        } else if !is_empty(&mut tx).await? {
            return Err(MetaError::Conflict(
                "the metadata store already holds data (restore with --replace to overwrite it)"
                    .into(),
            ));
        }
        let mut loaded = 0u64;
        let mut batch: Option<(Batch, Vec<Column>, Vec<usize>)> = None;
        let mut with_ids = Vec::new();
        while let Some(item) = from.recv().await {
            match item {
                DumpItem::Table {
                    name,
                    columns: dumped,
                } => {
                    if let Some((mut b, _, _)) = batch.take() {
                        b.flush(&mut tx).await?;
                    }
                    let store_cols = columns(&mut tx, &name).await?;
                    let order = match_columns(&name, &dumped, &store_cols)?;
                    let in_dump_order = order.iter().map(|&i| store_cols[i].clone()).collect();
                    if store_cols
                        .iter()
                        .any(|c| c.name == "id" && c.ty == ColumnType::Int)
                    {
                        with_ids.push(name.clone());
                    }
                    batch = Some((
                        Batch {
                            table: name,
                            columns: in_dump_order,
                            rows: Vec::new(),
                        },
                        store_cols,
                        order,
                    ));
                }
                DumpItem::Row(values) => {
                    let Some((b, store_cols, order)) = batch.as_mut() else {
                        return Err(MetaError::Conflict(
                            "the backup has a row before any table".into(),
                        ));
                    };
                    if values.len() != order.len() {
                        return Err(MetaError::Conflict(format!(
                            "the backup has a malformed row in {}",
                            b.table
                        )));
                    }
                    let mut row = Vec::with_capacity(values.len());
                    for (v, &i) in values.into_iter().zip(order.iter()) {
                        let c = &store_cols[i];
                        row.push(coerce(&b.table, &c.name, v, c.ty)?);
                    }
                    b.rows.push(row);
                    loaded += 1;
                    if b.full() {
                        b.flush(&mut tx).await?;
                    }
                }
            }
        }
        if let Some((mut b, _, _)) = batch.take() {
            b.flush(&mut tx).await?;
        }
        // New rows must not collide with loaded ids.
        for table in &with_ids {
            // setval is strict: nothing happens for an `id` without a sequence.
            sqlx::query(AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(loaded)
    }

    async fn is_empty(&self) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        is_empty(&mut conn).await
    }

    async fn record_backup(&self, r: &BackupRecord) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO backups (finished_at, scope, wharf_version, schema_level, location, bytes, checksum)
             VALUES ({DB_NOW_MS}, $1, $2, $3, $4, $5, $6)"
        )))
        .bind(&r.scope)
        .bind(&r.wharf_version)
        .bind(r.schema_level as i64)
        .bind(&r.location)
        .bind(r.bytes as i64)
        .bind(&r.checksum)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn backups(&self, limit: usize) -> Result<Vec<BackupRecord>> {
        let rows = sqlx::query(
            "SELECT finished_at, scope, wharf_version, schema_level, location, bytes, checksum
             FROM backups ORDER BY finished_at DESC, id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BackupRecord {
                finished_at_ms: r.get(0),
                scope: r.get(1),
                wharf_version: r.get(2),
                schema_level: r.get::<i64, _>(3) as u32,
                location: r.get(4),
                bytes: r.get::<i64, _>(5) as u64,
                checksum: r.get(6),
            })
            .collect())
    }
}
