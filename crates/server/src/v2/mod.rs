//! The OCI distribution API under `/v2`: one entry point parses the path into an
//! [`Endpoint`] and dispatches on it and the method.

use axum::body::Body;
use axum::extract::{Request, State};
use std::net::IpAddr;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_oci::{ErrorCode, NameError};

use wharf_auth::Action;
use wharf_oci::RepoName;

use crate::auth::{self, Caller};
use crate::endpoint::{Endpoint, EndpointError};
use crate::error::ApiError;
use crate::http::DOCKER_API_VERSION;
use crate::AppState;

mod blobs;
mod listing;
mod manifests;
mod uploads;

pub type HandlerResult = Result<Response, ApiError>;

pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let mut resp = match Endpoint::parse(req.uri().path()) {
        Ok(endpoint) => dispatch(&state, endpoint, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        // A tag that cannot exist names no manifest: reading it is a 404, as clients and
        // the conformance suite expect; only pushing to it is a bad request.
        Err(EndpointError::Reference(NameError::BadTag(t))) if req.method() != Method::PUT => {
            ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("no manifest is tagged {t:?}"),
            )
            .into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.headers_mut()
        .insert(DOCKER_API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// What an endpoint needs of the caller.
enum Need {
    /// Any signed-in caller (`GET /v2/`: tells clients whether their credentials work).
    SignedIn,
    /// Nothing up front; the handler filters what it shows (the catalog).
    Nothing,
    Repo(RepoName, Action),
}

fn need(endpoint: &Endpoint, method: &Method) -> Need {
    use Endpoint as E;
    let repo_action = match (endpoint, method) {
        (E::Base, _) => return Need::SignedIn,
        (E::Catalog, _) => return Need::Nothing,
        (E::Manifest(..) | E::Blob(..), &Method::DELETE) => Action::Delete,
        (E::Manifest(..), &Method::PUT) | (E::UploadStart(_) | E::Upload(..), _) => Action::Push,
        _ => Action::Pull,
    };
    match endpoint {
        E::Tags(r)
        | E::Manifest(r, _)
        | E::Blob(r, _)
        | E::UploadStart(r)
        | E::Upload(r, _)
        | E::Referrers(r, _) => Need::Repo(r.clone(), repo_action),
        E::Base | E::Catalog => unreachable!("handled above"),
    }
}

/// Identifies the caller and checks it may do what the request asks.
async fn authorize(
    st: &AppState,
    endpoint: &Endpoint,
    method: &Method,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    if !st.settings.auth_enabled {
        return Ok(Caller::anonymous());
    }
    let caller = auth::identify(st, headers, addr).await?;
    let (repo, action) = match need(endpoint, method) {
        Need::Nothing => return Ok(caller),
        Need::SignedIn if caller.presented_credentials => return Ok(caller),
        Need::SignedIn => {
            return Err(auth::unauthorized(
                st,
                headers,
                "sign in to use this registry",
                None,
            ))
        }
        Need::Repo(repo, action) => (repo, action),
    };
    let allowed = match &caller.claims {
        // A bearer token carries its grants; they were checked when it was issued.
        Some(claims) => claims
            .access
            .iter()
            .any(|s| s.allows("repository", repo.as_str(), action.scope_name())),
        None => st
            .auth
            .repo_access(&caller.principal, repo.as_str())
            .await
            .map_err(|e| auth::auth_error(st, headers, e, None))?
            .allows(action),
    };
    if allowed {
        return Ok(caller);
    }
    let scope = match action {
        Action::Pull => format!("repository:{repo}:pull"),
        Action::Push => format!("repository:{repo}:pull,push"),
        Action::Delete => format!("repository:{repo}:delete"),
    };
    let detail = format!("{} access to {repo} is needed", action.scope_name());
    if caller.claims.is_some() {
        let signed_in = caller.principal.user().is_some();
        return Err(auth::insufficient_scope(
            st, headers, signed_in, &detail, &scope,
        ));
    }
    if !caller.presented_credentials {
        // Token clients answer a challenge by fetching a token with the scope named.
        return Err(auth::unauthorized(
            st,
            headers,
            &format!("{} access to {repo} is needed", action.scope_name()),
            Some(&scope),
        ));
    }
    Err(ApiError::new(
        ErrorCode::Denied,
        format!(
            "{} may not {} {repo}",
            caller.principal.name(),
            action.scope_name()
        ),
    ))
}

async fn dispatch(st: &AppState, endpoint: Endpoint, req: Request) -> HandlerResult {
    use Endpoint as E;
    let addr = auth::client_addr(&req);
    let caller = authorize(st, &endpoint, req.method(), req.headers(), addr).await?;
    let method = req.method().clone();
    let allow = allowed_methods(&endpoint);
    // A pull-through proxy's repositories hold what its upstreams have: nothing else.
    let pushed_to = match (&endpoint, &method) {
        (E::Manifest(repo, _), &Method::PUT) | (E::UploadStart(repo) | E::Upload(repo, _), _) => {
            Some(repo)
        }
        _ => None,
    };
    if let Some(repo) = pushed_to {
        if let Some(p) = st.proxies.proxy_for(repo).await? {
            return Err(ApiError::shown(
                ErrorCode::Denied,
                wharf_proxy::Proxies::push_refusal(&p),
            ));
        }
    }
    match (endpoint, method) {
        (E::Base, Method::GET | Method::HEAD) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (E::Catalog, Method::GET) => listing::catalog(st, &caller, req).await,
        (E::Tags(repo), Method::GET) => listing::tags(st, &repo, req).await,
        (E::Referrers(repo, d), Method::GET) => listing::referrers(st, &repo, &d, req).await,
        (E::Manifest(repo, r), Method::GET) => {
            manifests::get(st, &caller, &repo, &r, req, true).await
        }
        (E::Manifest(repo, r), Method::HEAD) => {
            manifests::get(st, &caller, &repo, &r, req, false).await
        }
        (E::Manifest(repo, r), Method::PUT) => manifests::put(st, &repo, &r, req).await,
        (E::Manifest(repo, r), Method::DELETE) => manifests::delete(st, &repo, &r).await,
        (E::Blob(repo, d), Method::GET) => blobs::get(st, &caller, &repo, &d, req, true).await,
        (E::Blob(repo, d), Method::HEAD) => blobs::get(st, &caller, &repo, &d, req, false).await,
        (E::Blob(repo, d), Method::DELETE) => blobs::delete(st, &repo, &d).await,
        (E::UploadStart(repo), Method::POST) => uploads::start(st, &caller, &repo, req).await,
        (E::Upload(repo, id), Method::GET | Method::HEAD) => uploads::status(st, &repo, &id).await,
        (E::Upload(repo, id), Method::PATCH) => uploads::patch(st, &repo, &id, req).await,
        (E::Upload(repo, id), Method::PUT) => uploads::put(st, &repo, &id, req).await,
        (E::Upload(repo, id), Method::DELETE) => uploads::cancel(st, &repo, &id).await,
        (_, m) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("{m} is not supported on this endpoint"),
        )
        .with_header(header::ALLOW, allow.to_string())),
    }
}

fn allowed_methods(endpoint: &Endpoint) -> &'static str {
    use Endpoint as E;
    match endpoint {
        E::Base => "GET, HEAD",
        E::Catalog | E::Tags(_) | E::Referrers(..) => "GET",
        E::Manifest(..) => "GET, HEAD, PUT, DELETE",
        E::Blob(..) => "GET, HEAD, DELETE",
        E::UploadStart(_) => "POST",
        E::Upload(..) => "GET, HEAD, PATCH, PUT, DELETE",
    }
}

/// An empty response with a status; handlers add headers.
pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}
