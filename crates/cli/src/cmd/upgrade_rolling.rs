//! The arguments of a rolling upgrade (`wharf upgrade apply --driver docker|external`)
//! and of `wharf upgrade rollback`; wharf_upgrade_engine::rolling does the work.

use std::time::Duration;

use wharf_upgrade_engine::{DriverKind, Images, RollingOptions};

/// How the replicas are replaced, and how the result is verified.
#[derive(clap::Args, Clone, Debug)]
pub struct RollingArgs {
    /// How replicas are replaced: `local` (one stopped node: no replica to replace),
    /// `docker` (recreates the replica containers on this Docker Engine from --image),
    /// `external` (an orchestrator replaces them; wharf waits for each to report the
    /// new version)
    #[arg(long, default_value = "local", value_parser = ["local", "docker", "external"])]
    pub driver: String,
    /// docker: the image of a release the upgrade stops at. IMAGE alone is this
    /// release's (registry.example.com/wharf:1.2.0); VERSION=IMAGE is another stop's
    /// (1.1.0=registry.example.com/wharf:1.1.0). Repeat it for each stop of the plan
    /// (`wharf upgrade plan` lists them), or use --image-template. Every image must be
    /// on the Engine before anything starts
    #[arg(long, value_name = "[VERSION=]IMAGE")]
    pub image: Vec<String>,
    /// docker: the image of any stop of the plan that --image does not name, with
    /// {version} replaced by the release, e.g. registry.example.com/wharf:{version}
    #[arg(long, value_name = "TEMPLATE")]
    pub image_template: Option<String>,
    /// docker: the label that marks this cluster's replica containers (KEY or
    /// KEY=VALUE); each also needs wharf.url=URL, where it answers
    #[arg(long, default_value = "wharf.replica", value_name = "LABEL")]
    pub label: String,
    /// docker: the label that marks this cluster's content-cache containers (each also
    /// needs wharf.url=URL); they are replaced after the replicas, before finalising
    #[arg(long, default_value = "wharf.cache", value_name = "LABEL")]
    pub cache_label: String,
    /// docker: the replica (container name) on whose node this command runs, replaced
    /// last
    #[arg(long, value_name = "NAME")]
    pub existing_replica_id: Option<String>,
    /// How long a new replica may take to answer ready with the new version
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub replica_timeout_secs: u64,
    /// How long a draining replica may take to finish its requests before it is killed
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain_secs: u64,
    /// After a replica is ready on the new version, wait this long before draining the
    /// next: a load balancer that marked the replica down while it was replaced must
    /// have put it back (longer than nginx's fail_timeout, or a balancer's health-check
    /// interval times its healthy threshold)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub settle_secs: u64,
    /// The registry as clients reach it (the load balancer), for the verify step
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// For the verify step: sign in as this user, password (or access token) in the
    /// WHARF_PASSWORD environment variable
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,
}

impl RollingArgs {
    /// The engine's options; with `verifying` (apply), the verify step's password from
    /// WHARF_PASSWORD.
    pub fn options(&self, verifying: bool) -> anyhow::Result<RollingOptions> {
        let driver = DriverKind::parse(&self.driver)?;
        let mut images = Images {
            template: self.image_template.clone(),
            ..Images::default()
        };
        for value in &self.image {
            images.add(value)?;
        }
        if let Some(t) = &images.template {
            if !t.contains("{version}") {
                anyhow::bail!("--image-template {t:?} has no {{version}} in it");
            }
        }
        let creds = match &self.username {
            Some(user) if verifying && self.url.is_some() => Some((
                user.clone(),
                super::upgrade_verify::password(user, false, false)?,
            )),
            _ => None,
        };
        Ok(RollingOptions {
            driver,
            images,
            label: self.label.clone(),
            cache_label: self.cache_label.clone(),
            existing_replica_id: self.existing_replica_id.clone(),
            replica_timeout: Duration::from_secs(self.replica_timeout_secs),
            drain: Duration::from_secs(self.drain_secs),
            settle: Duration::from_secs(self.settle_secs),
            url: self.url.clone(),
            creds,
        })
    }
}
