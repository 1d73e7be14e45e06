//! Organisations, their members and teams.

use axum::extract::{Path, Request, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_auth::{policy, Principal};
use wharf_metastore::accounts::Org;

use super::*;

/// An organisation to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// Lower-case letters and digits, separated by `.`, `_` or `-`; at most 64
    /// characters. It is the namespace of the organisation's repositories.
    name: String,
}

/// An organisation.
#[derive(Serialize, ToSchema)]
pub struct OrgView {
    name: String,
}

/// Create an organisation
///
/// `POST /api/v0/orgs {"name"}` (administrators).
#[utoipa::path(post, path = "/orgs", tag = "organisations", operation_id = "create_org",
    request_body = NewOrg,
    responses(
        (status = 201, description = "the new organisation", body = OrgView),
        (status = 400, description = "an invalid name or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let body: NewOrg = json_body(req).await?;
    valid_account_name(&body.name)?;
    let org = st
        .auth
        .store()
        .create_org(&body.name)
        .await
        .map_err(store_error)?;
    audit_log(&st, &actor, "org.create", &org.name, None).await?;
    Ok(created(OrgView { name: org.name }))
}

/// The organisation, if the caller administers it (or the registry).
pub(super) async fn managed_org(
    st: &AppState,
    actor: &Principal,
    org: &str,
) -> Result<Org, ApiError> {
    let store = st.auth.store();
    let found = store
        .org_by_name(org)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no organisation {org}")))?;
    if policy::is_system_admin(actor.user()) {
        return Ok(found);
    }
    let facts = store
        .repo_facts(actor.user().map(|u| u.id), &format!("{org}/x"))
        .await
        .map_err(store_error)?;
    if facts.org_admin {
        Ok(found)
    } else {
        Err(denied(actor, &format!("manage the organisation {org}")))
    }
}

async fn user_id(st: &AppState, name: &str) -> Result<i64, ApiError> {
    Ok(find_user(st, name).await?.id)
}

/// A membership of an organisation.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// The member administers the organisation: its members, teams and repositories
    /// (default false).
    #[serde(default)]
    admin: bool,
}

/// Add a member to an organisation, or change one
///
/// `PUT /api/v0/orgs/{org}/members/{user} {"admin": bool}` (the organisation's or the
/// registry's administrators).
#[utoipa::path(put, path = "/orgs/{org}/members/{user}", tag = "organisations", operation_id = "set_org_member",
    params(
        ("org" = String, Path, description = "the organisation's name"),
        ("user" = String, Path, description = "the user's name"),
    ),
    request_body = Membership,
    responses(
        (status = 204, description = "the user is a member, as asked"),
        (status = 400, description = "a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "the caller does not administer the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation or user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn set_member(
    State(st): State<AppState>,
    Path((org, user)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let body: Membership = json_body(req).await?;
    let uid = user_id(&st, &user).await?;
    st.auth
        .store()
        .set_org_member(org.id, uid, body.admin)
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "org.member.set",
        &format!("{}/{user}", org.name),
        Some(format!("admin={}", body.admin)),
    )
    .await?;
    Ok(no_content())
}

/// Remove a member from an organisation
///
/// `DELETE /api/v0/orgs/{org}/members/{user}`: also leaves the organisation's teams.
#[utoipa::path(delete, path = "/orgs/{org}/members/{user}", tag = "organisations", operation_id = "remove_org_member",
    params(
        ("org" = String, Path, description = "the organisation's name"),
        ("user" = String, Path, description = "the user's name"),
    ),
    responses(
        (status = 204, description = "removed, from its teams too"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "the caller does not administer the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation or user, or not a member", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn remove_member(
    State(st): State<AppState>,
    Path((org, user)): Path<(String, String)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let uid = user_id(&st, &user).await?;
    if !st
        .auth
        .store()
        .remove_org_member(org.id, uid)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("{user} is not a member of {}", org.name)));
    }
    audit_log(
        &st,
        &actor,
        "org.member.remove",
        &format!("{}/{user}", org.name),
        None,
    )
    .await?;
    Ok(no_content())
}

/// A team to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    /// Lower-case letters and digits, separated by `.`, `_` or `-`; at most 64 characters.
    name: String,
}

