//! Upload sessions: `POST /v2/<name>/blobs/uploads/` and
//! `GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::{Digest, ErrorCode, RepoName, UploadId};
use wharf_registry::{Chunk, RegistryError, UploadSession, UploadStarted};

use super::{empty, HandlerResult};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::http::{
    body_stream, content_length, header_str, parse_content_range, query_param, set,
    DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID,
};
use crate::AppState;

fn digest_param(query: Option<&str>, key: &str) -> Result<Option<Digest>, ApiError> {
    match query_param(query, key) {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|e: wharf_oci::DigestError| {
            ApiError::new(ErrorCode::DigestInvalid, e.to_string())
        }),
    }
}

/// `202 Accepted` describing a session: where to send data and how much it holds.
fn session_response(status: StatusCode, s: &UploadSession) -> Response {
    let mut resp = empty(status);
    set_session_headers(&mut resp, s);
    resp
}

fn set_session_headers(resp: &mut Response, s: &UploadSession) {
    let h = resp.headers_mut();
    set(
        h,
        header::LOCATION,
        format!("/v2/{}/blobs/uploads/{}", s.repo, s.id),
    );
    // The spec's Range is inclusive; an empty session reports 0-0, as the reference does.
    set(h, header::RANGE, format!("0-{}", s.size.saturating_sub(1)));
    set(h, DOCKER_UPLOAD_UUID, s.id.to_string());
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(h, header::LOCATION, format!("/v2/{repo}/blobs/{digest}"));
    set(h, DOCKER_CONTENT_DIGEST, digest.to_string());
    resp
}

pub async fn start(st: &AppState, caller: &Caller, repo: &RepoName, req: Request) -> HandlerResult {
    let query = req.uri().query().map(str::to_string);
    let query = query.as_deref();
    // A mount that cannot be done, even one naming a malformed digest, falls back to
    // an ordinary session, as the spec asks.
    if let Some(mount) = query_param(query, "mount").and_then(|m| m.parse::<Digest>().ok()) {
        // A `from` that is not a valid name cannot be mounted from: fall back to a session.
        let candidates = match query_param(query, "from") {
            Some(from) => from.parse::<RepoName>().ok().into_iter().collect(),
            None => st.registry.mount_candidates(&mount).await?,
        };
        // Only repositories the caller could pull the blob from may lend it.
        let mut sources = Vec::new();
        for candidate in candidates {
            if auth::may_pull(st, caller, &candidate).await {
                sources.push(candidate);
            }
        }
        let started = st.registry.mount_or_start(repo, &mount, &sources).await?;
        return Ok(started_response(repo, started));
    }
    if let Some(digest) = digest_param(query, "digest")? {
        let len = content_length(req.headers())?;
        let started = st
            .registry
            .upload_whole(repo, &digest, body_stream(req.into_body()), len)
            .await?;
        return Ok(started_response(repo, started));
    }
    let session = st.registry.start_upload(repo).await?;
    Ok(session_response(StatusCode::ACCEPTED, &session))
}

fn started_response(repo: &RepoName, started: UploadStarted) -> Response {
    match started {
        UploadStarted::Mounted(d) | UploadStarted::Complete(d) => blob_created(repo, &d),
        UploadStarted::Session(s) => session_response(StatusCode::ACCEPTED, &s),
    }
}

pub async fn status(st: &AppState, repo: &RepoName, id: &UploadId) -> HandlerResult {
    let s = st.registry.upload_status(repo, id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, &s))
}

/// A 416 for an out-of-order chunk still tells the client where the session stands,
/// so it can resume.
async fn out_of_order(
    st: &AppState,
    repo: &RepoName,
    id: &UploadId,
    err: RegistryError,
) -> ApiError {
    let mut api = ApiError::from(err);
    if let Ok(s) = st.registry.upload_status(repo, id).await {
        api = api
            .with_header(header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}"))
            .with_header(header::RANGE, format!("0-{}", s.size.saturating_sub(1)));
    }
    api
}

/// The chunk a PATCH or closing PUT carries.
fn chunk(req: Request) -> Result<Chunk, ApiError> {
    let range = parse_content_range(header_str(req.headers(), &header::CONTENT_RANGE))?;
    let len = content_length(req.headers())?;
    Ok(Chunk {
        body: body_stream(req.into_body()),
        range,
        len,
    })
}

pub async fn patch(st: &AppState, repo: &RepoName, id: &UploadId, req: Request) -> HandlerResult {
    match st.registry.append_chunk(repo, id, chunk(req)?).await {
        Ok(s) => Ok(session_response(StatusCode::ACCEPTED, &s)),
        Err(e @ RegistryError::ChunkOutOfOrder { .. }) => Err(out_of_order(st, repo, id, e).await),
        Err(e) => Err(e.into()),
    }
}

pub async fn put(st: &AppState, repo: &RepoName, id: &UploadId, req: Request) -> HandlerResult {
    let query = req.uri().query().map(str::to_string);
    let digest = digest_param(query.as_deref(), "digest")?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::DigestInvalid,
            "the digest query parameter is required to finish an upload",
        )
    })?;
    match st
        .registry
        .finish_upload(repo, id, &digest, Some(chunk(req)?))
        .await
    {
        Ok(()) => Ok(blob_created(repo, &digest)),
        Err(e @ RegistryError::ChunkOutOfOrder { .. }) => Err(out_of_order(st, repo, id, e).await),
        Err(e) => Err(e.into()),
    }
}

pub async fn cancel(st: &AppState, repo: &RepoName, id: &UploadId) -> HandlerResult {
    st.registry.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT).into_response())
}
