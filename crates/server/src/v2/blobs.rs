//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use wharf_oci::{Digest, RepoName};
use wharf_registry::BlobBody;

use super::{empty, HandlerResult};
use crate::auth::Caller;
use crate::http::{header_str, parse_range, set, DOCKER_CONTENT_DIGEST};
use crate::AppState;

pub async fn get(
    st: &AppState,
    caller: &Caller,
    repo: &RepoName,
    digest: &Digest,
    req: Request,
    with_body: bool,
) -> HandlerResult {
    // A pull-through proxy fetches what it lacks; a fetch this request started is
    // answered as the bytes arrive (no range: they are stored whole first).
    let whole = with_body && !req.headers().contains_key(header::RANGE);
    if let wharf_proxy::BlobFill::Streaming { size, body } =
        st.proxies.prepare_blob(repo, digest, whole).await?
    {
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        if let Some(size) = size {
            set(h, header::CONTENT_LENGTH, size.to_string());
        }
        set(h, header::CONTENT_TYPE, "application/octet-stream");
        set(h, header::ETAG, format!("\"{digest}\""));
        set(h, DOCKER_CONTENT_DIGEST, digest.to_string());
        return Ok(resp);
    }
    let info = st.registry.stat_blob(repo, digest).await?;
    // A user with a content cache downloads from it: the access check is done, the
    // signed URL carries the permission there (HEAD is answered here: it is cheap).
    if let (true, true, Some(user)) = (with_body, info.in_store, caller.principal.user()) {
        if let Some(url) = st.caches.redirect(user.id, digest, info.size) {
            let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
            let h = resp.headers_mut();
            set(h, header::LOCATION, url);
            set(h, DOCKER_CONTENT_DIGEST, digest.to_string());
            set(h, header::CACHE_CONTROL, "no-store");
            return Ok(resp);
        }
    }
    let range = parse_range(header_str(req.headers(), &header::RANGE), info.size)?;
    let body = if with_body {
        match st.registry.read_blob(repo, digest, range).await? {
            BlobBody::Stream(s) => Body::from_stream(s),
            BlobBody::Bytes(b) => Body::from(b),
        }
    } else {
        Body::empty()
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    let len = match range {
        Some(r) => {
            set(
                h,
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, info.size),
            );
            r.end - r.start
        }
        None => info.size,
    };
    set(h, header::CONTENT_LENGTH, len.to_string());
    set(h, header::CONTENT_TYPE, "application/octet-stream");
    set(h, header::ACCEPT_RANGES, "bytes");
    set(h, header::ETAG, format!("\"{digest}\""));
    set(h, header::CACHE_CONTROL, "max-age=31536000");
    set(h, DOCKER_CONTENT_DIGEST, digest.to_string());
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

pub async fn delete(st: &AppState, repo: &RepoName, digest: &Digest) -> HandlerResult {
    st.registry.delete_blob(repo, digest).await?;
    Ok(empty(StatusCode::ACCEPTED))
}
