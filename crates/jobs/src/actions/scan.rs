//! The vulnerability scanner's actions:
//! - `scan` (`{"repository": "...", "digest": "sha256:..."}`): reads an image (each
//!   platform of an index), stores its inventory, and matches the packages the registry
//!   did not hold yet;
//! - `vulndb_import` (`{"path": "..."}`): imports OSV archives or record directories
//!   from the replica's disk as a new database version, then re-matches;
//! - `vulndb_rematch` (`{}`): re-matches every distinct package against the current
//!   database;
//! - `vulndb_update` (`{}`, or `{"url": "...", "ecosystems": [...]}` to override the
//!   configuration): downloads the OSV archives, imports them if anything changed, then
//!   re-matches ([`crate::vulndb_update`]).

use async_trait::async_trait;
use wharf_metastore::scan::{InventoryRow, PackageRow};
use wharf_metastore::MetaStore;
use wharf_oci::{Digest, RepoName};
use wharf_scan::inventory::Inventory;
use wharf_scan::layer::Limits;

use super::Stores;
use crate::scan_image::{scan_image, ImageScan};
use crate::vulndb::{self, Interrupted};
use crate::{Finished, JobContext};

/// Written with each inventory: which scanner read it.
pub const SCANNER_VERSION: &str = concat!("wharf ", env!("CARGO_PKG_VERSION"));

/// An inventory as the store keeps it.
pub fn inventory_row(inventory: &Inventory) -> anyhow::Result<InventoryRow> {
    Ok(InventoryRow {
        status: "scanned".into(),
        os_json: inventory
            .os
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
        scanner_version: SCANNER_VERSION.into(),
        error: None,
        notes_json: serde_json::to_string(&inventory.notes)?,
        packages: inventory
            .packages
            .iter()
            .map(|p| PackageRow {
                ecosystem: p.ecosystem.clone(),
                name: p.name.clone(),
                version: p.version.clone(),
                match_name: p.match_name.clone(),
                match_version: p.match_version.clone(),
                purl: p.purl.clone(),
                location: p.location.clone(),
            })
            .collect(),
    })
}

/// A scan that could not read the image: stored so that it shows as failed, with why.
pub fn failed_row(error: &str) -> InventoryRow {
    InventoryRow {
        status: "failed".into(),
        os_json: None,
        scanner_version: SCANNER_VERSION.into(),
        error: Some(error.into()),
        notes_json: "[]".into(),
        packages: Vec::new(),
    }
}

/// What storing one image's scan gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScan {
    pub manifest: Digest,
    pub platform: Option<String>,
    /// `None` for a failed scan.
    pub packages: Option<usize>,
    pub new_packages: usize,
    pub findings: usize,
    pub error: Option<String>,
}

impl StoredScan {
    /// The job log's line for it.
    pub fn line(&self) -> String {
        let what = match &self.platform {
            Some(p) => format!("{p} ({})", self.manifest),
            None => self.manifest.to_string(),
        };
        match (&self.error, self.packages) {
            (Some(e), _) => format!("{what}: the scan failed: {e}"),
            (None, n) => format!(
                "{what}: {} packages ({} new to the registry), {} findings",
                n.unwrap_or(0),
                self.new_packages,
                self.findings
            ),
        }
    }
}

