//! [`UpgradeJournal`] on PostgreSQL; times by the database's clock.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use super::{PgMetaStore, DB_NOW_MS};
use crate::journal::{JournalEntry, UpgradeJournal, POSTGRES_TABLES};
use crate::Result;

impl PgMetaStore {
    async fn journal_tables(&self) -> Result<()> {
        sqlx::raw_sql(POSTGRES_TABLES).execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl UpgradeJournal for PgMetaStore {
    async fn take_upgrade_lock(
        &self,
        holder: &str,
        stale_after_ms: i64,
    ) -> Result<std::result::Result<(), String>> {
        self.journal_tables().await?;
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query(AssertSqlSafe(format!(
            "SELECT holder, {DB_NOW_MS} - renewed_at FROM wharf_upgrade_lock WHERE id = 1 FOR UPDATE"
        )))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = current {
            let (h, age): (String, i64) = (r.get(0), r.get(1));
            if h != holder && age < stale_after_ms {
                tx.rollback().await?;
                return Ok(Err(h));
            }
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO wharf_upgrade_lock (id, holder, renewed_at) VALUES (1, $1, {DB_NOW_MS})
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, renewed_at = excluded.renewed_at"
        )))
        .bind(holder)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn release_upgrade_lock(&self, holder: &str) -> Result<()> {
        self.journal_tables().await?;
        sqlx::query("DELETE FROM wharf_upgrade_lock WHERE holder = $1")
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn journal(&self, to: &str) -> Result<Vec<JournalEntry>> {
        self.journal_tables().await?;
        let rows = sqlx::query(
            "SELECT from_version, to_version, step, status, at, detail FROM wharf_upgrade_journal
             WHERE to_version = $1 ORDER BY at, step",
        )
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| JournalEntry {
                from_version: r.get(0),
                to_version: r.get(1),
                step: r.get(2),
                status: r.get(3),
                at_ms: r.get(4),
                detail: r.get(5),
            })
            .collect())
    }

    async fn data_version(&self) -> Result<String> {
        let mut conn = self.pool.acquire().await?;
        crate::schema::postgres_state(&mut conn)
            .await?
            .map(|s| s.wharf_version)
            .ok_or_else(|| crate::MetaError::Backend("the database holds no wharf data".into()))
    }

    async fn database_version(&self) -> Result<(String, String)> {
        let v: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await?;
        // "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
        Ok((
            "postgresql".into(),
            v.split_whitespace().next().unwrap_or("").to_string(),
        ))
    }

    async fn forget_upgrade(&self, from: &str, to: &str) -> Result<u64> {
        self.journal_tables().await?;
        Ok(sqlx::query(
            "DELETE FROM wharf_upgrade_journal WHERE from_version = $1 AND to_version = $2",
        )
        .bind(from)
        .bind(to)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn record_step(&self, e: &JournalEntry) -> Result<()> {
        self.journal_tables().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO wharf_upgrade_journal (from_version, to_version, step, status, at, detail)
             VALUES ($1, $2, $3, $4, {DB_NOW_MS}, $5)
             ON CONFLICT (from_version, to_version, step) DO UPDATE
             SET status = excluded.status, at = excluded.at, detail = excluded.detail"
        )))
        .bind(&e.from_version)
        .bind(&e.to_version)
        .bind(&e.step)
        .bind(&e.status)
        .bind(&e.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
