//! Repository pages: the list (search, namespaces, keyset pages), a repository's tags,
//! an image, and deleting a tag.

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::IntoResponse;
use serde::Deserialize;
use wharf_metastore::browse::{RepoCursor, RepoQuery, RepoSort};
use wharf_oci::manifest::{Manifest, ManifestKind};
use wharf_oci::{Digest, Reference, RepoName, Tag};

use super::image;
use super::page::{enc, opt_time, render, short_digest, size, time, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

const PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    ns: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    after: String,
    /// What the previous form did (a fixed set of messages, never reflected text).
    #[serde(default)]
    done: String,
}

struct RepoRow {
    name: String,
    namespace: String,
    tag_count: u64,
    last_push: String,
    visibility: &'static str,
}

#[derive(Template)]
#[template(path = "repos.html")]
struct ReposPage {
    l: Layout,
    q: String,
    ns: String,
    sort: &'static str,
    repos: Vec<RepoRow>,
    first_page: bool,
    first_url: String,
    next_url: Option<String>,
}

/// `GET /`: the repositories the visitor may see.
pub async fn list(
    State(st): State<AppState>,
    visitor: Visitor,
    Query(q): Query<ListQuery>,
) -> UiResult {
    let sort = if q.sort == "pushed" {
        RepoSort::LastPush
    } else {
        RepoSort::Name
    };
    let after = if q.after.is_empty() {
        None
    } else {
        Some(match sort {
            RepoSort::Name => RepoCursor::Name(q.after.clone()),
            RepoSort::LastPush => {
                let (at, name) = q.after.split_once(':').unwrap_or(("0", ""));
                RepoCursor::LastPush {
                    at_ms: at.parse().unwrap_or(0),
                    name: name.to_string(),
                }
            }
        })
    };
    let query = RepoQuery {
        prefix: q.ns.trim().to_ascii_lowercase(),
        contains: q.q.trim().to_ascii_lowercase(),
        sort,
        after,
        limit: PAGE + 1,
    };
    let mut rows = st
        .registry
        .meta()
        .browse_repositories(&visitor.browse_viewer(), &query)
        .await?;
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let sort_name = if sort == RepoSort::LastPush {
        "pushed"
    } else {
        "name"
    };
    let base = format!(
        "/?q={}&ns={}&sort={sort_name}",
        enc(&query.contains),
        enc(&query.prefix)
    );
    let next_url = match (more, rows.last()) {
        (true, Some(last)) => {
            let cursor = match last.cursor(sort) {
                RepoCursor::Name(n) => n,
                RepoCursor::LastPush { at_ms, name } => format!("{at_ms}:{name}"),
            };
            Some(format!("{base}&after={}", enc(&cursor)))
        }
        _ => None,
    };
    let repos = rows
        .into_iter()
        .map(|r| RepoRow {
            namespace: r.name.split('/').next().unwrap_or_default().to_string(),
            tag_count: r.tag_count,
            last_push: opt_time(r.last_push_ms),
            visibility: match r.visibility {
                Some(wharf_metastore::accounts::Visibility::Public) => "public",
                _ => "private",
            },
            name: r.name,
        })
        .collect();
    Ok(render(&ReposPage {
        l: visitor.layout(&st, "Repositories", "repos"),
        q: query.contains,
        ns: query.prefix,
        sort: sort_name,
        repos,
        first_page: q.after.is_empty(),
        first_url: base,
        next_url,
    }))
}

