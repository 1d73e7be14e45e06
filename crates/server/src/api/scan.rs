//! Vulnerability scanning under `/api/v0`: an image's findings and SBOM, scanning on
//! demand, and the advisory database.
//!
//! - `GET <name>/_vulnerabilities/<reference>` (pull access): status, OS, counts and
//!   findings of each image the reference stands for (each platform of an index);
//! - `GET <name>/_sbom/<reference>[?platform=os/arch]` (pull access): the SPDX 2.3 JSON
//!   document of the image's inventory;
//! - `POST <name>/_scan/<reference>` (push access): queues a `scan` job;
//! - `POST /scanning/rescan_all[?all=true]` (administrators): queues a `scan_all` job;
//! - `GET /vulndb` (signed in): the database's versions and recent changes;
//! - `POST /vulndb[?name=PyPI.zip]` (administrators): an archive into the blob store,
//!   then a `vulndb_import` job that reads it from there.
//!
//! The `<name>/_…` forms are hand-routed by `repos.rs` ([`get`], [`post`]); what the
//! report holds is gathered by [`report`], which the web UI shows too.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use utoipa::{IntoParams, ToSchema};
use wharf_auth::{Principal, RepoAccess};
use wharf_metastore::jobs::{Job, NewJob};
use wharf_metastore::scan::{FindingRow, VulndbVersion};
use wharf_metastore::MetaStore;
use wharf_oci::{Digest, Reference, RepoName};

use super::jobs::{job_view, JobView};
use super::*;

/// The largest database archive `POST /vulndb` takes (osv.dev's largest ecosystem
/// archive is a few hundred MiB).
pub const UPLOAD_LIMIT: u64 = 2 << 30;

/// Where osv.dev shows an advisory.
pub fn osv_link(id: &str) -> String {
    format!(
        "https://osv.dev/vulnerability/{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )
}

// --- the report, shared with the web UI ---

/// Findings per severity.
#[derive(Serialize, ToSchema, Clone, Default, Debug)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

impl SeverityCounts {
    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }

    /// The non-zero counts, most severe first: `[("critical", 2), ("high", 5)]`.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("critical", self.critical),
            ("high", self.high),
            ("medium", self.medium),
            ("low", self.low),
            ("unknown", self.unknown),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// One vulnerability of an image: an installed package an advisory affects.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct Finding {
    /// The advisory's id, e.g. `PYSEC-2021-142` or `GHSA-…`.
    pub advisory_id: String,
    /// Other ids of the same vulnerability, such as CVE ids.
    pub aliases: Vec<String>,
    /// `critical`, `high`, `medium`, `low` or `unknown`.
    pub severity: String,
    /// The highest CVSS base score among the advisory's vectors.
    pub score: Option<f64>,
    pub summary: String,
    pub package: String,
    /// The OSV ecosystem, with the release for OS packages (`Debian:12`).
    pub ecosystem: String,
    pub installed_version: String,
    /// The first version that fixes it, when the advisory names one.
    pub fixed_version: Option<String>,
    pub purl: String,
    /// The advisory on osv.dev.
    pub url: String,
}

impl From<FindingRow> for Finding {
    fn from(f: FindingRow) -> Self {
        Finding {
            url: osv_link(&f.advisory_id),
            advisory_id: f.advisory_id,
            aliases: f.aliases,
            severity: f.severity,
            score: f.score,
            summary: f.summary,
            package: f.name,
            ecosystem: f.ecosystem,
            installed_version: f.version,
            fixed_version: f.fixed,
            purl: f.purl,
        }
    }
}

/// One image's scan: of the image itself, or of one platform of an index.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct ImageVulnerabilities {
    /// `os/architecture[/variant]` for a platform of an index.
    pub platform: Option<String>,
    /// The image manifest's digest.
    pub digest: String,
    /// `not_scanned`, `scanned` or `failed`.
    pub status: String,
    /// Why the scan failed.
    pub error: Option<String>,
    /// The OS as os-release names it, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os: Option<String>,
    /// When the image was read (ms since the Unix epoch).
    pub scanned_at_ms: Option<i64>,
    pub scanner_version: Option<String>,
    /// The database version the findings were matched against.
    pub db_version: Option<i64>,
    /// The packages found.
    pub packages: u64,
    pub counts: SeverityCounts,
    /// Most severe first.
    pub findings: Vec<Finding>,
}

