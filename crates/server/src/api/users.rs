//! Users and their access tokens.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use wharf_auth::{policy, secret, Principal};
use wharf_metastore::accounts::{AccessToken, User};
use wharf_metastore::now_ms;

use super::*;

#[derive(Serialize)]
pub struct UserView {
    name: String,
    admin: bool,
    disabled: bool,
    created_at_ms: i64,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            name: u.name,
            admin: u.is_admin,
            disabled: u.disabled,
            created_at_ms: u.created_at_ms,
        }
    }
}

/// `GET /api/v0/me`: who the credentials belong to.
pub async fn me(State(st): State<AppState>, req: Request) -> ApiResult {
    let p = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let user = p.user().cloned().expect("signed in");
    Ok(Json(UserView::from(user)).into_response())
}

/// `GET /api/v0/users`
pub async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let users = st.auth.store().list_users().await.map_err(store_error)?;
    Ok(Json(users.into_iter().map(UserView::from).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

/// Passwords shorter than this are refused.
const MIN_PASSWORD_LEN: usize = 8;

pub fn check_password(pw: &str) -> Result<(), ApiError> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(format!(
            "passwords need at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// `POST /api/v0/users {"name", "password", "admin"}`
pub async fn create(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let body: NewUser = json_body(req).await?;
    valid_account_name(&body.name)?;
    check_password(&body.password)?;
    let hash = hash_blocking(body.password).await;
    let user = st
        .auth
        .store()
        .create_user(&body.name, &hash, body.admin)
        .await
        .map_err(store_error)?;
    audit_log(
        &st,
        &actor,
        "user.create",
        &user.name,
        Some(format!("admin={}", user.is_admin)),
    )
    .await?;
    Ok(created(UserView::from(user)))
}

pub async fn hash_blocking(password: String) -> String {
    tokio::task::spawn_blocking(move || secret::hash_password(&password))
        .await
        .expect("hashing does not panic")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    password: Option<String>,
    disabled: Option<bool>,
    admin: Option<bool>,
}

/// `PATCH /api/v0/users/{name} {"password"?, "disabled"?, "admin"?}`: administrators
/// change anything; users change their own password.
pub async fn update(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let is_admin = policy::is_system_admin(actor.user());
    let body: UserUpdate = json_body(req).await?;
    let own = actor.user().is_some_and(|u| u.name == name);
    if !is_admin && (!own || body.disabled.is_some() || body.admin.is_some()) {
        return Err(denied(&actor, &format!("change the user {name}")));
    }
    let store = st.auth.store();
    let mut changes = Vec::new();
    if let Some(pw) = body.password {
        check_password(&pw)?;
        let hash = hash_blocking(pw).await;
        if !store
            .set_password(&name, &hash)
            .await
            .map_err(store_error)?
        {
            return Err(not_found(format!("no user {name}")));
        }
        changes.push("password".to_string());
    }
    if let Some(d) = body.disabled {
        if !store.set_disabled(&name, d).await.map_err(store_error)? {
            return Err(not_found(format!("no user {name}")));
        }
        changes.push(format!("disabled={d}"));
    }
    if let Some(a) = body.admin {
        if !store.set_admin(&name, a).await.map_err(store_error)? {
            return Err(not_found(format!("no user {name}")));
        }
        changes.push(format!("admin={a}"));
    }
    audit_log(&st, &actor, "user.update", &name, Some(changes.join(","))).await?;
    Ok(Json(UserView::from(find_user(&st, &name).await?)).into_response())
}

/// The user `name`, if the caller may manage its tokens (itself, or an administrator).
async fn token_owner(st: &AppState, actor: &Principal, name: &str) -> Result<User, ApiError> {
    let own = actor.user().is_some_and(|u| u.name == name);
    if !own && !policy::is_system_admin(actor.user()) {
        return Err(denied(actor, &format!("manage the tokens of {name}")));
    }
    find_user(st, name).await
}

#[derive(Serialize)]
struct TokenView {
    id: i64,
    label: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
    expires_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn new(t: AccessToken, secret: Option<String>) -> Self {
        TokenView {
            id: t.id,
            label: t.label,
            created_at_ms: t.created_at_ms,
            last_used_at_ms: t.last_used_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked_at_ms: t.revoked_at_ms,
            token: secret,
        }
    }
}

/// `GET /api/v0/users/{name}/tokens`: labels and dates, never the secrets.
pub async fn list_tokens(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let user = token_owner(&st, &actor, &name).await?;
    let tokens = st
        .auth
        .store()
        .list_tokens(user.id)
        .await
        .map_err(store_error)?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenView::new(t, None))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    label: String,
    /// Lifetime in seconds; none for a token that lives until revoked.
    expires_in_secs: Option<u64>,
}

/// `POST /api/v0/users/{name}/tokens {"label", "expires_in_secs"?}`: the secret is in
/// this response and nowhere else, ever.
pub async fn create_token(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let user = token_owner(&st, &actor, &name).await?;
    let body: NewToken = json_body(req).await?;
    if body.label.trim().is_empty() || body.label.len() > 200 {
        return Err(invalid("a token needs a label of 1 to 200 characters"));
    }
    let expires = body
        .expires_in_secs
        .map(|s| now_ms().saturating_add((s as i64).saturating_mul(1000)));
    let (secret, token) = st
        .auth
        .create_access_token(&user, &body.label, expires)
        .await
        .map_err(|e| match e {
            wharf_auth::AuthError::Store(e) => store_error(e),
            other => invalid(other.to_string()),
        })?;
    audit_log(
        &st,
        &actor,
        "token.create",
        &name,
        Some(format!("id={} label={}", token.id, token.label)),
    )
    .await?;
    Ok(created(TokenView::new(token, Some(secret))))
}

/// `DELETE /api/v0/users/{name}/tokens/{id}`: revoked at once on every replica.
pub async fn revoke_token(
    State(st): State<AppState>,
    Path((name, id)): Path<(String, i64)>,
    req: Request,
) -> ApiResult {
    let actor = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let user = token_owner(&st, &actor, &name).await?;
    if !st
        .auth
        .store()
        .revoke_token(user.id, id)
        .await
        .map_err(store_error)?
    {
        return Err(not_found(format!("{name} has no active token {id}")));
    }
    audit_log(&st, &actor, "token.revoke", &name, Some(format!("id={id}"))).await?;
    Ok(no_content())
}
