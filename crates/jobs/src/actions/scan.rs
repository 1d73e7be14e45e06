//! The vulnerability scanner's actions:
//! - `scan` (`{"repository": "...", "digest": "sha256:..."}`): reads an image (each
//!   platform of an index), stores its inventory, and matches the packages the registry
//!   did not hold yet;
//! - `vulndb_import` (`{"path": "..."}`): imports OSV archives or record directories
//!   from the replica's disk as a new database version, then re-matches; or
//!   (`{"blob": "sha256:...", "name": "osv.zip"}`) a zip archive uploaded into the blob
//!   store (`POST /api/v0/vulndb`), which every replica can read;
//! - `scan_all` (`{"all": false}`): queues a `scan` job for every tagged image whose
//!   images have no inventory yet (every tagged image with `"all": true`), page by
//!   page;
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

/// Whether `repo`'s policy (else the registry default) asks scans to attach SBOMs.
async fn attach_sbom(meta: &dyn MetaStore, repo: &RepoName) -> anyhow::Result<bool> {
    Ok(match meta.scan_policy(repo.as_str()).await? {
        Some(p) => p.policy.attach_sbom,
        None => meta
            .scan_policy("")
            .await?
            .is_some_and(|p| p.policy.attach_sbom),
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
        // Pushed, then deleted (or collected) before its scan came up: nothing to do,
        // and no reason to fail and retry.
        let present = meta
            .get_manifest(&repo, &wharf_oci::Reference::Digest(digest.clone()), false)
            .await?;
        if present.is_none() {
            return Ok(Finished::Done(format!(
                "{repo}@{digest} is no longer in the repository: nothing to scan"
            )));
        }
        fetch_proxied_content(&self.stores, &repo, &digest).await?;
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
        let attach = attach_sbom(meta, &repo).await?;
        let (mut failed, mut findings) = (0usize, 0usize);
        for (i, scan) in scans.iter().enumerate() {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(
                    why,
                    format!("{i} of {} images stored", scans.len()),
                ));
            }
            // The SBOM an earlier scan attached: storing this scan forgets it.
            let previous_sbom = match attach {
                true => meta
                    .inventory(&scan.manifest.to_string())
                    .await?
                    .and_then(|i| i.sbom_digest),
                false => None,
            };
            let stored = store_scan(meta, scan).await?;
            ctx.log(stored.line()).await;
            failed += usize::from(stored.error.is_some());
            findings += stored.findings;
            if attach && stored.error.is_none() {
                let referrer = crate::sbom::attach(
                    self.stores.meta.clone(),
                    self.stores.blobs.clone(),
                    &self.stores.registry_address,
                    &repo,
                    &scan.manifest,
                    previous_sbom,
                )
                .await?;
                if let Some(d) = referrer {
                    ctx.log(format!(
                        "{}: SBOM attached to {repo} as referrer {d}",
                        scan.manifest
                    ))
                    .await;
                }
            }
        }
        Ok(Finished::Done(format!(
            "{repo}@{digest}: {} images scanned, {failed} failed, {findings} findings",
            scans.len()
        )))
    }
}

/// Where to import from: a path on the replica's disk, or a blob (with the uploaded
/// file's name, which names the ecosystem as for a path: `PyPI.zip`, `osv-PyPI.zip`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    blob: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// An uploaded archive's name as a safe file name ending in `.zip`.
fn upload_file_name(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect::<String>();
    let base = base.trim_start_matches('.');
    let base = if base.is_empty() { "upload" } else { base };
    if base.to_ascii_lowercase().ends_with(".zip") {
        base.to_string()
    } else {
        format!("{base}.zip")
    }
}