/// What is known of the vulnerabilities of an image.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct VulnerabilityReport {
    pub repository: String,
    /// As asked: a tag or a digest.
    pub reference: String,
    /// The manifest's digest (of the index, for an index).
    pub digest: String,
    /// One for an image, one per platform for an index, none for an artifact.
    pub images: Vec<ImageVulnerabilities>,
}

/// The OS's pretty name out of a stored inventory's `os_json`.
fn os_name(os_json: Option<&str>) -> Option<String> {
    wharf_jobs::sbom::os_name(os_json)
}

/// The manifest `reference` names in `repo`, as a digest; `None` if there is none.
pub async fn resolve(
    meta: &dyn MetaStore,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<Digest>, wharf_metastore::MetaError> {
    Ok(meta
        .get_manifest(repo, reference, false)
        .await?
        .map(|m| m.digest))
}

/// The report for `digest` of `repo` (see [`VulnerabilityReport`]).
pub async fn report(
    meta: &dyn MetaStore,
    repo: &RepoName,
    reference: &str,
    digest: &Digest,
) -> anyhow::Result<VulnerabilityReport> {
    let images = wharf_jobs::scan_image::images_in(meta, repo, digest).await?;
    let digests: Vec<String> = images.iter().map(|(d, _, _)| d.to_string()).collect();
    let summaries: std::collections::HashMap<String, _> =
        meta.summaries(&digests).await?.into_iter().collect();
    let mut out = Vec::with_capacity(images.len());
    for (d, platform, _) in images {
        let d = d.to_string();
        let inventory = meta.inventory(&d).await?;
        let summary = summaries.get(&d);
        let counts = summary
            .map(|s| SeverityCounts {
                critical: s.critical,
                high: s.high,
                medium: s.medium,
                low: s.low,
                unknown: s.unknown,
            })
            .unwrap_or_default();
        let findings = match &inventory {
            Some(i) if i.status == "scanned" => meta
                .findings(&d)
                .await?
                .into_iter()
                .map(Finding::from)
                .collect(),
            _ => Vec::new(),
        };
        let packages = inventory
            .as_ref()
            .map(|i| {
                let mut ids: Vec<i64> = i.packages.iter().map(|(id, _)| *id).collect();
                ids.dedup();
                ids.len() as u64
            })
            .unwrap_or(0);
        out.push(ImageVulnerabilities {
            platform,
            status: inventory
                .as_ref()
                .map(|i| i.status.clone())
                .unwrap_or_else(|| "not_scanned".into()),
            error: inventory.as_ref().and_then(|i| i.error.clone()),
            os: inventory
                .as_ref()
                .and_then(|i| os_name(i.os_json.as_deref())),
            scanned_at_ms: inventory.as_ref().map(|i| i.scanned_at_ms),
            scanner_version: inventory.as_ref().map(|i| i.scanner_version.clone()),
            db_version: summary.and_then(|s| s.db_version),
            packages,
            counts,
            findings,
            digest: d,
        });
    }
    Ok(VulnerabilityReport {
        repository: repo.to_string(),
        reference: reference.to_string(),
        digest: digest.to_string(),
        images: out,
    })
}

/// The SPDX document of the image `image` (a digest with an inventory) of `repo`.
pub async fn sbom(
    meta: &dyn MetaStore,
    host: &str,
    base_url: &str,
    repo: &RepoName,
    reference: &str,
    image: &str,
) -> anyhow::Result<Option<Value>> {
    let address = wharf_jobs::sbom::RegistryAddress {
        host: host.to_string(),
        base_url: base_url.to_string(),
    };
    wharf_jobs::sbom::document(meta, &address, repo, reference, image).await
}

/// Queues a scan of `repo@digest` and audits it.
pub async fn queue_scan(
    st: &AppState,
    actor: &Principal,
    repo: &RepoName,
    digest: &Digest,
    via: &str,
) -> Result<Job, ApiError> {
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: "scan".into(),
            params: json!({"repository": repo.as_str(), "digest": digest.to_string()}).to_string(),
            max_attempts: wharf_jobs::DEFAULT_ATTEMPTS,
            deadline_ms: None,
            cron: None,
        })
        .await
        .map_err(store_error)?;
    audit_log(
        st,
        actor,
        "image.scan",
        &format!("{repo}@{digest}"),
        Some(format!("job {} ({via})", job.id)),
    )
    .await?;
    Ok(job)
}

