//! Organisations, their members and teams.

use axum::extract::{Path, Request, State};
use serde::Deserialize;
use wharf_auth::{policy, Principal};
use wharf_metastore::accounts::Org;

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    name: String,
}

/// `POST /api/v0/orgs {"name"}` (administrators).
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
    Ok(created(serde_json::json!({ "name": org.name })))
}

/// The organisation, if the caller administers it (or the registry).
async fn managed_org(st: &AppState, actor: &Principal, org: &str) -> Result<Org, ApiError> {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    #[serde(default)]
    admin: bool,
}

/// `PUT /api/v0/orgs/{org}/members/{user} {"admin": bool}`
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

/// `DELETE /api/v0/orgs/{org}/members/{user}`: also leaves the organisation's teams.
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

/// `POST /api/v0/orgs/{org}/teams {"name"}`
pub async fn create_team(
    State(st): State<AppState>,
    Path(org): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let org = managed_org(&st, &actor, &org).await?;
    let body: NewOrg = json_body(req).await?;
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
    Ok(created(
        serde_json::json!({ "org": org.name, "name": team.name }),
    ))
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

/// `PUT /api/v0/orgs/{org}/teams/{team}/members/{user}`: the user also joins the org.
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

/// `DELETE /api/v0/orgs/{org}/teams/{team}/members/{user}`
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
