//! Repository visibility and grants, under `/api/v0/repositories/<name>/…`. Names have
//! any depth, so the part after the name starts with `_`, which no name component can.
//!
//! - `GET|PUT <name>/_settings` `{"visibility": "public"|"private"}`
//! - `PUT|DELETE <name>/_grants/user/<user>` `{"level": "read"|"write"|"admin"}`
//! - `PUT|DELETE <name>/_grants/team/<org>/<team>` `{"level": …}`
//!
//! `GET <name>/_vulnerabilities/<ref>`, `GET <name>/_sbom/<ref>` and `POST
//! <name>/_scan/<ref>` are answered by `scan.rs` (see [`super::scan::get`]).

use std::net::IpAddr;

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_auth::Principal;
use wharf_metastore::accounts::{Level, Subject, Visibility};
use wharf_oci::RepoName;

use super::*;

enum Target {
    Settings,
    User(String),
    Team(String, String),
}

fn parse(rest: &str) -> Result<(RepoName, Target), ApiError> {
    let bad = || not_found(format!("no such endpoint: /api/v0/repositories/{rest}"));
    let (name, tail) = rest.split_once("/_").ok_or_else(bad)?;
    let repo: RepoName = name
        .parse()
        .map_err(|e: wharf_oci::NameError| invalid(e.to_string()))?;
    let target = match tail.split('/').collect::<Vec<_>>().as_slice() {
        ["settings"] => Target::Settings,
        ["grants", "user", user] => Target::User(user.to_string()),
        ["grants", "team", org, team] => Target::Team(org.to_string(), team.to_string()),
        _ => return Err(bad()),
    };
    Ok((repo, target))
}

/// The caller, if it administers the repository.
pub(super) async fn repo_admin(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    repo: &RepoName,
) -> Result<Principal, ApiError> {
    let actor = signed_in(st, headers, addr).await?;
    let access = st
        .auth
        .repo_access(&actor, repo.as_str())
        .await
        .map_err(|e| match e {
            wharf_auth::AuthError::Store(e) => store_error(e),
            other => invalid(other.to_string()),
        })?;
    if access.admin {
        Ok(actor)
    } else {
        Err(denied(&actor, &format!("administer {repo}")))
    }
}

async fn subject(st: &AppState, target: &Target) -> Result<Subject, ApiError> {
    let store = st.auth.store();
    match target {
        Target::User(name) => Ok(Subject::User(find_user(st, name).await?.id)),
        Target::Team(org, team) => {
            let o = store
                .org_by_name(org)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(format!("no organisation {org}")))?;
            let t = store
                .team_by_name(o.id, team)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(format!("no team {org}/{team}")))?;
            Ok(Subject::Team(t.id))
        }
        Target::Settings => unreachable!("settings have no subject"),
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Settings => "settings".into(),
        Target::User(u) => format!("user {u}"),
        Target::Team(o, t) => format!("team {o}/{t}"),
    }
}

/// A repository's settings.
#[derive(Serialize, ToSchema)]
pub struct RepoSettings {
    /// The repository's name, e.g. `library/alpine`.
    name: String,
    /// Who may pull: anyone (`public`), or those granted access (`private`, the default).
    visibility: Visibility,
}

/// `GET <name>/_settings` (see [`docs`] for each form).
pub async fn get(State(st): State<AppState>, Path(rest): Path<String>, req: Request) -> ApiResult {
    if super::scan_policy::handles(&rest) {
        return super::scan_policy::repo_form(&st, &rest, req).await;
    }
    let (headers, addr) = (req.headers(), auth::client_addr(&req));
    if let Some(scan) = super::scan::get(&st, &rest, headers, addr, req.uri().query()).await {
        return scan; // `_vulnerabilities/…`, `_sbom/…`
    }
    let (repo, target) = parse(&rest)?;
    let Target::Settings = target else {
        return Err(not_found("only _settings can be read"));
    };
    repo_admin(&st, req.headers(), auth::client_addr(&req), &repo).await?;
    let facts = st
        .auth
        .store()
        .repo_facts(None, repo.as_str())
        .await
        .map_err(store_error)?;
    let visibility = facts.visibility.unwrap_or(Visibility::Private);
    Ok(Json(RepoSettings {
        name: repo.as_str().to_string(),
        visibility,
    })
    .into_response())
}

/// New settings for a repository.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    visibility: Visibility,
}

/// Access to grant on a repository.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// `read` pulls, `write` also pushes and deletes, `admin` also manages access.
    level: Level,
}

/// `PUT <name>/_settings` and `PUT <name>/_grants/…` (see [`docs`] for each form).
pub async fn put(State(st): State<AppState>, Path(rest): Path<String>, req: Request) -> ApiResult {
    if super::scan_policy::handles(&rest) {
        return super::scan_policy::repo_form(&st, &rest, req).await;
    }
    let (repo, target) = parse(&rest)?;
    let actor = repo_admin(&st, req.headers(), auth::client_addr(&req), &repo).await?;
    let store = st.auth.store();
    match &target {
        Target::Settings => {
            let body: SettingsBody = json_body(req).await?;
            store
                .set_visibility(repo.as_str(), body.visibility)
                .await
                .map_err(store_error)?;
            audit_log(
                &st,
                &actor,
                "repository.visibility",
                repo.as_str(),
                Some(body.visibility.as_str().into()),
            )
            .await?;
        }
        _ => {
            let body: GrantBody = json_body(req).await?;
            let subject = subject(&st, &target).await?;
            store
                .grant(repo.as_str(), subject, body.level)
                .await
                .map_err(store_error)?;
            let details = format!("{} level={}", describe(&target), body.level.as_str());
            audit_log(
                &st,
                &actor,
                "repository.grant",
                repo.as_str(),
                Some(details),
            )
            .await?;
        }
    }
    Ok(no_content())
}

