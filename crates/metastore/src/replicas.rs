//! Replicas registered in the metadata store, with their heartbeats.

use async_trait::async_trait;

use crate::Result;

/// What a replica reports about itself on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaReport {
    pub id: String,
    /// Where clients or a balancer reach it.
    pub address: String,
    pub version: String,
    pub schema_level: u32,
    pub started_at_ms: i64,
    /// The replica's own clock when it sent the heartbeat.
    pub clock_ms: i64,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// How often it reports, so anyone can tell when it has gone silent.
    pub heartbeat_interval_ms: i64,
}

/// A stored report and when the store received it, by the store's clock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaRow {
    #[serde(flatten)]
    pub report: ReplicaReport,
    pub heartbeat_at_ms: i64,
}

#[async_trait]
pub trait ReplicaStore: Send + Sync {
    /// Records a heartbeat (registering the replica if new).
    async fn heartbeat(&self, report: &ReplicaReport) -> Result<()>;
    /// Every registered replica, and the store's clock now.
    async fn replicas(&self) -> Result<(Vec<ReplicaRow>, i64)>;
    /// Forgets a replica (it stopped cleanly).
    async fn remove_replica(&self, id: &str) -> Result<()>;
    /// Forgets replicas silent since before `before_ms` (store clock); how many.
    async fn expire_replicas(&self, before_ms: i64) -> Result<u64>;
}