/// Queues a `scan_all` job and audits it.
pub async fn queue_rescan_all(
    st: &AppState,
    actor: &Principal,
    all: bool,
    via: &str,
) -> Result<Job, ApiError> {
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: "scan_all".into(),
            params: json!({ "all": all }).to_string(),
            max_attempts: wharf_jobs::DEFAULT_ATTEMPTS,
            deadline_ms: None,
            cron: None,
        })
        .await
        .map_err(store_error)?;
    audit_log(
        st,
        actor,
        "scanning.rescan_all",
        &job.id.to_string(),
        Some(format!("all={all} ({via})")),
    )
    .await?;
    Ok(job)
}

/// Queues a re-match against the current database and audits it.
pub async fn queue_rematch(st: &AppState, actor: &Principal, via: &str) -> Result<Job, ApiError> {
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: "vulndb_rematch".into(),
            params: "{}".into(),
            max_attempts: wharf_jobs::DEFAULT_ATTEMPTS,
            deadline_ms: None,
            cron: None,
        })
        .await
        .map_err(store_error)?;
    audit_log(
        st,
        actor,
        "vulndb.rematch",
        &job.id.to_string(),
        Some(via.to_string()),
    )
    .await?;
    Ok(job)
}

/// Why an upload was refused.
#[derive(Debug)]
pub enum UploadError {
    TooLarge,
    Empty,
    Read(String),
    Store(String),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::TooLarge => {
                write!(f, "the archive is larger than {} GiB", UPLOAD_LIMIT >> 30)
            }
            UploadError::Empty => write!(f, "the archive is empty"),
            UploadError::Read(e) => write!(f, "the upload could not be read: {e}"),
            UploadError::Store(e) => write!(f, "the blob store refused the archive: {e}"),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Store(_) => {
                tracing::error!(error = %e, "a database upload failed");
                ApiError::new(
                    wharf_oci::ErrorCode::Unknown,
                    "internal error; the registry's log has the details",
                )
            }
            UploadError::TooLarge => {
                ApiError::new(wharf_oci::ErrorCode::ManifestTooLarge, e.to_string())
            }
            other => invalid(other.to_string()),
        }
    }
}

/// Streams `chunks` into the blob store under their digest, at most [`UPLOAD_LIMIT`]
/// bytes, holding one chunk at a time.
pub async fn store_upload<S, E>(st: &AppState, mut chunks: S) -> Result<(Digest, u64), UploadError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let blobs = st.registry.blobs();
    let meta = st.registry.meta();
    let id = wharf_oci::UploadId::new_unchecked(uuid::Uuid::new_v4().to_string());
    // An upload session in the metadata store owns the data while it streams in, so
    // that `purge_uploads` does not take it for orphaned data; its size is recorded now
    // and then, so that a long upload does not look abandoned.
    let now = wharf_metastore::now_ms();
    let session = wharf_metastore::UploadSession {
        id: id.clone(),
        repo: UPLOAD_SESSION_REPO
            .parse()
            .map_err(|e: wharf_oci::NameError| UploadError::Store(e.to_string()))?,
        size: 0,
        created_at_ms: now,
        updated_at_ms: now,
    };
    meta.create_upload(&session)
        .await
        .map_err(|e| UploadError::Store(e.to_string()))?;
    let result = async {
        let mut writer = blobs
            .upload_writer(&id, 0)
            .await
            .map_err(|e| UploadError::Store(e.to_string()))?;
        let mut hasher = Sha256::new();
        let (mut total, mut recorded) = (0u64, 0u64);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| UploadError::Read(e.to_string()))?;
            total += chunk.len() as u64;
            if total > UPLOAD_LIMIT {
                return Err(UploadError::TooLarge);
            }
            hasher.update(&chunk);
            writer
                .write(chunk)
                .await
                .map_err(|e| UploadError::Store(e.to_string()))?;
            if total - recorded >= 64 << 20 {
                meta.advance_upload(&id, recorded, total)
                    .await
                    .map_err(|e| UploadError::Store(e.to_string()))?;
                recorded = total;
            }
        }
        writer
            .finish()
            .await
            .map_err(|e| UploadError::Store(e.to_string()))?;
        if total == 0 {
            return Err(UploadError::Empty);
        }
        let digest: Digest = format!("sha256:{}", hex::encode(hasher.finalize()))
            .parse()
            .map_err(|e: wharf_oci::DigestError| UploadError::Store(e.to_string()))?;
        blobs
            .upload_commit(&id, &digest)
            .await
            .map_err(|e| UploadError::Store(e.to_string()))?;
        Ok((digest, total))
    }
    .await;
    let _ = blobs.upload_delete(&id).await;
    let _ = meta.delete_upload(&id).await;
    result
}

