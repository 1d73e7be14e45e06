//! The `docker` driver: replica containers on one Docker Engine, found by a label.
//!
//! For each replica: its configuration is saved (before any replica is touched), then
//! the old container is drained (`docker stop`: SIGTERM, the replica turns not-ready,
//! stops accepting and finishes what it serves; SIGKILL after the drain timeout) and
//! removed, a container with the same name and configuration is created from the new
//! image and started, and the driver waits until it answers ready with the new version.
//! Each of those is decided from the container's state as the Engine reports it, so a
//! run killed at any point continues where it was.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use bollard::container::{
    Config, CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerConfig, ContainerInspectResponse, HostConfig};
use bollard::Docker;

use crate::{probe_client, ready_version, Driver, Event, Replica, Target};

/// The label whose value is the URL at which a replica answers (e.g.
/// `http://127.0.0.1:5001`); every replica container needs it.
pub const URL_LABEL: &str = "wharf.url";

pub struct DockerDriver {
    docker: Docker,
    /// `KEY` or `KEY=VALUE`: which containers are this cluster's replicas.
    label: String,
    /// Replaced last (the replica whose node runs the upgrade command).
    last: Option<String>,
    /// Whether finding no container is fine (content caches are optional).
    optional: bool,
}

/// What is saved of a container to recreate it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    config: ContainerConfig,
    host_config: Option<HostConfig>,
}

fn not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerDriver {
    /// Connects to the Engine (`DOCKER_HOST`, or the local socket).
    pub async fn connect(label: &str, last: Option<String>) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("cannot reach the Docker Engine (is /var/run/docker.sock mounted?)")?
            .negotiate_version()
            .await
            .context("cannot reach the Docker Engine (is /var/run/docker.sock mounted?)")?;
        Ok(DockerDriver {
            docker,
            label: label.to_string(),
            last,
            optional: false,
        })
    }

    /// Finding no container with the label is not an error (content caches: a cluster
    /// may have none).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    async fn inspect(&self, name: &str) -> anyhow::Result<Option<ContainerInspectResponse>> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting container {name}")),
        }
    }

    /// What a replica was started with, minus what its image supplies anyway (so the
    /// new image's own defaults apply to the new container).
    async fn saved_config(&self, c: &ContainerInspectResponse) -> anyhow::Result<Saved> {
        let mut config = c.config.clone().unwrap_or_default();
        let image = config.image.clone().unwrap_or_default();
        if let Ok(img) = self.docker.inspect_image(&image).await {
            if let Some(defaults) = img.config {
                let image_env = defaults.env.unwrap_or_default();
                config.env = config
                    .env
                    .map(|env| env.into_iter().filter(|e| !image_env.contains(e)).collect());
                if config.cmd == defaults.cmd {
                    config.cmd = None;
                }
                if config.entrypoint == defaults.entrypoint {
                    config.entrypoint = None;
                }
                if config.exposed_ports == defaults.exposed_ports {
                    config.exposed_ports = None;
                }
                if config.user == defaults.user {
                    config.user = None;
                }
            }
        }
        // The Engine names the new container's host.
        config.hostname = None;
        config.domainname = None;
        Ok(Saved {
            config,
            host_config: c.host_config.clone(),
        })
    }

    async fn create(&self, replica: &Replica, image: &str) -> anyhow::Result<()> {
        let saved: Saved = serde_json::from_value(replica.saved.clone())
            .with_context(|| format!("the saved configuration of {}", replica.name))?;
        let mut config: Config<String> = saved.config.into();
        config.image = Some(image.to_string());
        config.host_config = saved.host_config;
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: replica.name.clone(),
                    platform: None,
                }),
                config,
            )
            .await
            .with_context(|| format!("creating {} from {image}", replica.name))?;
        Ok(())
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn discover(&self) -> anyhow::Result<Vec<Replica>> {
        let filters = HashMap::from([("label".to_string(), vec![self.label.clone()])]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .context("listing containers")?;
        let mut replicas = Vec::new();
        for summary in found {
            let Some(id) = summary.id else { continue };
            let Some(c) = self.inspect(&id).await? else {
                continue;
            };
            let name = c
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            let config = c.config.clone().unwrap_or_default();
            let Some(url) = config
                .labels
                .as_ref()
                .and_then(|l| l.get(URL_LABEL))
                .cloned()
            else {
                bail!(
                    "container {name} has no {URL_LABEL} label: the docker driver needs the URL at which each \
                     replica answers (e.g. --label {URL_LABEL}=http://127.0.0.1:5001)"
                );
            };
            let saved = self.saved_config(&c).await?;
            replicas.push(Replica {
                name,
                url,
                image: config.image.unwrap_or_default(),
                saved: serde_json::to_value(&saved)?,
            });
        }
        if replicas.is_empty() && self.optional {
            return Ok(replicas);
        }
        if replicas.is_empty() {
            bail!(
                "no container carries the label {}: nothing to upgrade (label the replicas, or pass --label)",
                self.label
            );
        }
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(last) = &self.last {
            let Some(i) = replicas.iter().position(|r| &r.name == last) else {
                bail!(
                    "--existing-replica-id {last}: no replica container of that name (found: {})",
                    replicas
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let r = replicas.remove(i);
            replicas.push(r);
        }
        Ok(replicas)
    }

    async fn confirm(
        &self,
        replica: &Replica,
        target: &Target,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> anyhow::Result<()> {
        let say = |phase: &'static str, detail: String| {
            report(Event {
                replica: replica.name.clone(),
                phase,
                detail,
            })
        };
        wait_ready(self, replica, target, &probe_client(), &say).await
    }

    async fn check_target(&self, target: &Target) -> anyhow::Result<()> {
        match self.docker.inspect_image(&target.image).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => bail!(
                "the image {} is not on this Docker Engine: pull or load it first (`docker pull {}`, or `docker load`); nothing was changed",
                target.image,
                target.image
            ),
            Err(e) => Err(e).with_context(|| format!("inspecting the image {}", target.image)),
        }
    }

    async fn converge(
        &self,
        replica: &Replica,
        target: &Target,
        report: &(dyn Fn(Event) + Send + Sync),
    ) -> anyhow::Result<()> {
        let say = |phase: &'static str, detail: String| {
            report(Event {
                replica: replica.name.clone(),
                phase,
                detail,
            })
        };
        let http = probe_client();
        // Each pass looks at the container and takes one step towards the target.
        for _ in 0..8 {
            let Some(c) = self.inspect(&replica.name).await? else {
                self.create(replica, &target.image).await?;
                say("created", format!("from {}", target.image));
                continue;
            };
            let image = c
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            if image != target.image {
                if running {
                    say(
                        "draining",
                        format!(
                            "stopping {image}: no new requests, in-flight ones finish (up to {} s)",
                            target.drain.as_secs()
                        ),
                    );
                    self.docker
                        .stop_container(
                            &replica.name,
                            Some(StopContainerOptions {
                                t: target.drain.as_secs() as i64,
                            }),
                        )
                        .await
                        .with_context(|| format!("stopping {}", replica.name))?;
                    say("drained", format!("{image} stopped"));
                }
                self.docker
                    .remove_container(
                        &replica.name,
                        Some(RemoveContainerOptions {
                            force: true,
                            ..Default::default()
                        }),
                    )
                    .await
                    .or_else(|e| if not_found(&e) { Ok(()) } else { Err(e) })
                    .with_context(|| format!("removing {}", replica.name))?;
                say("removed", format!("the {image} container"));
                continue;
            }
            if !running {
                self.docker
                    .start_container::<String>(&replica.name, None)
                    .await
                    .with_context(|| format!("starting {}", replica.name))?;
                say("started", format!("{} at {}", target.image, replica.url));
            }
            return wait_ready(self, replica, target, &http, &say).await;
        }
        bail!(
            "{}: the container keeps changing under the upgrade; is something else managing it?",
            replica.name
        )
    }
}

