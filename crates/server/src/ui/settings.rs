//! A repository's settings, for its administrators: visibility, and grants to users
//! and teams (the same store operations as `/api/v0/repositories/<name>/_settings`).

use askama::Template;
use axum::extract::Request;
use axum::http::Method;
use wharf_metastore::accounts::{Level, Subject, Visibility};
use wharf_oci::RepoName;

use super::page::{render, Layout, UiError, UiResult};
use super::session::{see_other, signed_form, Visitor};
use crate::AppState;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    l: Layout,
    repo: String,
    public: bool,
    grants: Vec<(String, String, String)>,
    error: Option<String>,
}

pub async fn page(
    st: &AppState,
    visitor: &Visitor,
    repo: &RepoName,
    access: &wharf_auth::RepoAccess,
    req: Request,
) -> UiResult {
    if !access.admin {
        return Err(UiError::Forbidden(format!(
            "only administrators of {repo} may change its settings"
        )));
    }
    let store = st.auth.store();
    let mut error = None;
    if req.method() == Method::POST {
        let form = signed_form(visitor, req).await?;
        let actor = visitor.principal();
        match form.get("op") {
            "visibility" => {
                let v = match form.get("visibility") {
                    "public" => Visibility::Public,
                    "private" => Visibility::Private,
                    other => {
                        return Err(UiError::BadRequest(format!("unknown visibility {other:?}")))
                    }
                };
                store.set_visibility(repo.as_str(), v).await?;
                store
                    .audit(
                        actor.name(),
                        "repository.visibility",
                        repo.as_str(),
                        Some(v.as_str()),
                    )
                    .await?;
                return Ok(see_other(&format!("/repos/{repo}?done=settings-saved")));
            }
            op @ ("grant" | "revoke") => {
                let who = form.get("subject").trim().to_string();
                let subject = match subject(st, form.get("kind"), &who).await? {
                    Ok(s) => Some(s),
                    Err(e) => {
                        error = Some(e);
                        None
                    }
                };
                if let Some(subject) = subject {
                    if op == "grant" {
                        let level = Level::parse(form.get("level")).ok_or_else(|| {
                            UiError::BadRequest("level must be read, write or admin".into())
                        })?;
                        store.grant(repo.as_str(), subject, level).await?;
                    } else {
                        store.revoke_grant(repo.as_str(), subject).await?;
                    }
                    store
                        .audit(
                            actor.name(),
                            &format!("repository.{op}"),
                            repo.as_str(),
                            Some(&who),
                        )
                        .await?;
                    return Ok(see_other(&format!("/repos/{repo}/-/settings")));
                }
            }
            other => return Err(UiError::BadRequest(format!("unknown operation {other:?}"))),
        }
    }
    let facts = store.repo_facts(None, repo.as_str()).await?;
    Ok(render(&SettingsPage {
        l: visitor.layout(st, format!("Settings of {repo}"), "repos"),
        repo: repo.to_string(),
        public: facts.visibility == Some(Visibility::Public),
        grants: st.registry.meta().repo_grants(repo.as_str()).await?,
        error,
    }))
}

/// A user by name, or a team as `org/team`; the inner error is shown on the page.
async fn subject(st: &AppState, kind: &str, who: &str) -> Result<Result<Subject, String>, UiError> {
    let store = st.auth.store();
    Ok(match kind {
        "user" => match store.user_credentials(who).await? {
            Some(c) => Ok(Subject::User(c.user.id)),
            None => Err(format!("there is no user {who:?}")),
        },
        "team" => {
            let Some((org, team)) = who.split_once('/') else {
                return Ok(Err("name a team as organisation/team".into()));
            };
            match store.org_by_name(org).await? {
                None => Err(format!("there is no organisation {org:?}")),
                Some(o) => match store.team_by_name(o.id, team).await? {
                    Some(t) => Ok(Subject::Team(t.id)),
                    None => Err(format!("{org:?} has no team {team:?}")),
                },
            }
        }
        _ => Err("choose a user or a team".into()),
    })
}