/// `/repos/{*path}`: `NAME`, `NAME/-/manifests/DIGEST`, `NAME/-/tags/TAG/delete`,
/// `NAME/-/settings`. `-` cannot be a component of a repository name, so the split is
/// unambiguous.
pub async fn dispatch(
    State(st): State<AppState>,
    visitor: Visitor,
    Path(path): Path<String>,
    Query(q): Query<ListQuery>,
    req: Request,
) -> UiResult {
    let (name, rest) = match path.split_once("/-/") {
        Some((n, r)) => (n, Some(r)),
        None => (path.as_str(), None),
    };
    let repo: RepoName = name
        .parse()
        .map_err(|_| UiError::NotFound(format!("{name:?} is not a repository name")))?;
    let access = st
        .auth
        .repo_access(&visitor.principal(), repo.as_str())
        .await?;
    let access = if visitor.auth_off {
        wharf_auth::RepoAccess {
            pull: true,
            push: true,
            delete: true,
            admin: true,
        }
    } else {
        access
    };
    if !access.pull {
        // Whether it exists is not the visitor's business.
        return Err(if visitor.session.is_none() {
            UiError::SignIn
        } else {
            UiError::NotFound(format!("no repository {repo} that you may see"))
        });
    }
    let method = req.method().clone();
    match (rest, &method) {
        (None, &Method::GET) => {
            let message = match q.done.as_str() {
                "tag-deleted" => Some("The tag was deleted."),
                "settings-saved" => Some("The settings were saved."),
                _ => None,
            };
            repository(
                &st,
                &visitor,
                &repo,
                &q.after,
                &access,
                req.headers(),
                message,
            )
            .await
        }
        (Some(r), &Method::GET) if r.starts_with("manifests/") => {
            let digest: Digest = r["manifests/".len()..]
                .parse()
                .map_err(|_| UiError::NotFound("not a digest".into()))?;
            manifest_page(&st, &visitor, &repo, &digest).await
        }
        (Some(r), _) if r.starts_with("tags/") && r.ends_with("/delete") => {
            let tag = &r["tags/".len()..r.len() - "/delete".len()];
            let tag: Tag = tag
                .parse()
                .map_err(|_| UiError::NotFound("not a tag".into()))?;
            if !access.delete {
                return Err(UiError::Forbidden(format!(
                    "you may not delete tags of {repo}"
                )));
            }
            delete_tag(&st, &visitor, &repo, &tag, req).await
        }
        (Some("settings"), _) => super::settings::page(&st, &visitor, &repo, &access, req).await,
        (Some(r), _)
            if r.starts_with("vulnerabilities/")
                || r.starts_with("scan/")
                || r.starts_with("sbom/") =>
        {
            let (what, digest) = r.split_once('/').unwrap_or_default();
            let digest: Digest = digest
                .parse()
                .map_err(|_| UiError::NotFound("not a digest".into()))?;
            let vq: super::vulns::VulnsQuery =
                serde_urlencoded_lite(req.uri().query().unwrap_or(""));
            match (what, &method) {
                ("vulnerabilities", &Method::GET) => {
                    super::vulns::page(&st, &visitor, &repo, &digest, &access, &vq).await
                }
                ("sbom", &Method::GET) => {
                    super::vulns::sbom(&st, &repo, &digest, &vq, req.headers()).await
                }
                ("scan", _) => {
                    super::vulns::scan_now(&st, &visitor, &repo, &digest, &access, req).await
                }
                _ => Err(UiError::NotFound("no such page".into())),
            }
        }
        _ => Err(UiError::NotFound("no such page".into())),
    }
}

/// The vulnerabilities page's query (`severity`, `done`, `platform`), leniently.
fn serde_urlencoded_lite(query: &str) -> super::vulns::VulnsQuery {
    let mut q = super::vulns::VulnsQuery::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "severity" => q.severity = v.into_owned(),
            "done" => q.done = v.into_owned(),
            "platform" => q.platform = v.into_owned(),
            _ => {}
        }
    }
    q
}

struct TagRow {
    vulns: super::vulns::TagBadge,
    name: String,
    digest: String,
    short_digest: String,
    kind: &'static str,
    size: String,
    platforms: String,
    referrers: usize,
    pushed: String,
}