/// Waits until the replica answers ready with the target version. A container that
/// stops meanwhile is reported and waited for (it may be restarted, by its restart
/// policy or by hand) until the timeout.
async fn wait_ready(
    driver: &DockerDriver,
    replica: &Replica,
    target: &Target,
    http: &reqwest::Client,
    say: &(dyn Fn(&'static str, String) + Send + Sync),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut down_reported = false;
    let mut last_version = None;
    while start.elapsed() < target.timeout {
        let state = driver
            .inspect(&replica.name)
            .await?
            .and_then(|c| c.state)
            .unwrap_or_default();
        if state.running != Some(true) {
            if !down_reported {
                say(
                    "not_running",
                    format!(
                        "the container is {} (exit code {}); waiting up to {} s for it to run again",
                        state.status.map(|s| s.to_string()).unwrap_or_else(|| "gone".into()),
                        state.exit_code.unwrap_or_default(),
                        target.timeout.saturating_sub(start.elapsed()).as_secs()
                    ),
                );
                down_reported = true;
            }
        } else {
            if down_reported {
                say("waiting", "running again".into());
                down_reported = false;
            }
            match ready_version(http, &replica.url).await {
                Some(v) if v == target.version => {
                    say("ready", format!("{v} answers at {}", replica.url));
                    return Ok(());
                }
                other => last_version = other.or(last_version),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "{} did not answer ready with version {} at {} within {} s (last seen: {}); run the upgrade again to keep waiting, or `wharf upgrade rollback`",
        replica.name,
        target.version,
        replica.url,
        target.timeout.as_secs(),
        last_version.map_or("no answer".to_string(), |v| format!("version {v}"))
    )
}