/// A team of an organisation.
#[derive(Serialize, ToSchema)]
pub struct TeamView {
    /// The organisation's name.
    org: String,
    name: String,
}

/// Create a team
///
/// `POST /api/v0/orgs/{org}/teams {"name"}` (the organisation's or the registry's
/// administrators).
#[utoipa::path(post, path = "/orgs/{org}/teams", tag = "organisations", operation_id = "create_team",
    params(("org" = String, Path, description = "the organisation's name")),
    request_body = NewTeam,
    responses(
        (status = 201, description = "the new team", body = TeamView),
        (status = 400, description = "an invalid name or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "the caller does not administer the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation", body = ErrorBody),
        (status = 409, description = "the organisation has a team of that name", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create_team(
    State(st): State<AppState>,
    Path(org): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let body: NewTeam = json_body(req).await?;
    valid_account_name(&body.name)?;
    let team = st
        .auth
        .store()
        .create_team(org.id, &body.name)
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "team.create",
        &format!("{}/{}", org.name, team.name),
        None,
    )
    .await?;
    Ok(created(TeamView {
        org: org.name,
        name: team.name,
    }))
}

async fn team_id(st: &AppState, org: &Org, team: &str) -> Result<i64, ApiError> {
    Ok(st
        .auth
        .store()
        .team_by_name(org.id, team)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("no team {team} in {}", org.name)))?
        .id)
}

/// Add a user to a team
///
/// `PUT /api/v0/orgs/{org}/teams/{team}/members/{user}`: the user also joins the
/// organisation.
#[utoipa::path(put, path = "/orgs/{org}/teams/{team}/members/{user}", tag = "organisations", operation_id = "add_team_member",
    params(
        ("org" = String, Path, description = "the organisation's name"),
        ("team" = String, Path, description = "the team's name"),
        ("user" = String, Path, description = "the user's name"),
    ),
    responses(
        (status = 204, description = "the user is in the team"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "the caller does not administer the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation, team or user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn add_team_member(
    State(st): State<AppState>,
    Path((org, team, user)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let (tid, uid) = (team_id(&st, &org, &team).await?, user_id(&st, &user).await?);
    let store = st.auth.store();
    let facts = store
        .repo_facts(Some(uid), &format!("{}/x", org.name))
        .await
        .map_err(store_error)?;
    if !facts.org_member {
        store
            .set_org_member(org.id, uid, false)
            .await
            .map_err(store_error)?;
    }
    store.add_team_member(tid, uid).await.map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "team.member.add",
        &format!("{}/{team}/{user}", org.name),
        None,
    )
    .await?;
    Ok(no_content())
}

/// Remove a user from a team
///
/// `DELETE /api/v0/orgs/{org}/teams/{team}/members/{user}`: the user stays in the
/// organisation.
#[utoipa::path(delete, path = "/orgs/{org}/teams/{team}/members/{user}", tag = "organisations", operation_id = "remove_team_member",
    params(
        ("org" = String, Path, description = "the organisation's name"),
        ("team" = String, Path, description = "the team's name"),
        ("user" = String, Path, description = "the user's name"),
    ),
    responses(
        (status = 204, description = "the user has left the team"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "the caller does not administer the organisation", body = ErrorBody),
        (status = 404, description = "no such organisation, team or user, or the user is not in the team", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn remove_team_member(
    State(st): State<AppState>,
    Path((org, team, user)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let (tid, uid) = (team_id(&st, &org, &team).await?, user_id(&st, &user).await?);
    if !st
        .auth
        .store()
        .remove_team_member(tid, uid)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("{user} is not in {}/{team}", org.name)));
    }
    audit_log(
        &st,
        &actor,
        "team.member.remove",
        &format!("{}/{team}/{user}", org.name),
        None,
    )
    .await?;
    Ok(no_content())
}
