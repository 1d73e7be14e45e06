//! Vulnerability scanning in the web UI: the severity badges of the tag list, an
//! image's vulnerabilities page (with "Scan now" and the SBOM download), and the
//! vulnerability database page (upload, re-match, rescan). What the pages show is
//! gathered by `crate::api::scan`, which the API serves too.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::response::IntoResponse;
use serde::Deserialize;
use wharf_metastore::browse::TagDetail;
use wharf_oci::manifest::{Manifest, ManifestKind};
use wharf_oci::{Digest, RepoName};

use super::page::{opt_time, render, short_digest, time, Layout, UiError, UiResult};
use super::session::{check_origin, see_other, signed_form, Visitor};
use crate::api::scan::{self as api, ImageVulnerabilities, SeverityCounts};
use crate::error::ApiError;
use crate::AppState;

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        use wharf_oci::ErrorCode::*;
        match e.code {
            Denied | Unauthorized => UiError::Forbidden(e.detail),
            ApiNotFound | ManifestUnknown | NotFound => UiError::NotFound(e.detail),
            Unknown => UiError::Internal,
            _ => UiError::BadRequest(e.detail),
        }
    }
}

/// A tag's vulnerabilities in the tag list.
pub struct TagBadge {
    /// `scanned`, `failed`, `not_scanned` or `artifact` (nothing to scan).
    pub state: &'static str,
    /// The non-zero counts, most severe first.
    pub parts: Vec<(&'static str, u64)>,
}

/// The images (platform manifests) a tag's manifest stands for, read from its payload.
fn images_of(t: &TagDetail) -> Vec<String> {
    let Ok(m) = Manifest::parse(Some(&t.media_type), &t.payload) else {
        return Vec::new();
    };
    match m.kind {
        ManifestKind::Index => m
            .manifests
            .iter()
            .filter(|d| {
                !d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
            })
            .map(|d| d.digest.to_string())
            .collect(),
        _ if m
            .config
            .as_ref()
            .is_some_and(|c| super::image::is_image_config(&c.media_type)) =>
        {
            vec![t.digest.clone()]
        }
        _ => Vec::new(),
    }
}

/// The badges of a page of tags, with one store call for all of their images.
pub async fn tag_badges(st: &AppState, tags: &[TagDetail]) -> Result<Vec<TagBadge>, UiError> {
    let images: Vec<Vec<String>> = tags.iter().map(images_of).collect();
    let all: Vec<String> = images.iter().flatten().cloned().collect();
    let summaries: std::collections::HashMap<String, _> = st
        .registry
        .meta()
        .summaries(&all)
        .await?
        .into_iter()
        .collect();
    Ok(images
        .iter()
        .map(|imgs| {
            if imgs.is_empty() {
                return TagBadge {
                    state: "artifact",
                    parts: Vec::new(),
                };
            }
            let found: Vec<_> = imgs.iter().filter_map(|d| summaries.get(d)).collect();
            if found.is_empty() {
                return TagBadge {
                    state: "not_scanned",
                    parts: Vec::new(),
                };
            }
            if found.iter().any(|s| s.status == "failed") {
                return TagBadge {
                    state: "failed",
                    parts: Vec::new(),
                };
            }
            let mut c = SeverityCounts::default();
            for s in found {
                c.critical += s.critical;
                c.high += s.high;
                c.medium += s.medium;
                c.low += s.low;
                c.unknown += s.unknown;
            }
            TagBadge {
                state: "scanned",
                parts: c.nonzero(),
            }
        })
        .collect())
}

/// One image of the vulnerabilities page.
struct ImageView {
    v: ImageVulnerabilities,
    scanned: String,
    /// The findings shown (after the severity filter).
    shown: Vec<api::Finding>,
}

#[derive(Template)]
#[template(path = "vulns.html")]
struct VulnsPage {
    l: Layout,
    repo: String,
    digest: String,
    short: String,
    images: Vec<ImageView>,
    severity: String,
    severities: Vec<(&'static str, String)>,
    may_scan: bool,
    message: Option<&'static str>,
    current_db: Option<i64>,
}

#[derive(Deserialize, Default)]
pub struct VulnsQuery {
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub done: String,
    #[serde(default)]
    pub platform: String,
}

/// `GET /repos/NAME/-/vulnerabilities/DIGEST[?severity=high]`.
pub async fn page(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    digest: &Digest,
    access: &wharf_auth::RepoAccess,
    q: &VulnsQuery,
) -> UiResult {
    let meta = st.registry.meta();
    if api::resolve(
        meta.as_ref(),
        repo,
        &wharf_oci::Reference::Digest(digest.clone()),
    )
    .await?
    .is_none()
    {
        return Err(UiError::NotFound(format!("no manifest {digest} in {repo}")));
    }
    let report = api::report(meta.as_ref(), repo, &digest.to_string(), digest)
        .await
        .map_err(super::page::internal)?;
    let severity = if wharf_metastore::scan::SEVERITIES.contains(&q.severity.as_str()) {
        q.severity.clone()
    } else {
        String::new()
    };
    let base = format!("/repos/{repo}/-/vulnerabilities/{digest}");
    let mut severities = vec![("all", base.clone())];
    for s in wharf_metastore::scan::SEVERITIES {
        severities.push((s, format!("{base}?severity={s}")));
    }
    let images = report
        .images
        .into_iter()
        .map(|v| ImageView {
            scanned: opt_time(v.scanned_at_ms),
            shown: v
                .findings
                .iter()
                .filter(|f| severity.is_empty() || f.severity == severity)
                .cloned()
                .collect(),
            v,
        })
        .collect();
    let current_db = meta.current_vulndb().await?.map(|v| v.id);
    Ok(render(&VulnsPage {
        l: visitor.layout(
            st,
            format!(
                "Vulnerabilities of {repo}@{}",
                short_digest(&digest.to_string())
            ),
            "repos",
        ),
        repo: repo.to_string(),
        short: short_digest(&digest.to_string()),
        digest: digest.to_string(),
        images,
        severity,
        severities,
        may_scan: access.push,
        message: match q.done.as_str() {
            "scan-queued" => {
                Some("A scan is queued; reload this page in a moment to see its results.")
            }
            _ => None,
        },
        current_db,
    }))
}

/// `POST /repos/NAME/-/scan/DIGEST`: "Scan now".
pub async fn scan_now(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    digest: &Digest,
    access: &wharf_auth::RepoAccess,
    req: Request,
) -> UiResult {
    if req.method() != Method::POST {
        return Err(UiError::NotFound("no such page".into()));
    }
    signed_form(visitor, req).await?;
    if !access.push {
        return Err(UiError::Forbidden(format!(
            "you may not scan images of {repo} (it takes push access)"
        )));
    }
    api::queue_scan(st, &visitor.principal(), repo, digest, "web UI").await?;
    Ok(see_other(&format!(
        "/repos/{repo}/-/vulnerabilities/{digest}?done=scan-queued"
    )))
}

/// `GET /repos/NAME/-/sbom/DIGEST[?platform=os/arch]`: the SPDX document.
pub async fn sbom(
    st: &AppState,
    repo: &RepoName,
    digest: &Digest,
    q: &VulnsQuery,
    headers: &axum::http::HeaderMap,
) -> UiResult {
    let meta = st.registry.meta();
    let images = wharf_jobs::scan_image::images_in(meta.as_ref(), repo, digest)
        .await
        .map_err(|_| UiError::NotFound(format!("no manifest {digest} in {repo}")))?;
    let image = if q.platform.is_empty() {
        images.first()
    } else {
        images
            .iter()
            .find(|(_, p, _)| p.as_deref() == Some(q.platform.as_str()))
    };
    let Some((image, _, _)) = image else {
        return Err(UiError::NotFound("no such image".into()));
    };
    let host = super::registry_host(headers);
    let scheme = if st.settings.tls { "https" } else { "http" };
    let doc = api::sbom(
        meta.as_ref(),
        &host,
        &format!("{scheme}://{host}"),
        repo,
        &digest.to_string(),
        &image.to_string(),
    )
    .await
    .map_err(super::page::internal)?
    .ok_or_else(|| {
        UiError::NotFound(format!(
            "{repo}@{image} has not been scanned (or its scan failed): there is no SBOM yet"
        ))
    })?;
    let hex = image.to_string();
    let file = format!(
        "{}-{}.spdx.json",
        repo.as_str().replace('/', "_"),
        hex.rsplit(':')
            .next()
            .unwrap_or("")
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

struct VersionRow {
    id: i64,
    source: String,
    started: String,
    finished: String,
    status: String,
    records: String,
    ecosystems: String,
    error: Option<String>,
}

struct ChangeRow {
    digest: String,
    short: String,
    advisory_id: String,
    url: String,
    change: String,
}

#[derive(Template)]
#[template(path = "vulndb.html")]
struct VulndbPage {
    l: Layout,
    current: Option<VersionRow>,
    versions: Vec<VersionRow>,
    changes: Vec<ChangeRow>,
    admin: bool,
    message: Option<&'static str>,
    has_update: bool,
    limit_gib: u64,
}

fn version_row(v: api::VulndbVersionView) -> VersionRow {
    VersionRow {
        id: v.id,
        source: v.source,
        started: time(v.started_at_ms),
        finished: opt_time(v.finished_at_ms),
        status: v.status,
        records: v
            .records
            .map(|n| n.to_string())
            .unwrap_or_else(|| "—".into()),
        ecosystems: v
            .ecosystems
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "—".into()),
        error: v.error,
    }
}

#[derive(Deserialize, Default)]
pub struct DoneQuery {
    #[serde(default)]
    done: String,
}

/// `GET /vulndb`: signed-in users.
pub async fn vulndb(
    State(st): State<AppState>,
    visitor: Visitor,
    axum::extract::Query(q): axum::extract::Query<DoneQuery>,
) -> UiResult {
    if !visitor.auth_off {
        visitor.require_user()?;
    }
    let status = api::vulndb_status(st.registry.meta().as_ref()).await?;
    Ok(render(&VulndbPage {
        l: visitor.layout(&st, "Vulnerability database", "vulndb"),
        current: status.current.map(version_row),
        versions: status.versions.into_iter().map(version_row).collect(),
        changes: status
            .changes
            .into_iter()
            .map(|c| ChangeRow {
                short: short_digest(&c.manifest_digest),
                digest: c.manifest_digest,
                url: api::osv_link(&c.advisory_id),
                advisory_id: c.advisory_id,
                change: c.change,
            })
            .collect(),
        admin: visitor.is_admin(),
        message: match q.done.as_str() {
            "uploaded" => Some("The archive was stored and its import queued; this page shows the new version once the import has finished."),
            "rematch" => Some("A re-match is queued."),
            "rescan" => Some("A rescan of the images is queued."),
            _ => None,
        },
        has_update: wharf_jobs::actions::NAMES.contains(&"vulndb_update"),
        limit_gib: api::UPLOAD_LIMIT >> 30,
    }))
}

/// `POST /vulndb/rematch`, `/vulndb/rescan`, `/vulndb/update` (administrators).
pub async fn vulndb_action(
    State(st): State<AppState>,
    visitor: Visitor,
    axum::extract::Path(what): axum::extract::Path<String>,
    req: Request,
) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let actor = visitor.principal();
    match what.as_str() {
        "rematch" => {
            api::queue_rematch(&st, &actor, "web UI").await?;
        }
        "rescan" => {
            api::queue_rescan_all(&st, &actor, form.checked("all"), "web UI").await?;
        }
        "update" if wharf_jobs::actions::NAMES.contains(&"vulndb_update") => {
            return super::jobs::start_job(&st, &visitor, "vulndb_update", "{}").await;
        }
        _ => return Err(UiError::NotFound("no such page".into())),
    }
    Ok(see_other(&format!(
        "/vulndb?done={}",
        if what == "rematch" {
            "rematch"
        } else {
            "rescan"
        }
    )))
}

/// `POST /vulndb/upload` (administrators): a `multipart/form-data` form whose
/// `_csrf` field comes before its `archive` file; the file is streamed into the blob
/// store as the API's upload does.
pub async fn vulndb_upload(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    check_origin(req.headers())?;
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| UiError::BadRequest("the form is not multipart/form-data".into()))?;
    let mut form = multer::Multipart::new(req.into_body().into_data_stream(), boundary);
    let bad = |e: multer::Error| UiError::BadRequest(format!("the form could not be read: {e}"));
    let mut csrf_ok = visitor.auth_off;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("_csrf") => {
                let value = field.text().await.map_err(bad)?;
                if let Some(s) = &visitor.session {
                    csrf_ok = wharf_auth::session::constant_time_eq(&value, &s.csrf);
                }
            }
            Some("archive") => {
                if !csrf_ok {
                    return Err(UiError::Forbidden(
                        "the form's security token is missing or stale; reload the page and try again".into(),
                    ));
                }
                let name = field
                    .file_name()
                    .filter(|n| !n.is_empty())
                    .unwrap_or("upload.zip")
                    .to_string();
                let chunks = futures_util::stream::unfold(&mut field, |f| async move {
                    match f.chunk().await {
                        Ok(Some(b)) => Some((Ok(b), f)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), f)),
                    }
                });
                let (digest, size) = api::store_upload(&st, Box::pin(chunks))
                    .await
                    .map_err(|e| UiError::from(ApiError::from(e)))?;
                api::queue_import(&st, &visitor.principal(), &digest, size, &name, "web UI")
                    .await?;
                return Ok(see_other("/vulndb?done=uploaded"));
            }
            _ => {}
        }
    }
    Err(UiError::BadRequest("the form has no archive file".into()))
}
