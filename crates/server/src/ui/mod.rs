//! The web UI, served at `/` by every replica from the binary: server-rendered HTML
//! (askama templates, checked at compile time), one stylesheet and a little JavaScript
//! that only enhances (copy buttons, confirmations, the live job log). Signed-in users
//! hold a session kept in the metadata store ([`wharf_auth::session`]), so any replica
//! serves them. `/api/v0` never accepts the session cookie: scripts use tokens, and a
//! forged cross-site request can carry a cookie but not an `Authorization` header.

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::AppState;
use page::{render, render_status, Layout, UiResult};
use session::{read_form, safe_next, see_other, signed_form, Visitor};

mod account;
pub mod assets;
mod caches;
mod explorer;
mod headers;
mod image;
mod jobs;
pub(crate) mod page;
mod repos;
pub mod session;
mod settings;
mod system;
mod users;
mod vulns;

pub use headers::CONTENT_SECURITY_POLICY;
pub(crate) use repos::registry_host;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(repos::list))
        .route("/repos/{*path}", get(repos::dispatch).post(repos::dispatch))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/account", get(account::page))
        .route("/account/tokens", post(account::create_token))
        .route("/account/content_cache", post(account::choose_cache))
        .route("/account/tokens/{id}/revoke", post(account::revoke_token))
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/schedules", axum::routing::post(jobs::schedules))
        .route("/jobs/{id}", get(jobs::page))
        .route("/jobs/{id}/tail", get(jobs::tail))
        .route("/gc", get(system::gc).post(system::start_gc))
        .route("/system", get(system::system))
        .route("/admin/caches", get(caches::page).post(caches::post))
        .route("/audit", get(system::audit))
        .route("/admin/users", get(users::users).post(users::users_post))
        .route("/admin/orgs", get(users::orgs).post(users::orgs_post))
        .route("/admin/orgs/{org}", get(users::org).post(users::org_post))
        .route("/static/{*name}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .route("/explorer", get(explorer::page))
        .route("/vulndb", get(vulns::vulndb))
        .route("/vulndb/upload", post(vulns::vulndb_upload))
        .route("/vulndb/{what}", post(vulns::vulndb_action))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(headers::security_headers))
}

async fn not_found() -> Response {
    page::UiError::NotFound("there is no such page".into()).into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    next: String,
    name: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// `GET /login`.
async fn login_page(
    State(st): State<AppState>,
    visitor: Visitor,
    Query(q): Query<LoginQuery>,
) -> UiResult {
    if visitor.session.is_some() {
        return Ok(see_other(safe_next(&q.next)));
    }
    Ok(render(&LoginPage {
        l: visitor.layout(&st, "Sign in", "login"),
        next: safe_next(&q.next).to_string(),
        name: String::new(),
        error: None,
    }))
}

/// `POST /login`: a password or an access token; failures count against the same
/// limits as every other sign-in. A new session id every time (no fixation).
async fn login(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    let addr = crate::auth::client_addr(&req);
    let form = read_form(req).await?;
    let name = form.get("name").trim().to_string();
    let next = safe_next(form.get("next")).to_string();
    let failed = |status: StatusCode, error: String| {
        render_status(
            status,
            &LoginPage {
                l: visitor.layout(&st, "Sign in", "login"),
                next: next.clone(),
                name: name.clone(),
                error: Some(error),
            },
        )
    };
    match st.auth.sign_in(&name, form.get("secret"), addr).await {
        Ok((secret, s)) => {
            st.auth
                .store()
                .audit(
                    &s.user.name,
                    "session.start",
                    &s.id.to_string(),
                    Some("web UI"),
                )
                .await?;
            let mut resp = see_other(&next);
            resp.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(st.settings.tls, &secret),
            );
            Ok(resp)
        }
        Err(wharf_auth::AuthError::InvalidCredentials) => Ok(failed(
            StatusCode::UNAUTHORIZED,
            "Wrong user name, password or token.".into(),
        )),
        Err(wharf_auth::AuthError::RateLimited(secs)) => Ok(failed(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed sign-ins. Try again in {secs} s."),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`: ends the session in the shared store, not only in this browser.
async fn logout(State(st): State<AppState>, visitor: Visitor, req: Request) -> UiResult {
    if let Some(s) = &visitor.session {
        signed_form(&visitor, req).await?;
        st.auth.end_session(s).await?;
        st.auth
            .store()
            .audit(&s.user.name, "session.end", &s.id.to_string(), None)
            .await?;
    }
    let mut resp = see_other("/");
    resp.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(st.settings.tls));
    Ok(resp)
}
