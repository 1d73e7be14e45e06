//! Users and their access tokens.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_auth::{policy, secret, Principal};
use wharf_metastore::accounts::{AccessToken, User};
use wharf_metastore::now_ms;

use super::*;

/// A user account.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    name: String,
    /// A system administrator.
    admin: bool,
    /// A disabled user cannot sign in; their tokens stop working.
    disabled: bool,
    /// When it was created, in milliseconds since the Unix epoch.
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

/// Who the credentials belong to
///
/// `GET /api/v0/me`.
#[utoipa::path(get, path = "/me", tag = "users", operation_id = "me",
    responses(
        (status = 200, description = "the signed-in user", body = UserView),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn me(State(st): State<AppState>, req: Request) -> ApiResult {
    let p = signed_in(&st, req.headers(), auth::client_addr(&req)).await?;
    let user = p.user().cloned().expect("signed in");
    Ok(Json(UserView::from(user)).into_response())
}

/// Every user
///
/// `GET /api/v0/users` (administrators).
#[utoipa::path(get, path = "/users", tag = "users", operation_id = "list_users",
    responses(
        (status = 200, description = "the users, by name", body = Vec<UserView>),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(State(st): State<AppState>, req: Request) -> ApiResult {
    admin(&st, req.headers(), auth::client_addr(&req)).await?;
    let users = st.auth.store().list_users().await.map_err(store_error)?;
    Ok(Json(users.into_iter().map(UserView::from).collect::<Vec<_>>()).into_response())
}

/// A user to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Lower-case letters and digits, separated by `.`, `_` or `-`; at most 64 characters.
    name: String,
    /// At least 8 characters.
    password: String,
    /// A system administrator (default false).
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

/// Create a user
///
/// `POST /api/v0/users {"name", "password", "admin"}` (administrators).
#[utoipa::path(post, path = "/users", tag = "users", operation_id = "create_user",
    request_body = NewUser,
    responses(
        (status = 201, description = "the new user", body = UserView),
        (status = 400, description = "an invalid name, a short password or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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

/// Changes to a user; what is left out stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// A new password, at least 8 characters.
    password: Option<String>,
    /// Disable (or enable) the user (administrators only).
    disabled: Option<bool>,
    /// Make (or unmake) a system administrator (administrators only).
    admin: Option<bool>,
}

/// Change a user
///
/// `PATCH /api/v0/users/{name} {"password"?, "disabled"?, "admin"?}`: administrators
/// change anything; users change their own password.
#[utoipa::path(patch, path = "/users/{name}", tag = "users", operation_id = "update_user",
    params(("name" = String, Path, description = "the user's name")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "the user as changed", body = UserView),
        (status = 400, description = "a short password or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither an administrator nor the user changing their own password", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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

/// An access token; times are in milliseconds since the Unix epoch.
#[derive(Serialize, ToSchema)]
pub struct TokenView {
    /// Names the token in `DELETE /users/{name}/tokens/{id}`.
    id: i64,
    label: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
    /// None: valid until revoked.
    expires_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    /// The secret (`wharf_…`): only in the response that creates the token, never again.
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

/// A user's access tokens
///
/// `GET /api/v0/users/{name}/tokens`: labels and dates, never the secrets. Users see
/// their own; administrators anyone's. Web UI sessions are not listed (the account page
/// shows them).
#[utoipa::path(get, path = "/users/{name}/tokens", tag = "tokens", operation_id = "list_tokens",
    params(("name" = String, Path, description = "the user's name")),
    responses(
        (status = 200, description = "the user's tokens, without their secrets", body = Vec<TokenView>),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither the user nor an administrator", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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
            // Web UI sessions are kept as token rows; they are not access tokens.
            .filter(|t| t.label != wharf_auth::session::SESSION_LABEL)
            .map(|t| TokenView::new(t, None))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// An access token to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// What it is for, 1 to 200 characters.
    label: String,
    /// Lifetime in seconds; none for a token that lives until revoked.
    expires_in_secs: Option<u64>,
}

/// Create an access token
///
/// `POST /api/v0/users/{name}/tokens {"label", "expires_in_secs"?}`: the secret is in
/// this response and nowhere else, ever.
#[utoipa::path(post, path = "/users/{name}/tokens", tag = "tokens", operation_id = "create_token",
    params(("name" = String, Path, description = "the user's name")),
    request_body = NewToken,
    responses(
        (status = 201, description = "the new token, with its secret in `token`", body = TokenView),
        (status = 400, description = "a missing or too long label, or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither the user nor an administrator", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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

/// Revoke an access token
///
/// `DELETE /api/v0/users/{name}/tokens/{id}`: revoked at once on every replica.
#[utoipa::path(delete, path = "/users/{name}/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(
        ("name" = String, Path, description = "the user's name"),
        ("id" = i64, Path, description = "the token's id"),
    ),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "neither the user nor an administrator", body = ErrorBody),
        (status = 404, description = "no such user, or no such active token", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
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