/// Copies the blob `digest` into `dir/<name>`.
async fn blob_to_file(
    blobs: &dyn wharf_blobstore::BlobStore,
    digest: &Digest,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let mut stream = blobs
        .read(digest, None)
        .await
        .map_err(|e| anyhow::anyhow!("the uploaded archive {digest}: {e}"))?;
    let mut file = tokio::fs::File::create(path).await?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    Ok(())
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
        match (&params.path, &params.blob) {
            (Some(path), None) => {
                let path = std::path::PathBuf::from(path);
                let source = format!("file:{}", path.display());
                self.import(ctx, &path, &source).await
            }
            (None, Some(blob)) => {
                let digest: Digest = blob
                    .parse()
                    .map_err(|e| anyhow::anyhow!("blob {blob:?}: {e}"))?;
                // Copied to a temporary file, removed when the import ends.
                let tmp = tempfile::tempdir()?;
                let name = upload_file_name(params.name.as_deref());
                let path = tmp.path().join(&name);
                blob_to_file(self.stores.blobs.as_ref(), &digest, &path).await?;
                let result = self.import(ctx, &path, &format!("upload:{name}")).await;
                // The upload is not a registry blob (no repository links it, so garbage
                // collection never sees it): once imported or refused, it goes, unless
                // it happens to be a blob the registry holds. An interrupted import
                // keeps it for the job's next attempt.
                if !matches!(result, Ok(Finished::Stopped(..)))
                    && self.stores.meta.blob_size(&digest).await?.is_none()
                {
                    if let Err(e) = self.stores.blobs.delete(&digest).await {
                        ctx.log(format!(
                            "the uploaded archive {digest} could not be removed: {e}"
                        ))
                        .await;
                    }
                }
                result
            }
            _ => anyhow::bail!("give either \"path\" or \"blob\" (with \"name\")"),
        }
    }
}

