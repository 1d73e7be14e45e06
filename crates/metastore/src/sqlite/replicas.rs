//! [`ReplicaStore`] on SQLite: the store's clock is this process's clock.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteMetaStore;
use crate::replicas::{ReplicaReport, ReplicaRow, ReplicaStore};
use crate::{now_ms, Result};

#[async_trait]
impl ReplicaStore for SqliteMetaStore {
    async fn heartbeat(&self, r: &ReplicaReport) -> Result<()> {
        let r = r.clone();
        // Relaxed: a lost heartbeat is replaced by the next one.
        self.write_relaxed(move |tx| {
            tx.execute(
                "INSERT INTO replicas (id, address, version, schema_level, started_at, heartbeat_at, clock,
                                       disk_free, disk_total, memory_available, heartbeat_interval)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
                   schema_level = excluded.schema_level, started_at = excluded.started_at,
                   heartbeat_at = excluded.heartbeat_at, clock = excluded.clock, disk_free = excluded.disk_free,
                   disk_total = excluded.disk_total, memory_available = excluded.memory_available,
                   heartbeat_interval = excluded.heartbeat_interval",
                params![
                    r.id,
                    r.address,
                    r.version,
                    r.schema_level,
                    r.started_at_ms,
                    now_ms(),
                    r.clock_ms,
                    r.disk_free_bytes as i64,
                    r.disk_total_bytes as i64,
                    r.memory_available_bytes as i64,
                    r.heartbeat_interval_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn replicas(&self) -> Result<(Vec<ReplicaRow>, i64)> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, address, version, schema_level, started_at, heartbeat_at, clock, disk_free, disk_total,
                        memory_available, heartbeat_interval FROM replicas ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ReplicaRow {
                    report: ReplicaReport {
                        id: r.get(0)?,
                        address: r.get(1)?,
                        version: r.get(2)?,
                        schema_level: r.get(3)?,
                        started_at_ms: r.get(4)?,
                        clock_ms: r.get(6)?,
                        disk_free_bytes: r.get::<_, i64>(7)? as u64,
                        disk_total_bytes: r.get::<_, i64>(8)? as u64,
                        memory_available_bytes: r.get::<_, i64>(9)? as u64,
                        heartbeat_interval_ms: r.get(10)?,
                    },
                    heartbeat_at_ms: r.get(5)?,
                })
            })?;
            Ok((rows.collect::<rusqlite::Result<Vec<_>>>()?, now_ms()))
        })
        .await
    }

    async fn remove_replica(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM replicas WHERE id = ?", [id])?;
            Ok(())
        })
        .await
    }

    async fn expire_replicas(&self, before_ms: i64) -> Result<u64> {
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM replicas WHERE heartbeat_at < ?", [before_ms])? as u64)
        })
        .await
    }
}
