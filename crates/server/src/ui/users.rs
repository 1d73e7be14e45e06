//! Users, organisations and teams, for administrators: the management API's abilities
//! (create, disable, make administrator, reset a password, membership, teams).

use askama::Template;
use axum::extract::{Path, Request, State};
use wharf_metastore::browse::OrgDetail;

use super::page::{render, render_status, time, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

struct UserRow {
    name: String,
    admin: bool,
    disabled: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    l: Layout,
    users: Vec<UserRow>,
    error: Option<String>,
}

async fn users_page(st: &AppState, visitor: &Visitor, error: Option<String>) -> UiResult {
    let users = st
        .auth
        .store()
        .list_users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            created: time(u.created_at_ms),
            name: u.name,
            admin: u.is_admin,
            disabled: u.disabled,
        })
        .collect();
    let status = super::page::form_status(&error);
    Ok(render_status(
        status,
        &UsersPage {
            l: visitor.layout(st, "Users", "users"),
            users,
            error,
        },
    ))
}

/// `GET /admin/users`.
pub async fn users(State(st): State<AppState>, visitor: Visitor) -> UiResult {
    visitor.require_admin()?;
    users_page(&st, &visitor, None).await
}

fn valid_name(name: &str) -> Result<(), String> {
    crate::api::valid_account_name(name).map_err(|e| e.detail)
}

/// `POST /admin/users`: `op` = `create` (name, password, admin), `disable`, `enable`,
/// `make-admin`, `revoke-admin`, `password` (name, password).
pub async fn users_post(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let store = st.auth.store();
    let actor = visitor.principal();
    let name = form.get("name").trim().to_string();
    let password = form.get("password").to_string();
    let check_password = |pw: &str| {
        if pw.chars().count() < 8 {
            Err("passwords need at least 8 characters".to_string())
        } else {
            Ok(())
        }
    };
    let (found, what) = match form.get("op") {
        "create" => {
            if let Err(e) = valid_name(&name).and_then(|_| check_password(&password)) {
                return users_page(&st, &visitor, Some(e)).await;
            }
            let hash = hash(password).await;
            match store.create_user(&name, &hash, form.checked("admin")).await {
                Ok(_) => (true, "user.create"),
                Err(wharf_metastore::MetaError::Conflict(_)) => {
                    return users_page(&st, &visitor, Some(format!("the name {name:?} is taken")))
                        .await
                }
                Err(e) => return Err(e.into()),
            }
        }
        "disable" => {
            if visitor.user().is_some_and(|u| u.name == name) {
                return users_page(&st, &visitor, Some("you cannot disable yourself".into())).await;
            }
            (store.set_disabled(&name, true).await?, "user.disable")
        }
        "enable" => (store.set_disabled(&name, false).await?, "user.enable"),
        "make-admin" => (store.set_admin(&name, true).await?, "user.admin"),
        "revoke-admin" => {
            if visitor.user().is_some_and(|u| u.name == name) {
                return users_page(
                    &st,
                    &visitor,
                    Some("you cannot revoke your own administration".into()),
                )
                .await;
            }
            (store.set_admin(&name, false).await?, "user.unadmin")
        }
        "password" => {
            if let Err(e) = check_password(&password) {
                return users_page(&st, &visitor, Some(e)).await;
            }
            (
                store.set_password(&name, &hash(password).await).await?,
                "user.password",
            )
        }
        other => return Err(UiError::BadRequest(format!("unknown operation {other:?}"))),
    };
    if !found {
        return users_page(&st, &visitor, Some(format!("there is no user {name:?}"))).await;
    }
    store
        .audit(actor.name(), what, &name, Some("web UI"))
        .await?;
    Ok(see_other("/admin/users"))
}

async fn hash(password: String) -> String {
    tokio::task::spawn_blocking(move || wharf_auth::secret::hash_password(&password))
        .await
        .expect("hashing does not panic")
}

#[derive(Template)]
#[template(path = "orgs.html")]
struct OrgsPage {
    l: Layout,
    orgs: Vec<(String, u64, u64)>,
    error: Option<String>,
}

/// `GET /admin/orgs`.
pub async fn orgs(State(st): State<AppState>, visitor: Visitor) -> UiResult {
    visitor.require_admin()?;
    Ok(render(&OrgsPage {
        l: visitor.layout(&st, "Organisations", "orgs"),
        orgs: st.registry.meta().list_orgs().await?,
        error: None,
    }))
}

