//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use wharf_oci::{ErrorCode, Reference, RepoName};
use wharf_registry::RegistryError;

use super::{empty, HandlerResult};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{
    body_bytes, content_length, header_str, set, BodyError, DOCKER_CONTENT_DIGEST, OCI_SUBJECT,
};
use crate::AppState;

pub async fn get(
    st: &AppState,
    caller: &Caller,
    repo: &RepoName,
    reference: &Reference,
    req: Request,
    with_body: bool,
) -> HandlerResult {
    let accept: Vec<&str> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let freshness = st.proxies.prepare_manifest(repo, reference).await?;
    let m = match st
        .registry
        .get_manifest(repo, reference, &accept, with_body)
        .await
    {
        Ok(m) => m,
        Err(RegistryError::PullDenied { digest, message }) => {
            // Every refusal is audited: who, which image, why. A failure to record
            // does not turn the refusal into an answer.
            let target = format!("{repo}@{digest}");
            if let Err(e) = st
                .auth
                .store()
                .audit(
                    caller.principal.name(),
                    "pull.denied",
                    &target,
                    Some(&message),
                )
                .await
            {
                tracing::error!(error = %e, %target, "could not audit a refused pull");
            }
            return Err(RegistryError::PullDenied { digest, message }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut resp = Response::new(m.payload.map(Body::from).unwrap_or_default());
    let h = resp.headers_mut();
    set(h, header::CONTENT_TYPE, &m.media_type);
    set(h, header::CONTENT_LENGTH, m.size.to_string());
    set(h, header::ETAG, format!("\"{}\"", m.digest));
    set(h, DOCKER_CONTENT_DIGEST, m.digest.to_string());
    if let Some(wharf_proxy::Freshness { stale: Some(_) }) = freshness {
        // RFC 7234's stale warning: no upstream could revalidate the tag.
        set(h, header::WARNING, r#"110 - "Response is Stale""#);
    }
    Ok(resp)
}

pub async fn put(
    st: &AppState,
    repo: &RepoName,
    reference: &Reference,
    req: Request,
) -> HandlerResult {
    let limit = st.registry.limits().max_manifest_bytes;
    let too_large = |size: String| {
        ApiError::new(
            ErrorCode::ManifestTooLarge,
            format!("manifest is {size} bytes; this registry accepts at most {limit}"),
        )
    };
    let declared = content_length(req.headers())?;
    if let Some(len) = declared.filter(|&l| l > limit) {
        return Err(too_large(len.to_string()));
    }
    let content_type = header_str(req.headers(), &header::CONTENT_TYPE).map(str::to_string);
    let body = body_bytes(req.into_body(), limit)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => too_large("more than that".into()),
            BodyError::Read(e) => ApiError::new(
                ErrorCode::ManifestInvalid,
                format!("request body could not be read: {e}"),
            ),
        })?;
    let pushed = st
        .registry
        .put_manifest(repo, reference, content_type.as_deref(), body)
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(
        h,
        header::LOCATION,
        format!("/v2/{repo}/manifests/{}", pushed.digest),
    );
    set(h, DOCKER_CONTENT_DIGEST, pushed.digest.to_string());
    if let Some(subject) = pushed.subject {
        set(h, OCI_SUBJECT, subject.to_string());
    }
    Ok(resp)
}

pub async fn delete(st: &AppState, repo: &RepoName, reference: &Reference) -> HandlerResult {
    st.registry.delete_manifest(repo, reference).await?;
    Ok(empty(StatusCode::ACCEPTED))
}
