//! Runtime drivers for rolling upgrades (docs/upgrading.md, "Rolling upgrades").
//!
//! The upgrade command replaces replicas one at a time through a [`Driver`]:
//! - [`docker::DockerDriver`] finds the replica containers by label, and recreates each
//!   from the new image with the same configuration after draining the old one;
//! - [`external::ExternalDriver`] leaves the replacing to an orchestrator (Kubernetes,
//!   systemd, a person) and waits until each replica reports the new version.
//!
//! Every driver operation is idempotent: [`Driver::converge`] brings one replica to the
//! target from whatever state an interrupted earlier run left it in.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod docker;
pub mod external;

/// One replica, as found before the upgrade touched anything; saved in the upgrade
/// journal so that an interrupted upgrade, or a rollback, can recreate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    /// Stable name: the container's name (docker), the replica's address (external).
    pub name: String,
    /// Where it answers HTTP (readiness and version are asked there).
    pub url: String,
    /// The image it ran (docker), or the version it reported (external).
    pub image: String,
    /// Everything needed to recreate it (docker: the container's configuration).
    pub saved: serde_json::Value,
}

/// Where one replica's replacement is; reported as it happens.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub replica: String,
    /// `draining`, `drained`, `removed`, `created`, `started`, `waiting`,
    /// `not_running`, `ready`.
    pub phase: &'static str,
    pub detail: String,
}

/// What a replica must become.
#[derive(Debug, Clone)]
pub struct Target {
    /// The image to run (docker; ignored by external).
    pub image: String,
    /// The version it must report before the next replica is touched.
    pub version: String,
    /// How long a replica may take to report ready with `version`.
    pub timeout: Duration,
    /// How long a draining replica may take to finish its requests before it is killed.
    pub drain: Duration,
}

#[async_trait]
pub trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// The replicas to upgrade, in the order to replace them.
    async fn discover(&self) -> anyhow::Result<Vec<Replica>>;
    /// Brings `replica` to `target`, whatever state it is in, and returns once it is
    /// ready and reports the target version; fails after `target.timeout`.
    async fn converge(
        &self,
        replica: &Replica,
        target: &Target,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> anyhow::Result<()>;

    /// Whether `target` can be started at all, before anything changes: for the docker
    /// driver, that its image is on the Engine. By default nothing to check (an
    /// orchestrator brings its own images).
    async fn check_target(&self, _target: &Target) -> anyhow::Result<()> {
        Ok(())
    }

    /// Checks again, after the pause that lets the load balancer route to it, that the
    /// replica still runs and answers ready with the target version. One that went down
    /// in the meantime is reported and waited for (until `target.timeout`), as one that
    /// stops while starting is; the next replica is not touched before. By default
    /// nothing: where an orchestrator restarts replicas (external), it owns that.
    async fn confirm(
        &self,
        _replica: &Replica,
        _target: &Target,
        _report: &(dyn Fn(Event) + Send + Sync),
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Asks a replica whether it is ready and which version it runs: `Some(version)` when
/// `/readyz` answers 200.
pub async fn ready_version(http: &reqwest::Client, url: &str) -> Option<String> {
    let base = url.trim_end_matches('/');
    let ready = http.get(format!("{base}/readyz")).send().await.ok()?;
    if !ready.status().is_success() {
        return None;
    }
    let v: serde_json::Value = http
        .get(format!("{base}/api/v0/meta/version"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["version"].as_str().map(str::to_string)
}

/// An HTTP client for readiness probes: short timeouts, no connection reuse (a replica
/// being replaced closes its connections).
pub fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}