/// The repository named by the upload sessions of database archives (they are never
/// linked to it; the name only satisfies the sessions' table).
const UPLOAD_SESSION_REPO: &str = "wharf/vulndb-upload";

/// Queues the import of an uploaded archive and audits it.
pub async fn queue_import(
    st: &AppState,
    actor: &Principal,
    digest: &Digest,
    size: u64,
    name: &str,
    via: &str,
) -> Result<Job, ApiError> {
    // One attempt: an archive the import refuses is refused again.
    let job = st
        .registry
        .meta()
        .enqueue(&NewJob {
            action: "vulndb_import".into(),
            params: json!({"blob": digest.to_string(), "name": name}).to_string(),
            max_attempts: 1,
            deadline_ms: None,
            cron: None,
        })
        .await
        .map_err(store_error)?;
    audit_log(
        st,
        actor,
        "vulndb.upload",
        &digest.to_string(),
        Some(format!("{name}, {size} bytes, job {} ({via})", job.id)),
    )
    .await?;
    Ok(job)
}

/// A database version as the API shows it.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct VulndbVersionView {
    pub id: i64,
    /// A URL, `upload:<file name>` or `file:<path>`.
    pub source: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// `importing`, `current`, `superseded` or `failed`.
    pub status: String,
    /// Advisories imported.
    pub records: Option<u64>,
    /// Advisories per archive's ecosystem, e.g. `{"PyPI": 143}`.
    #[schema(value_type = Object)]
    pub ecosystems: Value,
    /// Why the import failed.
    pub error: Option<String>,
}

impl From<VulndbVersion> for VulndbVersionView {
    fn from(v: VulndbVersion) -> Self {
        VulndbVersionView {
            ecosystems: v
                .ecosystems_json
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_else(|| json!({})),
            id: v.id,
            source: v.source,
            started_at_ms: v.started_at_ms,
            finished_at_ms: v.finished_at_ms,
            status: v.status,
            records: v.records,
            error: v.error,
        }
    }
}

/// What the current version's re-match changed for an image.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct VulnChangeView {
    pub manifest_digest: String,
    pub advisory_id: String,
    /// `added` (the image is newly affected) or `removed`.
    pub change: String,
}

/// The advisory database.
#[derive(Serialize, ToSchema, Clone, Debug)]
pub struct VulndbStatus {
    /// The version in use; none before the first import.
    pub current: Option<VulndbVersionView>,
    /// The newest versions, newest first, failed imports included.
    pub versions: Vec<VulndbVersionView>,
    /// What the current version's re-match changed (at most 100).
    pub changes: Vec<VulnChangeView>,
}

pub async fn vulndb_status(meta: &dyn MetaStore) -> Result<VulndbStatus, ApiError> {
    let current = meta.current_vulndb().await.map_err(store_error)?;
    let versions = meta.vulndb_versions(20).await.map_err(store_error)?;
    let changes = match &current {
        Some(c) => meta.vuln_changes(c.id, 100).await.map_err(store_error)?,
        None => Vec::new(),
    };
    Ok(VulndbStatus {
        current: current.map(Into::into),
        versions: versions.into_iter().map(Into::into).collect(),
        changes: changes
            .into_iter()
            .map(|c| VulnChangeView {
                manifest_digest: c.manifest_digest,
                advisory_id: c.advisory_id,
                change: c.change,
            })
            .collect(),
    })
}