#[derive(Template)]
#[template(path = "repo.html")]
struct RepoPage {
    l: Layout,
    name: String,
    message: Option<&'static str>,
    pull_commands: Vec<(&'static str, String)>,
    tag_count: u64,
    tags: Vec<TagRow>,
    after: String,
    next_after: Option<String>,
    may_delete: bool,
    may_admin: bool,
}

/// The address clients pull from: the one this page was asked for.
pub(crate) fn registry_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost")
        .to_string()
}

async fn repository(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    after: &str,
    access: &wharf_auth::RepoAccess,
    headers: &HeaderMap,
    message: Option<&'static str>,
) -> UiResult {
    let meta = st.registry.meta();
    let Some(mut details) = meta
        .tag_details(repo.as_str(), Some(after), PAGE + 1)
        .await?
    else {
        return Err(UiError::NotFound(format!("no repository {repo}")));
    };
    let more = details.len() > PAGE;
    details.truncate(PAGE);
    let tag_count = meta.tag_count(repo.as_str()).await?;
    let mut tags = Vec::with_capacity(details.len());
    let mut badges = super::vulns::tag_badges(st, &details).await?.into_iter();
    for t in &details {
        let s = image::tag_summary(st, t).await;
        let referrers = match t.digest.parse::<Digest>() {
            Ok(d) => meta.referrers(repo, &d, None).await?.len(),
            Err(_) => 0,
        };
        tags.push(TagRow {
            vulns: badges.next().unwrap_or(super::vulns::TagBadge {
                state: "not_scanned",
                parts: Vec::new(),
            }),
            name: t.name.clone(),
            short_digest: short_digest(&t.digest),
            digest: t.digest.clone(),
            kind: s.kind,
            size: size(s.size),
            platforms: s.platforms,
            referrers,
            pushed: time(t.updated_at_ms),
        });
    }
    let host = registry_host(headers);
    let example = details
        .first()
        .map(|t| t.name.clone())
        .unwrap_or_else(|| "latest".into());
    let pull_commands = vec![
        ("docker", format!("docker pull {host}/{repo}:{example}")),
        ("podman", format!("podman pull {host}/{repo}:{example}")),
        (
            "skopeo",
            format!(
                "skopeo copy docker://{host}/{repo}:{example} oci:{}:{example}",
                repo.as_str().rsplit('/').next().unwrap_or("image")
            ),
        ),
    ];
    Ok(render(&RepoPage {
        l: visitor.layout(st, repo.to_string(), "repos"),
        name: repo.to_string(),
        message,
        pull_commands,
        tag_count,
        next_after: if more {
            details.last().map(|t| t.name.clone())
        } else {
            None
        },
        tags,
        after: after.to_string(),
        may_delete: access.delete,
        may_admin: access.admin,
    }))
}

struct Child {
    platform: String,
    digest: String,
    short: String,
    size: String,
}

struct LayerRow {
    digest: String,
    short: String,
    size: String,
    created_by: String,
}

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage {
    l: Layout,
    repo: String,
    digest: String,
    media_type: String,
    tags: Vec<String>,
    artifact_type: Option<String>,
    subject: Option<String>,
    children: Vec<Child>,
    config: Option<std::sync::Arc<image::ImageConfig>>,
    layers: Vec<LayerRow>,
    total_size: String,
    history: Vec<image::HistoryStep>,
    referrers: Vec<(String, Vec<String>)>,
    manifest_json: String,
    config_json: Option<String>,
    /// An image or an index of images: it has a vulnerabilities page.
    is_image: bool,
}