/// `POST /admin/orgs`: creates an organisation.
pub async fn orgs_post(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let name = form.get("name").trim().to_string();
    let error = match valid_name(&name) {
        Err(e) => Some(e),
        Ok(()) => match st.auth.store().create_org(&name).await {
            Ok(_) => None,
            Err(wharf_metastore::MetaError::Conflict(_)) => {
                Some(format!("the name {name:?} is taken"))
            }
            Err(e) => return Err(e.into()),
        },
    };
    if let Some(error) = error {
        return Ok(render_status(
            axum::http::StatusCode::BAD_REQUEST,
            &OrgsPage {
                l: visitor.layout(&st, "Organisations", "orgs"),
                orgs: st.registry.meta().list_orgs().await?,
                error: Some(error),
            },
        ));
    }
    st.auth
        .store()
        .audit(
            visitor.principal().name(),
            "org.create",
            &name,
            Some("web UI"),
        )
        .await?;
    Ok(see_other(&format!("/admin/orgs/{name}")))
}

#[derive(Template)]
#[template(path = "org.html")]
struct OrgPage {
    l: Layout,
    name: String,
    detail: OrgDetail,
    error: Option<String>,
}

async fn org_page(st: &AppState, visitor: &Visitor, name: &str, error: Option<String>) -> UiResult {
    let detail = st
        .registry
        .meta()
        .org_detail(name)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no organisation {name}")))?;
    let status = super::page::form_status(&error);
    Ok(render_status(
        status,
        &OrgPage {
            l: visitor.layout(st, format!("Organisation {name}"), "orgs"),
            name: name.to_string(),
            detail,
            error,
        },
    ))
}

/// `GET /admin/orgs/{org}`.
pub async fn org(
    State(st): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
) -> UiResult {
    visitor.require_admin()?;
    org_page(&st, &visitor, &name, None).await
}

/// `POST /admin/orgs/{org}`: `op` = `member` (user, admin), `remove-member` (user),
/// `team` (team), `team-member` (team, user), `remove-team-member` (team, user).
pub async fn org_post(
    State(st): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    req: Request,
) -> UiResult {
    visitor.require_admin()?;
    let form = signed_form(&visitor, req).await?;
    let store = st.auth.store();
    let org = store
        .org_by_name(&name)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no organisation {name}")))?;
    let user = form.get("user").trim().to_string();
    let team = form.get("team").trim().to_string();
    let user_id = || async {
        match store.user_credentials(&user).await? {
            Some(c) => Ok::<_, UiError>(Ok(c.user.id)),
            None => Ok(Err(format!("there is no user {user:?}"))),
        }
    };
    let team_id = || async {
        match store.team_by_name(org.id, &team).await? {
            Some(t) => Ok::<_, UiError>(Ok(t.id)),
            None => Ok(Err(format!("{name} has no team {team:?}"))),
        }
    };
    let outcome: Result<&str, String> = match form.get("op") {
        "member" => match user_id().await? {
            Ok(uid) => {
                store
                    .set_org_member(org.id, uid, form.checked("admin"))
                    .await?;
                Ok("org.member")
            }
            Err(e) => Err(e),
        },
        "remove-member" => match user_id().await? {
            Ok(uid) => {
                store.remove_org_member(org.id, uid).await?;
                Ok("org.remove_member")
            }
            Err(e) => Err(e),
        },
        "team" => match valid_name(&team) {
            Err(e) => Err(e),
            Ok(()) => match store.create_team(org.id, &team).await {
                Ok(_) => Ok("team.create"),
                Err(wharf_metastore::MetaError::Conflict(_)) => {
                    Err(format!("{name} already has a team {team:?}"))
                }
                Err(e) => return Err(e.into()),
            },
        },
        op @ ("team-member" | "remove-team-member") => match (team_id().await?, user_id().await?) {
            (Ok(tid), Ok(uid)) => {
                if op == "team-member" {
                    store.add_team_member(tid, uid).await?;
                    Ok("team.member")
                } else {
                    store.remove_team_member(tid, uid).await?;
                    Ok("team.remove_member")
                }
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        other => return Err(UiError::BadRequest(format!("unknown operation {other:?}"))),
    };
    match outcome {
        Ok(action) => {
            let target = if team.is_empty() {
                name.clone()
            } else {
                format!("{name}/{team}")
            };
            store
                .audit(visitor.principal().name(), action, &target, Some(&user))
                .await?;
            Ok(see_other(&format!("/admin/orgs/{name}")))
        }
        Err(e) => org_page(&st, &visitor, &name, Some(e)).await,
    }
}