// --- the API's handlers ---

/// The hand-routed forms under `/repositories/<name>/`.
enum Form {
    Vulnerabilities(Reference),
    Sbom(Reference),
    Scan(Reference),
}

/// `<name>/_vulnerabilities/<ref>`, `<name>/_sbom/<ref>` or `<name>/_scan/<ref>`;
/// `None` for any other form (left to `repos.rs`).
fn parse(rest: &str) -> Option<Result<(RepoName, Form), ApiError>> {
    let (name, tail) = rest.split_once("/_")?;
    let (kind, reference) = tail.split_once('/')?;
    if !matches!(kind, "vulnerabilities" | "sbom" | "scan") {
        return None;
    }
    Some((|| {
        let repo: RepoName = name
            .parse()
            .map_err(|e: wharf_oci::NameError| invalid(e.to_string()))?;
        let reference: Reference = reference
            .parse()
            .map_err(|_| invalid(format!("{reference:?} is neither a tag nor a digest")))?;
        Ok((
            repo,
            match kind {
                "vulnerabilities" => Form::Vulnerabilities(reference),
                "sbom" => Form::Sbom(reference),
                _ => Form::Scan(reference),
            },
        ))
    })())
}

/// The caller and its access to `repo` (everything when authentication is off).
async fn access(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    repo: &RepoName,
) -> Result<(Principal, RepoAccess), ApiError> {
    if !st.settings.auth_enabled {
        return Ok((
            Principal::Anonymous,
            RepoAccess {
                pull: true,
                push: true,
                delete: true,
                admin: true,
            },
        ));
    }
    let actor = signed_in(st, headers, addr).await?;
    let access = st
        .auth
        .repo_access(&actor, repo.as_str())
        .await
        .map_err(|e| match e {
            wharf_auth::AuthError::Store(e) => store_error(e),
            other => invalid(other.to_string()),
        })?;
    Ok((actor, access))
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "a scanning request failed");
    ApiError::new(
        wharf_oci::ErrorCode::Unknown,
        "internal error; the registry's log has the details",
    )
}

async fn find(st: &AppState, repo: &RepoName, reference: &Reference) -> Result<Digest, ApiError> {
    resolve(st.registry.meta().as_ref(), repo, reference)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                wharf_oci::ErrorCode::ManifestUnknown,
                format!("{repo} has no manifest {reference}"),
            )
        })
}

fn reference_text(r: &Reference) -> String {
    match r {
        Reference::Tag(t) => t.to_string(),
        Reference::Digest(d) => d.to_string(),
    }
}

#[derive(Deserialize, Default)]
struct SbomQuery {
    platform: Option<String>,
}

/// `GET <name>/_vulnerabilities/<ref>` and `GET <name>/_sbom/<ref>`; `None` for the
/// other forms.
pub async fn get(
    st: &AppState,
    rest: &str,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    query: Option<&str>,
) -> Option<ApiResult> {
    let parsed = parse(rest)?;
    Some(
        async {
            let (repo, form) = parsed?;
            if let Form::Scan(_) = form {
                return Err(not_found(format!(
                    "no such endpoint: GET /api/v0/repositories/{rest} (a scan is queued with POST)"
                )));
            }
            let (actor, access) = access(st, headers, addr, &repo).await?;
            if !access.pull {
                return Err(denied(&actor, &format!("pull from {repo}")));
            }
            let meta = st.registry.meta();
            match form {
                Form::Vulnerabilities(reference) => {
                    let digest = find(st, &repo, &reference).await?;
                    let r = report(meta.as_ref(), &repo, &reference_text(&reference), &digest)
                        .await
                        .map_err(internal)?;
                    Ok(Json(r).into_response())
                }
                Form::Sbom(reference) => {
                    let q: SbomQuery = serde_urlencoded_query(query)?;
                    let digest = find(st, &repo, &reference).await?;
                    let images =
                        wharf_jobs::scan_image::images_in(meta.as_ref(), &repo, &digest)
                            .await
                            .map_err(internal)?;
                    let image = match &q.platform {
                        Some(p) => images.iter().find(|(_, ip, _)| ip.as_deref() == Some(p)),
                        None => images.first(),
                    };
                    let Some((image, _, _)) = image else {
                        return Err(not_found(match &q.platform {
                            Some(p) => format!("{repo}@{digest} has no image for {p}"),
                            None => format!("{repo}@{digest} is not an image (an artifact)"),
                        }));
                    };
                    let host = crate::ui::registry_host(headers);
                    let scheme = if st.settings.tls { "https" } else { "http" };
                    let reference = reference_text(&reference);
                    let doc = sbom(
                        meta.as_ref(),
                        &host,
                        &format!("{scheme}://{host}"),
                        &repo,
                        &reference,
                        &image.to_string(),
                    )
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| {
                        not_found(format!(
                            "{repo}@{image} has not been scanned (or its scan failed): no SBOM; scan it with POST /api/v0/repositories/{repo}/_scan/{reference}"
                        ))
                    })?;
                    let file = format!(
                        "{}-{}.spdx.json",
                        repo.as_str().replace('/', "_"),
                        &image.to_string()["sha256:".len().min(image.to_string().len())..]
                            .chars()
                            .take(12)
                            .collect::<String>()
                    );
                    Ok((
                        [
                            (header::CONTENT_TYPE, "application/spdx+json".to_string()),
                            (
                                header::CONTENT_DISPOSITION,
                                format!("attachment; filename=\"{file}\""),
                            ),
                        ],
                        serde_json::to_vec_pretty(&doc).unwrap_or_default(),
                    )
                        .into_response())
                }
                Form::Scan(_) => unreachable!("answered above"),
            }
        }
        .await,
    )
}