async fn manifest_page(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    digest: &Digest,
) -> UiResult {
    let meta = st.registry.meta();
    let stored = meta
        .get_manifest(repo, &Reference::Digest(digest.clone()), true)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no manifest {digest} in {repo}")))?;
    let payload = stored.payload.unwrap_or_default();
    let manifest = Manifest::parse(Some(&stored.media_type), &payload).ok();
    let manifest_json = serde_json::from_slice::<serde_json::Value>(&payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&payload).into_owned());
    let mut children = Vec::new();
    let mut layers = Vec::new();
    let mut config = None;
    let mut total = 0;
    let (mut artifact_type, mut subject) = (None, None);
    if let Some(m) = &manifest {
        // An image's config type is not an artifact type worth showing.
        artifact_type = m
            .effective_artifact_type()
            .filter(|t| !image::is_image_config(t))
            .map(str::to_string);
        subject = m.subject.as_ref().map(|s| s.digest.to_string());
        if m.kind == ManifestKind::Index {
            for d in &m.manifests {
                children.push(Child {
                    platform: d
                        .platform
                        .as_ref()
                        .map(image::platform_name)
                        .unwrap_or_else(|| "—".into()),
                    digest: d.digest.to_string(),
                    short: short_digest(&d.digest.to_string()),
                    size: size(d.size),
                });
            }
        } else {
            if let Some(c) = &m.config {
                if image::is_image_config(&c.media_type) {
                    config = image::config(st, &c.digest).await;
                }
            }
            // History steps that made a layer, in order, name the layers.
            let steps: Vec<String> = config
                .as_ref()
                .map(|c| {
                    c.history
                        .iter()
                        .filter(|h| !h.empty_layer)
                        .map(|h| h.created_by.clone())
                        .collect()
                })
                .unwrap_or_default();
            for (i, l) in m.layers.iter().enumerate() {
                total += l.size;
                layers.push(LayerRow {
                    digest: l.digest.to_string(),
                    short: short_digest(&l.digest.to_string()),
                    size: size(l.size),
                    created_by: steps.get(i).cloned().unwrap_or_else(|| "—".into()),
                });
            }
        }
    }
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in meta.referrers(repo, digest, None).await? {
        groups
            .entry(r.artifact_type.unwrap_or_else(|| "unknown".into()))
            .or_default()
            .push(r.digest.to_string());
    }
    let is_image = !children.is_empty() || config.is_some();
    Ok(render(&ImagePage {
        is_image,
        l: visitor.layout(
            st,
            format!("{repo}@{}", short_digest(&digest.to_string())),
            "repos",
        ),
        repo: repo.to_string(),
        digest: digest.to_string(),
        media_type: stored.media_type,
        tags: meta
            .tags_of_manifest(repo.as_str(), &digest.to_string())
            .await?,
        artifact_type,
        subject,
        children,
        history: config
            .as_ref()
            .map(|c| c.history.clone())
            .unwrap_or_default(),
        config_json: config.as_ref().map(|c| c.pretty.clone()),
        config,
        layers,
        total_size: size(total),
        referrers: groups.into_iter().collect(),
        manifest_json,
    }))
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub heading: String,
    pub question: String,
    pub action: String,
    pub button: &'static str,
    pub back: String,
}

async fn delete_tag(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    tag: &Tag,
    req: Request,
) -> UiResult {
    let here = format!("/repos/{repo}/-/tags/{}/delete", enc(tag.as_str()));
    let back = format!("/repos/{repo}");
    if req.method() == Method::GET {
        return Ok(render(&ConfirmPage {
            l: visitor.layout(st, "Delete a tag", "repos"),
            heading: format!("Delete tag {tag}?"),
            question: format!(
                "Pulls of {repo}:{tag} will fail. The image stays while other tags or digests refer to it; garbage collection removes what nothing refers to."
            ),
            action: here,
            button: "Delete the tag",
            back,
        }));
    }
    signed_form(visitor, req).await?;
    let deleted = st.registry.meta().delete_tag(repo, tag).await?;
    if !deleted {
        return Err(UiError::NotFound(format!("{repo} has no tag {tag}")));
    }
    st.registry
        .meta()
        .audit(
            visitor.principal().name(),
            "tag.delete",
            &format!("{repo}:{tag}"),
            Some("web UI"),
        )
        .await?;
    Ok(see_other(&format!("{back}?done=tag-deleted")).into_response())
}
