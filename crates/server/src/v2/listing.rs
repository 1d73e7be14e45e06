//! `GET /v2/<name>/tags/list`, `GET /v2/_catalog`, `GET /v2/<name>/referrers/<digest>`

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_oci::{media, Digest, ErrorCode, RepoName};

use crate::auth::Caller;
use wharf_registry::Page;

use super::HandlerResult;
use crate::error::ApiError;
use crate::http::{query_param, set, OCI_FILTERS_APPLIED};
use crate::AppState;

/// `n` and `last` from the query string.
fn pagination(req: &Request) -> Result<(Option<usize>, Option<String>), ApiError> {
    let q = req.uri().query();
    let n = match query_param(q, "n") {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={s:?} is not a non-negative number"),
            )
        })?),
    };
    Ok((n, query_param(q, "last").filter(|l| !l.is_empty())))
}

/// Adds `Link: <path?n=..&last=..>; rel="next"` when there is a next page.
fn with_link(mut resp: Response, path: &str, page: &Page, n: usize) -> Response {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        set(
            resp.headers_mut(),
            header::LINK,
            format!("<{path}?n={n}&last={last}>; rel=\"next\""),
        );
    }
    resp
}

pub async fn tags(st: &AppState, repo: &RepoName, req: Request) -> HandlerResult {
    let (n, last) = pagination(&req)?;
    let page = st.registry.list_tags(repo, n, last.as_deref()).await?;
    let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
    let n = st.registry.page_size(n);
    Ok(with_link(
        Json(body).into_response(),
        &format!("/v2/{repo}/tags/list"),
        &page,
        n,
    ))
}

pub async fn catalog(st: &AppState, caller: &Caller, req: Request) -> HandlerResult {
    let (n, last) = pagination(&req)?;
    let n = st.registry.page_size(n);
    let page = visible_repositories(st, caller, n, last).await?;
    let body = serde_json::json!({ "repositories": page.items });
    Ok(with_link(
        Json(body).into_response(),
        "/v2/_catalog",
        &page,
        n,
    ))
}

/// A page of the repositories the caller may pull from, reading past hidden ones.
async fn visible_repositories(
    st: &AppState,
    caller: &Caller,
    n: usize,
    mut last: Option<String>,
) -> Result<Page, ApiError> {
    if !st.settings.auth_enabled || wharf_auth::policy::is_system_admin(caller.principal.user()) {
        return Ok(st.registry.catalog(Some(n), last.as_deref()).await?);
    }
    let mut items = Vec::new();
    // Bounded: at most this many batches are read for one page.
    for _ in 0..100 {
        let batch = st
            .registry
            .catalog(Some(n.max(100)), last.as_deref())
            .await?;
        for name in &batch.items {
            let access = st
                .auth
                .repo_access(&caller.principal, name)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "catalog access check failed");
                    ApiError::new(
                        ErrorCode::Unknown,
                        "internal error; the registry's log has the details",
                    )
                })?;
            if access.pull {
                if items.len() == n {
                    return Ok(Page { items, more: true });
                }
                items.push(name.clone());
            }
        }
        if !batch.more {
            return Ok(Page { items, more: false });
        }
        last = batch.items.last().cloned();
    }
    Ok(Page { more: true, items })
}

pub async fn referrers(
    st: &AppState,
    repo: &RepoName,
    subject: &Digest,
    req: Request,
) -> HandlerResult {
    let artifact_type = query_param(req.uri().query(), "artifactType").filter(|a| !a.is_empty());
    let index = st
        .registry
        .referrers(repo, subject, artifact_type.as_deref())
        .await?;
    let mut resp = index.into_response();
    set(resp.headers_mut(), header::CONTENT_TYPE, media::OCI_INDEX);
    if artifact_type.is_some() {
        set(resp.headers_mut(), OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(resp)
}