impl VulndbImport {
    async fn import(
        &self,
        ctx: &JobContext,
        path: &std::path::Path,
        source: &str,
    ) -> anyhow::Result<Finished> {
        let archives = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || vulndb::archives_in(&path)).await??
        };
        let meta = self.stores.meta.as_ref();
        let imported = match vulndb::import_archives(meta, source, &archives, ctx).await {
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
struct ScanAllParams {
    /// Every tagged image, not only those without an inventory.
    #[serde(default)]
    all: bool,
}

/// Repositories and tags read per page.
const SCAN_ALL_PAGE: usize = 200;

pub struct ScanAll {
    stores: Stores,
}

impl ScanAll {
    pub fn new(stores: Stores) -> Self {
        ScanAll { stores }
    }
}

#[async_trait]
impl crate::Action for ScanAll {
    fn name(&self) -> &'static str {
        "scan_all"
    }

    /// Pages through repositories and their tags (memory: one page of each, and the
    /// digests already queued for the repository at hand), queueing one `scan` job per
    /// tagged manifest that needs one.
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let params: ScanAllParams = ctx.params()?;
        let meta = self.stores.meta.as_ref();
        let (mut queued, mut skipped, mut repos) = (0u64, 0u64, 0u64);
        let mut after_repo: Option<String> = None;
        loop {
            let page = meta
                .list_repositories(after_repo.as_deref(), SCAN_ALL_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after_repo = Some(last.as_str().to_string());
            for repo in &page {
                repos += 1;
                let mut seen = std::collections::HashSet::new();
                let mut after_tag = String::new();
                loop {
                    if let Some(why) = ctx.should_stop() {
                        return Ok(Finished::Stopped(
                            why,
                            format!("{queued} scans queued, stopped in {repo}"),
                        ));
                    }
                    let tags = meta
                        .tag_details(repo.as_str(), Some(&after_tag), SCAN_ALL_PAGE)
                        .await?
                        .unwrap_or_default();
                    let Some(last) = tags.last() else { break };
                    after_tag = last.name.clone();
                    let mut wanted = Vec::new();
                    for t in &tags {
                        let Ok(digest) = t.digest.parse::<Digest>() else {
                            continue;
                        };
                        if !seen.insert(digest.clone()) {
                            continue;
                        }
                        let images = match crate::scan_image::images_in(meta, repo, &digest).await {
                            Ok(images) => images,
                            Err(e) => {
                                ctx.log(format!("{repo}@{digest}: skipped: {e:#}")).await;
                                continue;
                            }
                        };
                        if images.is_empty() {
                            continue; // an artifact
                        }
                        wanted.push((
                            digest,
                            images
                                .into_iter()
                                .map(|(d, _, _)| d.to_string())
                                .collect::<Vec<_>>(),
                        ));
                    }
                    let scanned: std::collections::HashSet<String> = if params.all {
                        Default::default()
                    } else {
                        let all: Vec<String> =
                            wanted.iter().flat_map(|(_, i)| i.iter().cloned()).collect();
                        meta.summaries(&all)
                            .await?
                            .into_iter()
                            .map(|(d, _)| d)
                            .collect()
                    };
                    for (digest, images) in wanted {
                        if images.iter().all(|i| scanned.contains(i)) && !params.all {
                            skipped += 1;
                            continue;
                        }
                        let job_params = serde_json::json!({
                            "repository": repo.as_str(),
                            "digest": digest.to_string(),
                        })
                        .to_string();
                        if params.all {
                            let job = crate::enqueue(meta, "scan", &job_params).await?;
                            ctx.log(format!("{repo}@{digest}: scan queued as job {}", job.id))
                                .await;
                        } else {
                            // With the push's dedupe: an image whose scan a push (or an
                            // earlier run) queued is not queued twice.
                            let covers = images.iter().filter_map(|i| i.parse().ok()).collect();
                            let scan = wharf_metastore::ScanOnPush {
                                params: job_params,
                                covers,
                            };
                            if !meta.queue_scan(&scan).await? {
                                skipped += 1;
                                continue;
                            }
                            ctx.log(format!("{repo}@{digest}: scan queued")).await;
                        }
                        queued += 1;
                    }
                    if tags.len() < SCAN_ALL_PAGE {
                        break;
                    }
                }
            }
            if page.len() < SCAN_ALL_PAGE {
                break;
            }
        }
        Ok(Finished::Done(format!(
            "{queued} scans queued over {repos} repositories; {skipped} images already scanned or queued"
        )))
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

/// A pull-through proxy stores an image's manifest before any client asks for its
/// layers (or an index before its platforms' manifests): the scan fetches from the
/// upstream what is still missing, as a pull would, so that it reads the whole image.
/// Nothing is done for other repositories. An upstream that cannot answer fails the
/// attempt (retried), rather than storing a scan of an image it could not read.
async fn fetch_proxied_content(
    stores: &Stores,
    repo: &RepoName,
    digest: &Digest,
) -> anyhow::Result<()> {
    use wharf_oci::{Manifest, Reference};
    let meta = stores.meta.as_ref();
    // An older schema (a rollback under way) has no proxies.
    let Ok(proxies) = meta.proxies().await else {
        return Ok(());
    };
    if !proxies.iter().any(|p| repo.as_str().starts_with(&p.prefix)) {
        return Ok(());
    }
    let registry = wharf_registry::Registry::new(
        stores.meta.clone(),
        stores.blobs.clone(),
        wharf_registry::Limits::default(),
    );
    let proxy = wharf_proxy::Proxies::new(registry);
    let mut pending = vec![digest.clone()];
    // Bounded: an index names its platforms' manifests, which name no further ones.
    for _ in 0..2 {
        let mut next = Vec::new();
        for d in pending.drain(..) {
            let reference = Reference::Digest(d.clone());
            proxy.prepare_manifest(repo, &reference).await?;
            let Some(stored) = meta.get_manifest(repo, &reference, true).await? else {
                continue;
            };
            let Ok(m) = Manifest::parse(
                Some(&stored.media_type),
                &stored.payload.unwrap_or_default(),
            ) else {
                continue;
            };
            for blob in m.required_blobs() {
                proxy.prepare_blob(repo, blob, false).await?;
            }
            next.extend(m.required_manifests().cloned());
        }
        pending = next;
    }
    Ok(())
}
