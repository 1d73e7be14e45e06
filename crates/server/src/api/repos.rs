//! Repository visibility and grants, under `/api/v0/repositories/<name>/…`. Names have
//! any depth, so the part after the name starts with `_`, which no name component can.
//!
//! - `GET|PUT <name>/_settings` `{"visibility": "public"|"private"}`
//! - `PUT|DELETE <name>/_grants/user/<user>` `{"level": "read"|"write"|"admin"}`
//! - `PUT|DELETE <name>/_grants/team/<org>/<team>` `{"level": …}`

use std::net::IpAddr;

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
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
async fn repo_admin(
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

pub async fn get(State(st): State<AppState>, Path(rest): Path<String>, req: Request) -> ApiResult {
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
    Ok(
        Json(serde_json::json!({ "name": repo.as_str(), "visibility": visibility }))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    visibility: Visibility,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    level: Level,
}

pub async fn put(State(st): State<AppState>, Path(rest): Path<String>, req: Request) -> ApiResult {
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

pub async fn delete(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    req: Request,
) -> ApiResult {
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