/// `DELETE <name>/_grants/…` (see [`docs`] for each form).
pub async fn delete(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    req: Request,
) -> ApiResult {
    if super::scan_policy::handles(&rest) {
        return super::scan_policy::repo_form(&st, &rest, req).await;
    }
    let (repo, target) = parse(&rest)?;
    if let Target::Settings = target {
        return Err(invalid(
            "settings cannot be deleted; set the visibility instead",
        ));
    }
    let actor = repo_admin(&st, req.headers(), auth::client_addr(&req), &repo).await?;
    let subject = subject(&st, &target).await?;
    if !st
        .auth
        .store()
        .revoke_grant(repo.as_str(), subject)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!(
            "{} has no grant on {repo}",
            describe(&target)
        )));
    }
    audit_log(
        &st,
        &actor,
        "repository.revoke",
        repo.as_str(),
        Some(describe(&target)),
    )
    .await?;
    Ok(no_content())
}

/// The documentation of each form that `/repositories/{*rest}` serves: a name may hold
/// `/`, so these cannot be routed one by one. The functions are never called; the
/// route is [`get`], [`put`] and [`delete`]. Swagger UI sends a `name` with `/` as
/// `%2F`, which the route decodes.
pub(super) mod docs {
    #![allow(dead_code)]

    use utoipa::OpenApi;

    use super::{GrantBody, RepoSettings, SettingsBody};
    use crate::error::ErrorBody;

    #[derive(OpenApi)]
    #[openapi(paths(
        get_settings,
        put_settings,
        put_user_grant,
        delete_user_grant,
        put_team_grant,
        delete_team_grant
    ))]
    pub struct HandRouted;

    /// A repository's settings
    ///
    /// `GET /api/v0/repositories/{name}/_settings` (the repository's administrators).
    #[utoipa::path(get, path = "/repositories/{name}/_settings", tag = "repositories", operation_id = "get_repository_settings",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        responses(
            (status = 200, description = "the repository's settings", body = RepoSettings),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn get_settings() {}

    /// Change a repository's settings
    ///
    /// `PUT /api/v0/repositories/{name}/_settings {"visibility"}` (the repository's
    /// administrators). The repository need not exist yet.
    #[utoipa::path(put, path = "/repositories/{name}/_settings", tag = "repositories", operation_id = "put_repository_settings",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        request_body = SettingsBody,
        responses(
            (status = 204, description = "the settings are changed"),
            (status = 400, description = "an invalid repository name or a malformed body", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn put_settings() {}

    /// Grant a user access to a repository
    ///
    /// `PUT /api/v0/repositories/{name}/_grants/user/{user} {"level"}` (the repository's
    /// administrators): replaces the user's grant there, if any.
    #[utoipa::path(put, path = "/repositories/{name}/_grants/user/{user}", tag = "repositories", operation_id = "grant_user",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("user" = String, Path, description = "the user's name"),
        ),
        request_body = GrantBody,
        responses(
            (status = 204, description = "granted"),
            (status = 400, description = "an invalid repository name or a malformed body", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "no such user", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn put_user_grant() {}

    /// Revoke a user's access to a repository
    ///
    /// `DELETE /api/v0/repositories/{name}/_grants/user/{user}` (the repository's
    /// administrators).
    #[utoipa::path(delete, path = "/repositories/{name}/_grants/user/{user}", tag = "repositories", operation_id = "revoke_user_grant",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("user" = String, Path, description = "the user's name"),
        ),
        responses(
            (status = 204, description = "revoked"),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "no such user, or the user has no grant there", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn delete_user_grant() {}

    /// Grant a team access to a repository
    ///
    /// `PUT /api/v0/repositories/{name}/_grants/team/{org}/{team} {"level"}` (the
    /// repository's administrators): replaces the team's grant there, if any.
    #[utoipa::path(put, path = "/repositories/{name}/_grants/team/{org}/{team}", tag = "repositories", operation_id = "grant_team",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("org" = String, Path, description = "the team's organisation"),
            ("team" = String, Path, description = "the team's name"),
        ),
        request_body = GrantBody,
        responses(
            (status = 204, description = "granted"),
            (status = 400, description = "an invalid repository name or a malformed body", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "no such organisation or team", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn put_team_grant() {}

    /// Revoke a team's access to a repository
    ///
    /// `DELETE /api/v0/repositories/{name}/_grants/team/{org}/{team}` (the repository's
    /// administrators).
    #[utoipa::path(delete, path = "/repositories/{name}/_grants/team/{org}/{team}", tag = "repositories", operation_id = "revoke_team_grant",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("org" = String, Path, description = "the team's organisation"),
            ("team" = String, Path, description = "the team's name"),
        ),
        responses(
            (status = 204, description = "revoked"),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "no such organisation or team, or the team has no grant there", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn delete_team_grant() {}
}
