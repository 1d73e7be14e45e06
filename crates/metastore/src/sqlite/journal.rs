//! [`UpgradeJournal`] on SQLite.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteMetaStore;
use crate::journal::{JournalEntry, UpgradeJournal, SQLITE_TABLES};
use crate::{now_ms, Result};

#[async_trait]
impl UpgradeJournal for SqliteMetaStore {
    async fn take_upgrade_lock(
        &self,
        holder: &str,
        stale_after_ms: i64,
    ) -> Result<std::result::Result<(), String>> {
        let holder = holder.to_string();
        self.write(move |tx| {
            tx.execute_batch(SQLITE_TABLES)?;
            let now = now_ms();
            let current: Option<(String, i64)> = tx
                .query_row("SELECT holder, renewed_at FROM wharf_upgrade_lock WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if let Some((h, at)) = current {
                if h != holder && now - at < stale_after_ms {
                    return Ok(Err(h));
                }
            }
            tx.execute(
                "INSERT INTO wharf_upgrade_lock (id, holder, renewed_at) VALUES (1, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, renewed_at = excluded.renewed_at",
                params![holder, now],
            )?;
            Ok(Ok(()))
        })
        .await
    }

    async fn release_upgrade_lock(&self, holder: &str) -> Result<()> {
        let holder = holder.to_string();
        self.write(move |tx| {
            tx.execute_batch(SQLITE_TABLES)?;
            tx.execute("DELETE FROM wharf_upgrade_lock WHERE holder = ?", [holder])?;
            Ok(())
        })
        .await
    }

    async fn journal(&self, to: &str) -> Result<Vec<JournalEntry>> {
        let to = to.to_string();
        self.write(move |tx| {
            tx.execute_batch(SQLITE_TABLES)?;
            let mut st = tx.prepare(
                "SELECT from_version, to_version, step, status, at, detail FROM wharf_upgrade_journal
                 WHERE to_version = ? ORDER BY at, step",
            )?;
            let rows = st.query_map(params![to], |r| {
                Ok(JournalEntry {
                    from_version: r.get(0)?,
                    to_version: r.get(1)?,
                    step: r.get(2)?,
                    status: r.get(3)?,
                    at_ms: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn data_version(&self) -> Result<String> {
        self.read(|c| {
            let finalised: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'wharf_cluster_version')",
                [],
                |r| r.get(0),
            )?;
            let sql = if finalised {
                crate::schema::SQLITE_DATA_VERSION
            } else {
                "SELECT wharf_version FROM wharf_schema ORDER BY level DESC LIMIT 1"
            };
            Ok(c.query_row(sql, [], |r| r.get(0))?)
        })
        .await
    }

    async fn database_version(&self) -> Result<(String, String)> {
        Ok(("sqlite".into(), rusqlite::version().to_string()))
    }

    async fn forget_upgrade(&self, from: &str, to: &str) -> Result<u64> {
        let (from, to) = (from.to_string(), to.to_string());
        self.write(move |tx| {
            tx.execute_batch(SQLITE_TABLES)?;
            Ok(tx.execute(
                "DELETE FROM wharf_upgrade_journal WHERE from_version = ? AND to_version = ?",
                params![from, to],
            )? as u64)
        })
        .await
    }

    async fn record_step(&self, e: &JournalEntry) -> Result<()> {
        let e = e.clone();
        self.write(move |tx| {
            tx.execute_batch(SQLITE_TABLES)?;
            tx.execute(
                "INSERT INTO wharf_upgrade_journal (from_version, to_version, step, status, at, detail)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT DO UPDATE SET status = excluded.status, at = excluded.at, detail = excluded.detail",
                params![e.from_version, e.to_version, e.step, e.status, now_ms(), e.detail],
            )?;
            Ok(())
        })
        .await
    }
}