/// `POST <name>/_scan/<ref>`: the hand-routed POST of `/repositories/{*rest}`.
pub async fn post(
    State(st): State<AppState>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    req: Request,
) -> ApiResult {
    let bad = || {
        not_found(format!(
            "no such endpoint: POST /api/v0/repositories/{rest}"
        ))
    };
    let (repo, form) = parse(&rest).ok_or_else(bad)??;
    let Form::Scan(reference) = form else {
        return Err(bad());
    };
    let (actor, access) = access(&st, req.headers(), auth::client_addr(&req), &repo).await?;
    if !access.push {
        return Err(denied(
            &actor,
            &format!("scan images of {repo} (push access)"),
        ));
    }
    let digest = find(&st, &repo, &reference).await?;
    let job = queue_scan(&st, &actor, &repo, &digest, "API").await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

/// The caller, who must be an administrator (anyone when authentication is off).
async fn administrator(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Principal, ApiError> {
    if st.settings.auth_enabled {
        admin(st, headers, addr).await
    } else {
        Ok(Principal::Anonymous)
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct RescanQuery {
    /// Every tagged image, not only those without an inventory (default false).
    #[param(value_type = Option<bool>)]
    all: Option<String>,
}

/// The value of `key` in the request's query string.
fn query_value(req: &Request, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Scan every image
///
/// `POST /api/v0/scanning/rescan_all[?all=true]` (administrators): queues a `scan_all`
/// job, which pages through every repository's tags and queues a `scan` job for each
/// image that has no inventory yet (with `all=true`, for every image).
#[utoipa::path(post, path = "/scanning/rescan_all", tag = "scanning", operation_id = "rescan_all",
    params(RescanQuery),
    responses(
        (status = 202, description = "the scan_all job, queued", body = JobView),
        (status = 400, description = "a bad query", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn rescan_all(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let q: RescanQuery = RescanQuery {
        all: query_value(&req, "all"),
    };
    let all = match q.all.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(invalid(format!("all={other:?}: give true or false"))),
    };
    let job = queue_rescan_all(&st, &actor, all, "API").await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

/// The vulnerability database
///
/// `GET /api/v0/vulndb` (signed in): the current version, the newest versions with
/// their errors, and the images the current version's re-match newly affected.
#[utoipa::path(get, path = "/vulndb", tag = "scanning", operation_id = "vulndb_status",
    responses(
        (status = 200, description = "the database's versions and changes", body = VulndbStatus),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn vulndb_get(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    Ok(Json(vulndb_status(st.registry.meta().as_ref()).await?).into_response())
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct UploadQuery {
    /// The archive's file name (default `upload.zip`); like a file given to `wharf
    /// vulndb import`, it names the ecosystem its records are counted under
    /// (`PyPI.zip`, `osv-PyPI.zip`).
    name: Option<String>,
}

/// Upload a database archive
///
/// `POST /api/v0/vulndb?name=FILE` with the archive as the body (administrators): a
/// zip of OSV records (as osv.dev publishes `<ecosystem>/all.zip`; records may sit in
/// folders), at most 2 GiB. The body goes into the blob store, which every replica
/// shares, and a `vulndb_import` job imports it from there: the archive is checked by
/// the import, which refuses it whole on any bad record (the job fails, the version is
/// listed as failed, and the current database stays).
#[utoipa::path(post, path = "/vulndb", tag = "scanning", operation_id = "vulndb_upload",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/zip", description = "the archive"),
    responses(
        (status = 202, description = "stored; the vulndb_import job, queued", body = JobView),
        (status = 400, description = "an empty body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 413, description = "larger than 2 GiB", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn vulndb_upload(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = administrator(&st, req.headers(), auth::client_addr(&req)).await?;
    let name = query_value(&req, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "upload.zip".into());
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > UPLOAD_LIMIT {
            return Err(UploadError::TooLarge.into());
        }
    }
    let body: Body = req.into_body();
    let (digest, size) = store_upload(&st, body.into_data_stream()).await?;
    let job = queue_import(&st, &actor, &digest, size, &name, "API").await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

/// The documentation of the hand-routed forms (see `repos::docs`).
pub(super) mod docs {
    #![allow(dead_code)]

    use utoipa::OpenApi;

    use super::{VulndbStatus, VulnerabilityReport};
    use crate::api::jobs::JobView;
    use crate::error::ErrorBody;

    #[derive(OpenApi)]
    #[openapi(paths(get_vulnerabilities, get_sbom, scan_now))]
    pub struct HandRouted;

    /// An image's vulnerabilities
    ///
    /// `GET /api/v0/repositories/{name}/_vulnerabilities/{reference}` (pull access): the
    /// scan status, OS, database version, severity counts and findings of the image, or
    /// of each platform of an index.
    #[utoipa::path(get, path = "/repositories/{name}/_vulnerabilities/{reference}", tag = "scanning", operation_id = "get_vulnerabilities",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("reference" = String, Path, description = "a tag or a digest"),
        ),
        responses(
            (status = 200, description = "what is known of the image's vulnerabilities", body = VulnerabilityReport),
            (status = 400, description = "an invalid repository name or reference", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller may not pull from the repository", body = ErrorBody),
            (status = 404, description = "no such manifest", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn get_vulnerabilities() {}

    /// An image's SBOM
    ///
    /// `GET /api/v0/repositories/{name}/_sbom/{reference}[?platform=os/arch]` (pull
    /// access): the SPDX 2.3 JSON document of what the scan found in the image (for an
    /// index, the platform asked for, else the first), as an attachment.
    #[utoipa::path(get, path = "/repositories/{name}/_sbom/{reference}", tag = "scanning", operation_id = "get_sbom",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("reference" = String, Path, description = "a tag or a digest"),
            ("platform" = Option<String>, Query, description = "for an index: the platform, e.g. `linux/arm64`"),
        ),
        responses(
            (status = 200, description = "the SPDX document", body = Object, content_type = "application/spdx+json"),
            (status = 400, description = "an invalid repository name or reference", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller may not pull from the repository", body = ErrorBody),
            (status = 404, description = "no such manifest or platform, or the image has not been scanned", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn get_sbom() {}

    /// Scan an image now
    ///
    /// `POST /api/v0/repositories/{name}/_scan/{reference}` (push access): queues a
    /// `scan` job for the image (every platform of an index).
    #[utoipa::path(post, path = "/repositories/{name}/_scan/{reference}", tag = "scanning", operation_id = "scan_image",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("reference" = String, Path, description = "a tag or a digest"),
        ),
        responses(
            (status = 202, description = "the scan job, queued", body = JobView),
            (status = 400, description = "an invalid repository name or reference", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller may not push to the repository", body = ErrorBody),
            (status = 404, description = "no such manifest", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn scan_now() {}

    // Keeps the schema types referenced from here in use.
    fn _types(_: VulnerabilityReport, _: VulndbStatus) {}
}
