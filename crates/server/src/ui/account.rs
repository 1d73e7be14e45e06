//! The signed-in user's own page: access tokens (created, shown once, revoked) and
//! their signed-in browser sessions.

use askama::Template;
use axum::extract::{Path, Request, State};
use wharf_auth::session::SESSION_LABEL;

use super::page::{opt_time, render, time, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

struct TokenRow {
    id: i64,
    label: String,
    created: String,
    last_used: String,
    expires: String,
    state: &'static str,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    l: Layout,
    name: String,
    admin: bool,
    tokens: Vec<TokenRow>,
    sessions: Vec<TokenRow>,
    current_session: i64,
    /// A token just created: shown this once.
    new_token: Option<(String, String)>,
    error: Option<String>,
    /// The content caches to choose from: name, region, whether it serves now.
    caches: Vec<(String, String, bool)>,
    /// The user's own choice.
    cache_choice: Option<String>,
}

async fn render_page(
    st: &AppState,
    visitor: &Visitor,
    new_token: Option<(String, String)>,
    error: Option<String>,
) -> UiResult {
    let session = visitor.require_user()?;
    let now = wharf_metastore::now_ms();
    let mut tokens = Vec::new();
    let mut sessions = Vec::new();
    for t in st.auth.store().list_tokens(session.user.id).await? {
        let state = if t.revoked_at_ms.is_some() {
            "revoked"
        } else if t.expires_at_ms.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        let row = TokenRow {
            id: t.id,
            created: time(t.created_at_ms),
            last_used: opt_time(t.last_used_at_ms),
            expires: t.expires_at_ms.map(time).unwrap_or_else(|| "never".into()),
            state,
            label: t.label,
        };
        if row.label == SESSION_LABEL {
            if state == "active" {
                sessions.push(row);
            }
        } else {
            tokens.push(row);
        }
    }
    let meta = st.registry.meta();
    // A store without the caches' tables (a rollback window) offers none.
    let caches = crate::content_cache::cache_views(meta.as_ref())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.region, c.routed))
        .collect();
    let cache_choice = meta
        .content_cache_choice(wharf_metastore::accounts::Subject::User(session.user.id))
        .await
        .unwrap_or_default();
    Ok(render(&AccountPage {
        l: visitor.layout(st, "Your account", "account"),
        caches,
        cache_choice,
        name: session.user.name.clone(),
        admin: session.user.is_admin,
        tokens,
        sessions,
        current_session: session.id,
        new_token,
        error,
    }))
}

/// `GET /account`.
pub async fn page(State(st): State<AppState>, visitor: Visitor) -> UiResult {
    render_page(&st, &visitor, None, None).await
}

/// `POST /account/tokens`: a new access token, shown once on the page this answers
/// with (never put in a URL or a redirect).
pub async fn create_token(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    let session = visitor.require_user()?.clone();
    let form = signed_form(&visitor, req).await?;
    let label = form.get("label").trim().to_string();
    if label.is_empty() || label.len() > 100 {
        return render_page(
            &st,
            &visitor,
            None,
            Some("a token needs a label of 1 to 100 characters".into()),
        )
        .await;
    }
    let expires_at_ms = match form.get("days").trim() {
        "" | "0" => None,
        d => match d.parse::<i64>() {
            Ok(days) if (1..=3650).contains(&days) => {
                Some(wharf_metastore::now_ms() + days * 86_400_000)
            }
            _ => {
                return render_page(
                    &st,
                    &visitor,
                    None,
                    Some("expiry must be 1 to 3650 days, or empty for never".into()),
                )
                .await
            }
        },
    };
    let (secret, token) = match st
        .auth
        .create_access_token(&session.user, &label, expires_at_ms)
        .await
    {
        Ok(t) => t,
        Err(wharf_auth::AuthError::ReservedLabel) => {
            return render_page(
                &st,
                &visitor,
                None,
                Some(format!("the label {label:?} is reserved")),
            )
            .await
        }
        Err(e) => return Err(e.into()),
    };
    st.auth
        .store()
        .audit(
            &session.user.name,
            "token.create",
            &token.id.to_string(),
            Some(&label),
        )
        .await?;
    render_page(&st, &visitor, Some((label, secret)), None).await
}

/// `POST /account/tokens/{id}/revoke` (also ends one of the user's own sessions).
pub async fn revoke_token(
    State(st): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    req: Request,
) -> UiResult {
    let session = visitor.require_user()?.clone();
    signed_form(&visitor, req).await?;
    if !st.auth.store().revoke_token(session.user.id, id).await? {
        return Err(UiError::NotFound(format!("you have no token {id}")));
    }
    st.auth
        .store()
        .audit(&session.user.name, "token.revoke", &id.to_string(), None)
        .await?;
    Ok(see_other(if id == session.id {
        "/login"
    } else {
        "/account"
    }))
}

/// `POST /account/content_cache`: the cache the user's downloads are redirected to.
pub async fn choose_cache(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    let session = visitor.require_user()?.clone();
    let form = signed_form(&visitor, req).await?;
    let choice = match form.get("cache").trim() {
        "" => None,
        c => Some(c.to_string()),
    };
    let subject = wharf_metastore::accounts::Subject::User(session.user.id);
    match st
        .registry
        .meta()
        .choose_content_cache(subject, choice.as_deref())
        .await
    {
        Ok(()) => {}
        Err(wharf_metastore::MetaError::Conflict(m)) => {
            return render_page(&st, &visitor, None, Some(m)).await
        }
        Err(e) => return Err(e.into()),
    }
    st.auth
        .store()
        .audit(
            &session.user.name,
            "content_cache.choose",
            &format!("user:{}", session.user.name),
            Some(choice.as_deref().unwrap_or("none")),
        )
        .await?;
    Ok(see_other("/account"))
}