/// Stores one image's scan and matches its new packages.
pub async fn store_scan(meta: &dyn MetaStore, scan: &ImageScan) -> anyhow::Result<StoredScan> {
    let digest = scan.manifest.to_string();
    let (row, packages, error) = match &scan.outcome {
        Ok(inventory) => (
            inventory_row(inventory)?,
            Some(inventory.packages.len()),
            None,
        ),
        Err(e) => (failed_row(e), None, Some(e.clone())),
    };
    let stored = meta.store_inventory(&digest, &row).await?;
    vulndb::match_new_packages(meta, &stored.new_packages).await?;
    let findings = meta.findings(&digest).await?.len();
    Ok(StoredScan {
        manifest: scan.manifest.clone(),
        platform: scan.platform.clone(),
        packages,
        new_packages: stored.new_packages.len(),
        findings,
        error,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanParams {
    repository: String,
    digest: String,
}

pub struct Scan {
    stores: Stores,
}

impl Scan {
    pub fn new(stores: Stores) -> Self {
        Scan { stores }
    }
}

#[async_trait]
impl crate::Action for Scan {
    fn name(&self) -> &'static str {
        "scan"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: ScanParams = ctx.params()?;
        let repo: RepoName = params
            .repository
            .parse()
            .map_err(|e| anyhow::anyhow!("repository {:?}: {e}", params.repository))?;
        let digest: Digest = params
            .digest
            .parse()
            .map_err(|e| anyhow::anyhow!("digest {:?}: {e}", params.digest))?;
        let meta = self.stores.meta.as_ref();
        let scans = scan_image(
            meta,
            self.stores.blobs.clone(),
            &repo,
            &digest,
            &Limits::default(),
        )
        .await?;
        if scans.is_empty() {
            return Ok(Finished::Done(format!(
                "{repo}@{digest} is not an image (an artifact): nothing to scan"
            )));
        }
        let (mut failed, mut findings) = (0usize, 0usize);
        for (i, scan) in scans.iter().enumerate() {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(
                    why,
                    format!("{i} of {} images stored", scans.len()),
                ));
            }
            let stored = store_scan(meta, scan).await?;
            ctx.log(stored.line()).await;
            failed += usize::from(stored.error.is_some());
            findings += stored.findings;
        }
        Ok(Finished::Done(format!(
            "{repo}@{digest}: {} images scanned, {failed} failed, {findings} findings",
            scans.len()
        )))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    path: String,
}

pub struct VulndbImport {
    stores: Stores,
}

impl VulndbImport {
    pub fn new(stores: Stores) -> Self {
        VulndbImport { stores }
    }
}

/// An interruption as the worker wants it; any other error fails the attempt.
fn stopped_or(e: anyhow::Error, summary: &str) -> anyhow::Result<Finished> {
    match e.downcast_ref::<Interrupted>() {
        Some(Interrupted(why)) => Ok(Finished::Stopped(*why, summary.into())),
        None => Err(e),
    }
}

#[async_trait]
impl crate::Action for VulndbImport {
    fn name(&self) -> &'static str {
        "vulndb_import"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: ImportParams = ctx.params()?;
        let path = std::path::PathBuf::from(&params.path);
        let archives = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || vulndb::archives_in(&path)).await??
        };
        let meta = self.stores.meta.as_ref();
        let source = format!("file:{}", path.display());
        let imported = match vulndb::import_archives(meta, &source, &archives, ctx).await {
            Ok(s) => s,
            Err(e) => return stopped_or(e, "import abandoned; the current database stays"),
        };
        let rematched = match vulndb::rematch(meta, ctx).await {
            Ok(s) => s,
            Err(e) => {
                return stopped_or(
                    e,
                    &format!(
                        "version {} imported; the re-match stopped (run vulndb_rematch)",
                        imported.version_id
                    ),
                )
            }
        };
        Ok(Finished::Done(format!(
            "version {} imported ({} advisories); re-match: {} packages, +{} -{} matches, {} newly affected images",
            imported.version_id,
            imported.records,
            rematched.packages,
            rematched.added,
            rematched.removed,
            rematched.newly_affected_images
        )))
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RematchParams {}

pub struct VulndbRematch {
    stores: Stores,
}

impl VulndbRematch {
    pub fn new(stores: Stores) -> Self {
        VulndbRematch { stores }
    }
}

#[async_trait]
impl crate::Action for VulndbRematch {
    fn name(&self) -> &'static str {
        "vulndb_rematch"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let _: RematchParams = ctx.params()?;
        match vulndb::rematch(self.stores.meta.as_ref(), ctx).await {
            Ok(s) => Ok(Finished::Done(format!(
                "{} packages, +{} -{} matches, {} newly affected images",
                s.packages, s.added, s.removed, s.newly_affected_images
            ))),
            Err(e) => stopped_or(e, "re-match stopped; run it again"),
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    url: Option<String>,
    ecosystems: Option<Vec<String>>,
}

pub struct VulndbUpdate {
    stores: Stores,
}

impl VulndbUpdate {
    pub fn new(stores: Stores) -> Self {
        VulndbUpdate { stores }
    }
}

#[async_trait]
impl crate::Action for VulndbUpdate {
    fn name(&self) -> &'static str {
        "vulndb_update"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: UpdateParams = ctx.params()?;
        let settings = &self.stores.vulndb;
        let Some(url) = params.url.or_else(|| settings.url.clone()) else {
            anyhow::bail!(
                "no vulnerability database URL: set vulndb_url in the configuration (or give {{\"url\": ...}}); an air-gapped registry imports with vulndb_import"
            );
        };
        let mut config = crate::vulndb_fetch::FetchConfig::new(
            url,
            params
                .ecosystems
                .unwrap_or_else(|| settings.ecosystems.clone()),
        );
        config.proxy = settings.proxy.clone();
        let meta = self.stores.meta.as_ref();
        match crate::vulndb_update::update(meta, &config, ctx).await {
            Ok(outcome) => {
                let summary = outcome.summary();
                ctx.log(summary.clone()).await;
                Ok(Finished::Done(summary))
            }
            Err(e) => stopped_or(e, "update abandoned; the current database stays"),
        }
    }
}
