//! `GET /v2/<name>/tags/list`, `GET /v2/_catalog`, `GET /v2/<name>/referrers/<digest>`

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use wharf_oci::{media, Digest, ErrorCode, RepoName};
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

pub async fn catalog(st: &AppState, req: Request) -> HandlerResult {
    let (n, last) = pagination(&req)?;
    let page = st.registry.catalog(n, last.as_deref()).await?;
    let body = serde_json::json!({ "repositories": page.items });
    let n = st.registry.page_size(n);
    Ok(with_link(
        Json(body).into_response(),
        "/v2/_catalog",
        &page,
        n,
    ))
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
