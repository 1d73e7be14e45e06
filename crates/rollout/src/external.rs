//! The `external` driver: an orchestrator (Kubernetes, systemd, a person) replaces the
//! replicas; wharf watches the replicas' heartbeats in the metadata store and waits
//! until each one, known by its address, reports the target version and answers ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use async_trait::async_trait;
use wharf_metastore::MetaStore;

use crate::{probe_client, ready_version, Driver, Event, Replica, Target};

pub struct ExternalDriver {
    meta: Arc<dyn MetaStore>,
}

impl ExternalDriver {
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        ExternalDriver { meta }
    }
}

fn url_of(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

#[async_trait]
impl Driver for ExternalDriver {
    fn name(&self) -> &'static str {
        "external"
    }

    async fn discover(&self) -> anyhow::Result<Vec<Replica>> {
        let (rows, now) = self.meta.replicas().await?;
        let mut replicas: Vec<Replica> = rows
            .into_iter()
            .filter(|r| now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000))
            .map(|r| Replica {
                name: r.report.address.clone(),
                url: url_of(&r.report.address),
                image: r.report.version.clone(),
                saved: serde_json::json!({ "id": r.report.id, "version": r.report.version }),
            })
            .collect();
        if replicas.is_empty() {
            bail!("no replica is reporting to the metadata store: nothing to wait for");
        }
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        replicas.dedup_by(|a, b| a.name == b.name);
        Ok(replicas)
    }

    async fn converge(
        &self,
        replica: &Replica,
        target: &Target,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> anyhow::Result<()> {
        let http = probe_client();
        let start = Instant::now();
        let mut last_report: Option<Instant> = None;
        while start.elapsed() < target.timeout {
            let (rows, now) = self.meta.replicas().await?;
            let alive = |r: &&wharf_metastore::ReplicaRow| {
                now - r.heartbeat_at_ms <= 3 * r.report.heartbeat_interval_ms.max(1000)
            };
            let upgraded = rows
                .iter()
                .filter(alive)
                .any(|r| r.report.address == replica.name && r.report.version == target.version);
            if upgraded
                && ready_version(&http, &replica.url).await.as_deref() == Some(&target.version)
            {
                report(Event {
                    replica: replica.name.clone(),
                    phase: "ready",
                    detail: format!("{} answers at {}", target.version, replica.url),
                });
                return Ok(());
            }
            if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                let left: Vec<String> = rows
                    .iter()
                    .filter(alive)
                    .filter(|r| r.report.version != target.version)
                    .map(|r| format!("{} ({})", r.report.address, r.report.version))
                    .collect();
                report(Event {
                    replica: replica.name.clone(),
                    phase: "waiting",
                    detail: format!(
                        "waiting for the orchestrator to replace it with {}; still on other versions: {}",
                        target.version,
                        if left.is_empty() { "none reporting".to_string() } else { left.join(", ") }
                    ),
                });
                last_report = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!(
            "{} did not report version {} within {} s; replace it (the external driver only watches), then run the upgrade again",
            replica.name,
            target.version,
            target.timeout.as_secs()
        )
    }
}
