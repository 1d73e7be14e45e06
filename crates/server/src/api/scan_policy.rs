//! Vulnerability scan policies and their allowlists (docs/scanning.md, "Policies").
//!
//! A repository's, under the hand-routed `/api/v0/repositories/<name>/…` (its
//! administrators):
//! - `GET|PUT|DELETE <name>/_scan_policy` `{"scan_on_push", "block_severity",
//!   "unscanned", "attach_sbom"}`
//! - `GET <name>/_scan_allowlist`, `PUT|DELETE <name>/_scan_allowlist/<vuln id>`
//!   `{"expires_at", "reason"}`
//!
//! The registry's default and registry-wide allowlist (registry administrators):
//! `GET|PUT /api/v0/scan_policy`, `GET /api/v0/scan_allowlist`,
//! `PUT|DELETE /api/v0/scan_allowlist/<vuln id>`.
//!
//! Every change is audited and drops this replica's cached policies; other replicas
//! enforce it within [`wharf_registry::POLICY_CACHE_TTL`].

use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_auth::Principal;
use wharf_metastore::scan::{AllowRow, ScanPolicy};
use wharf_oci::RepoName;

use super::*;

/// The registry-wide rows' repository in the store.
const REGISTRY: &str = "";

/// Whether the hand-routed `rest` (`<name>/_…`) is one of this module's forms.
pub fn handles(rest: &str) -> bool {
    rest.split_once("/_").is_some_and(|(_, tail)| {
        tail == "scan_policy" || tail == "scan_allowlist" || tail.starts_with("scan_allowlist/")
    })
}

/// A severity threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockSeverity {
    Critical,
    High,
    Medium,
    Low,
    Unknown,
}

impl BlockSeverity {
    fn as_str(self) -> &'static str {
        match self {
            BlockSeverity::Critical => "critical",
            BlockSeverity::High => "high",
            BlockSeverity::Medium => "medium",
            BlockSeverity::Low => "low",
            BlockSeverity::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<BlockSeverity> {
        Some(match s {
            "critical" => BlockSeverity::Critical,
            "high" => BlockSeverity::High,
            "medium" => BlockSeverity::Medium,
            "low" => BlockSeverity::Low,
            "unknown" => BlockSeverity::Unknown,
            _ => return None,
        })
    }
}

/// Pulls of images without a successful scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnscannedRule {
    Allow,
    Refuse,
}

/// A scan policy to set. Fields left out take the built-in default's value.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Queue a scan when an image is pushed (default `true`).
    #[serde(default = "yes")]
    scan_on_push: bool,
    /// Refuse pulls of images with a vulnerability this severe or worse that is not
    /// allowlisted; `null` (the default): never.
    #[serde(default)]
    block_severity: Option<BlockSeverity>,
    /// `allow` (the default) or `refuse` pulls of images not scanned yet, or whose
    /// scan failed.
    #[serde(default = "allow")]
    unscanned: UnscannedRule,
    /// Attach an SBOM to scanned images as a referrer (default `false`).
    #[serde(default)]
    attach_sbom: bool,
}

fn yes() -> bool {
    true
}

fn allow() -> UnscannedRule {
    UnscannedRule::Allow
}

/// The policy in force.
#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    scan_on_push: bool,
    block_severity: Option<BlockSeverity>,
    unscanned: UnscannedRule,
    attach_sbom: bool,
    /// Where it comes from: `repository` (set on it), `registry` (the registry's
    /// default) or `default` (nothing set: the built-in default).
    source: &'static str,
    /// When it was set, in milliseconds since the Unix epoch; `null` for the built-in
    /// default.
    updated_at_ms: Option<i64>,
}

impl PolicyView {
    fn of(policy: &ScanPolicy, source: &'static str, updated_at_ms: Option<i64>) -> PolicyView {
        PolicyView {
            scan_on_push: policy.scan_on_push,
            block_severity: policy
                .block_severity
                .as_deref()
                .and_then(BlockSeverity::parse),
            unscanned: if policy.unscanned == "refuse" {
                UnscannedRule::Refuse
            } else {
                UnscannedRule::Allow
            },
            attach_sbom: policy.attach_sbom,
            source,
            updated_at_ms,
        }
    }

    fn builtin() -> PolicyView {
        // As `wharf_scan::policy::Policy::default()`.
        PolicyView {
            scan_on_push: true,
            block_severity: None,
            unscanned: UnscannedRule::Allow,
            attach_sbom: false,
            source: "default",
            updated_at_ms: None,
        }
    }
}

/// An allowlist entry to add or replace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowBody {
    /// When the entry stops applying, in Unix seconds (in the future); `null`: never.
    expires_at: Option<i64>,
    /// Why the vulnerability is accepted (required).
    reason: String,
}

/// An allowlist entry.
#[derive(Serialize, ToSchema)]
pub struct AllowView {
    /// An advisory id or alias (`CVE-…`, `GHSA-…`), compared case-insensitively.
    vuln_id: String,
    /// `true` for a registry-wide entry (it applies to every repository).
    registry_wide: bool,
    /// Unix seconds; `null`: never expires.
    expires_at: Option<i64>,
    /// Whether it has expired (it no longer lets anything through).
    expired: bool,
    reason: String,
    created_by: String,
    created_at_ms: i64,
}

impl AllowView {
    fn of(row: AllowRow) -> AllowView {
        let now = wharf_metastore::now_ms();
        AllowView {
            registry_wide: row.repository.is_empty(),
            expires_at: row.expires_at_ms.map(|ms| ms.div_euclid(1000)),
            expired: row.expires_at_ms.is_some_and(|ms| ms <= now),
            vuln_id: row.vuln_id,
            reason: row.reason,
            created_by: row.created_by,
            created_at_ms: row.created_at_ms,
        }
    }
}

/// What a request is about: a repository's policy or the registry's.
enum Scope {
    Repo(RepoName),
    Registry,
}

impl Scope {
    fn key(&self) -> &str {
        match self {
            Scope::Repo(r) => r.as_str(),
            Scope::Registry => REGISTRY,
        }
    }

    /// The audit log's target.
    fn target(&self) -> String {
        match self {
            Scope::Repo(r) => r.to_string(),
            Scope::Registry => "(registry)".into(),
        }
    }
}

enum Form {
    Policy,
    Allowlist,
    Allow(String),
}

fn parse(rest: &str) -> Result<(RepoName, Form), ApiError> {
    let bad = || not_found(format!("no such endpoint: /api/v0/repositories/{rest}"));
    let (name, tail) = rest.split_once("/_").ok_or_else(bad)?;
    let repo: RepoName = name
        .parse()
        .map_err(|e: wharf_oci::NameError| invalid(e.to_string()))?;
    let form = match tail.split_once('/') {
        None if tail == "scan_policy" => Form::Policy,
        None if tail == "scan_allowlist" => Form::Allowlist,
        Some(("scan_allowlist", id)) => Form::Allow(vuln_id(id)?),
        _ => return Err(bad()),
    };
    Ok((repo, form))
}

/// A vulnerability id as an allowlist takes it: an advisory id or alias.
fn vuln_id(id: &str) -> Result<String, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(invalid(format!(
            "{id:?} is not a vulnerability id: an advisory id or alias such as CVE-2023-1234 \
             or GHSA-xxxx-xxxx-xxxx (letters, digits, '-', '_', '.', ':'; at most 128)"
        )))
    }
}

/// The store's error, with a clear one for a store without the scanning tables.
fn scan_store_error(e: wharf_metastore::MetaError) -> ApiError {
    let text = e.to_string();
    if text.contains("no such table")
        || (text.contains("relation") && text.contains("does not exist"))
    {
        return ApiError::new(
            wharf_oci::ErrorCode::Unavailable,
            "the metadata store has no vulnerability scanning tables yet (schema level below 3): \
             finish the upgrade first (or, during a rollback, use the release it goes back to)",
        );
    }
    store_error(e)
}

/// The caller, if it may manage `scope`'s policy.
async fn manager_of(
    st: &AppState,
    headers: &HeaderMap,
    addr: Option<std::net::IpAddr>,
    scope: &Scope,
) -> Result<Principal, ApiError> {
    match scope {
        Scope::Repo(repo) => super::repos::repo_admin(st, headers, addr, repo).await,
        Scope::Registry => admin(st, headers, addr).await,
    }
}

async fn get_policy(st: &AppState, scope: &Scope) -> ApiResult {
    let meta = st.registry.meta();
    if let Some(p) = meta
        .scan_policy(scope.key())
        .await
        .map_err(scan_store_error)?
    {
        let source = if p.repository.is_empty() {
            "registry"
        } else {
            "repository"
        };
        return Ok(Json(PolicyView::of(&p.policy, source, Some(p.updated_at_ms))).into_response());
    }
    if let Scope::Repo(_) = scope {
        if let Some(p) = meta.scan_policy(REGISTRY).await.map_err(scan_store_error)? {
            return Ok(
                Json(PolicyView::of(&p.policy, "registry", Some(p.updated_at_ms))).into_response(),
            );
        }
    }
    Ok(Json(PolicyView::builtin()).into_response())
}

async fn put_policy(st: &AppState, actor: &Principal, scope: &Scope, req: Request) -> ApiResult {
    let body: PolicyBody = json_body(req).await?;
    let policy = ScanPolicy {
        scan_on_push: body.scan_on_push,
        block_severity: body.block_severity.map(|s| s.as_str().to_string()),
        unscanned: match body.unscanned {
            UnscannedRule::Allow => "allow".into(),
            UnscannedRule::Refuse => "refuse".into(),
        },
        attach_sbom: body.attach_sbom,
    };
    st.registry
        .meta()
        .set_scan_policy(scope.key(), &policy)
        .await
        .map_err(scan_store_error)?;
    st.registry.forget_scan_policies();
    let details = format!(
        "scan_on_push={} block_severity={} unscanned={} attach_sbom={}",
        policy.scan_on_push,
        policy.block_severity.as_deref().unwrap_or("none"),
        policy.unscanned,
        policy.attach_sbom
    );
    audit_log(st, actor, "scan_policy.set", &scope.target(), Some(details)).await?;
    Ok(no_content())
}

async fn delete_policy(st: &AppState, actor: &Principal, scope: &Scope) -> ApiResult {
    let found = st
        .registry
        .meta()
        .delete_scan_policy(scope.key())
        .await
        .map_err(scan_store_error)?;
    if !found {
        return Err(not_found(format!(
            "{} has no scan policy of its own",
            scope.target()
        )));
    }
    st.registry.forget_scan_policies();
    audit_log(st, actor, "scan_policy.delete", &scope.target(), None).await?;
    Ok(no_content())
}

async fn get_allowlist(st: &AppState, scope: &Scope) -> ApiResult {
    let rows = st
        .registry
        .meta()
        .allowlist(scope.key())
        .await
        .map_err(scan_store_error)?;
    Ok(Json(rows.into_iter().map(AllowView::of).collect::<Vec<_>>()).into_response())
}

async fn put_allow(
    st: &AppState,
    actor: &Principal,
    scope: &Scope,
    id: &str,
    req: Request,
) -> ApiResult {
    let body: AllowBody = json_body(req).await?;
    if body.reason.trim().is_empty() {
        return Err(invalid("reason must say why the vulnerability is accepted"));
    }
    let now_s = wharf_metastore::now_ms().div_euclid(1000);
    if let Some(at) = body.expires_at {
        if at <= now_s {
            return Err(invalid(format!(
                "expires_at {at} is not in the future (now is {now_s}, in Unix seconds)"
            )));
        }
        if at > 253_402_300_799 {
            return Err(invalid(format!("expires_at {at} is after the year 9999")));
        }
    }
    st.registry
        .meta()
        .add_allow(&AllowRow {
            repository: scope.key().to_string(),
            vuln_id: id.to_string(),
            expires_at_ms: body.expires_at.map(|s| s * 1000),
            reason: body.reason.clone(),
            created_by: actor.name().to_string(),
            created_at_ms: 0,
        })
        .await
        .map_err(scan_store_error)?;
    st.registry.forget_scan_policies();
    let expiry = body
        .expires_at
        .map_or("never".to_string(), |s| s.to_string());
    let details = format!("{id} expires_at={expiry} reason={}", body.reason);
    audit_log(
        st,
        actor,
        "scan_allowlist.add",
        &scope.target(),
        Some(details),
    )
    .await?;
    Ok(no_content())
}

async fn delete_allow(st: &AppState, actor: &Principal, scope: &Scope, id: &str) -> ApiResult {
    let found = st
        .registry
        .meta()
        .remove_allow(scope.key(), id)
        .await
        .map_err(scan_store_error)?;
    if !found {
        return Err(not_found(format!(
            "{} has no allowlist entry {id}",
            scope.target()
        )));
    }
    st.registry.forget_scan_policies();
    audit_log(
        st,
        actor,
        "scan_allowlist.remove",
        &scope.target(),
        Some(id.to_string()),
    )
    .await?;
    Ok(no_content())
}

/// A repository's form, for [`super::repos`]' `get`, `put` and `delete`.
pub async fn repo_form(st: &AppState, rest: &str, req: Request) -> ApiResult {
    let (repo, form) = parse(rest)?;
    let scope = Scope::Repo(repo);
    let method = req.method().clone();
    let unsupported = || {
        ApiError::new(
            wharf_oci::ErrorCode::Unsupported,
            format!("{method} is not supported on /api/v0/repositories/{rest}"),
        )
    };
    let supported = matches!(
        (&form, &method),
        (Form::Policy, &Method::GET | &Method::PUT | &Method::DELETE)
            | (Form::Allowlist, &Method::GET)
            | (Form::Allow(_), &Method::PUT | &Method::DELETE)
    );
    if !supported {
        return Err(unsupported());
    }
    let actor = manager_of(st, req.headers(), auth::client_addr(&req), &scope).await?;
    match (form, method.clone()) {
        (Form::Policy, Method::GET) => get_policy(st, &scope).await,
        (Form::Policy, Method::PUT) => put_policy(st, &actor, &scope, req).await,
        (Form::Policy, _) => delete_policy(st, &actor, &scope).await,
        (Form::Allowlist, _) => get_allowlist(st, &scope).await,
        (Form::Allow(id), Method::PUT) => put_allow(st, &actor, &scope, &id, req).await,
        (Form::Allow(id), _) => delete_allow(st, &actor, &scope, &id).await,
    }
}

/// The registry's default scan policy
///
/// `GET /api/v0/scan_policy` (administrators): the policy of every repository that has
/// none of its own; the built-in default (`source: "default"`) if none is set.
#[utoipa::path(get, path = "/scan_policy", tag = "scanning", operation_id = "get_default_scan_policy",
    responses(
        (status = 200, description = "the registry's default policy", body = PolicyView),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_default(State(st): State<AppState>, req: Request) -> ApiResult {
    manager_of(
        &st,
        req.headers(),
        auth::client_addr(&req),
        &Scope::Registry,
    )
    .await?;
    get_policy(&st, &Scope::Registry).await
}

/// Set the registry's default scan policy
///
/// `PUT /api/v0/scan_policy {"scan_on_push", "block_severity", "unscanned",
/// "attach_sbom"}` (administrators). Every replica enforces it within 5 seconds.
#[utoipa::path(put, path = "/scan_policy", tag = "scanning", operation_id = "put_default_scan_policy",
    request_body = PolicyBody,
    responses(
        (status = 204, description = "the policy is set"),
        (status = 400, description = "a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_default(State(st): State<AppState>, req: Request) -> ApiResult {
    let actor = manager_of(
        &st,
        req.headers(),
        auth::client_addr(&req),
        &Scope::Registry,
    )
    .await?;
    put_policy(&st, &actor, &Scope::Registry, req).await
}

/// The registry-wide allowlist
///
/// `GET /api/v0/scan_allowlist` (administrators): the entries that apply to every
/// repository, expired ones included.
#[utoipa::path(get, path = "/scan_allowlist", tag = "scanning", operation_id = "get_registry_allowlist",
    responses(
        (status = 200, description = "the entries, by vulnerability id", body = Vec<AllowView>),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get_registry_allowlist(State(st): State<AppState>, req: Request) -> ApiResult {
    manager_of(
        &st,
        req.headers(),
        auth::client_addr(&req),
        &Scope::Registry,
    )
    .await?;
    get_allowlist(&st, &Scope::Registry).await
}

/// Allow a vulnerability in every repository
///
/// `PUT /api/v0/scan_allowlist/{vuln_id} {"expires_at", "reason"}` (administrators):
/// adds or replaces the registry-wide entry.
#[utoipa::path(put, path = "/scan_allowlist/{vuln_id}", tag = "scanning", operation_id = "put_registry_allow",
    params(("vuln_id" = String, Path, description = "an advisory id or alias, e.g. `CVE-2023-1234`")),
    request_body = AllowBody,
    responses(
        (status = 204, description = "the entry is set"),
        (status = 400, description = "a bad id, an expiry not in the future, no reason, or a malformed body", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_registry_allow(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = manager_of(
        &st,
        req.headers(),
        auth::client_addr(&req),
        &Scope::Registry,
    )
    .await?;
    let id = vuln_id(&id)?;
    put_allow(&st, &actor, &Scope::Registry, &id, req).await
}

/// Remove a registry-wide allowlist entry
///
/// `DELETE /api/v0/scan_allowlist/{vuln_id}` (administrators).
#[utoipa::path(delete, path = "/scan_allowlist/{vuln_id}", tag = "scanning", operation_id = "delete_registry_allow",
    params(("vuln_id" = String, Path, description = "an advisory id or alias, e.g. `CVE-2023-1234`")),
    responses(
        (status = 204, description = "the entry is removed"),
        (status = 400, description = "a bad id", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 404, description = "no such entry", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete_registry_allow(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult {
    let actor = manager_of(
        &st,
        req.headers(),
        auth::client_addr(&req),
        &Scope::Registry,
    )
    .await?;
    let id = vuln_id(&id)?;
    delete_allow(&st, &actor, &Scope::Registry, &id).await
}

/// The documentation of the repository forms, served through `/repositories/{*rest}`
/// (see [`super::repos::docs`]). The functions are never called.
pub(super) mod docs {
    #![allow(dead_code)]

    use utoipa::OpenApi;

    use super::{AllowBody, AllowView, PolicyBody, PolicyView};
    use crate::error::ErrorBody;

    #[derive(OpenApi)]
    #[openapi(paths(
        get_policy,
        put_policy,
        delete_policy,
        get_allowlist,
        put_allow,
        delete_allow
    ))]
    pub struct HandRouted;

    /// A repository's scan policy
    ///
    /// `GET /api/v0/repositories/{name}/_scan_policy` (the repository's administrators):
    /// the policy in force, its own, else the registry's default, else the built-in
    /// default (`source` says which).
    #[utoipa::path(get, path = "/repositories/{name}/_scan_policy", tag = "scanning", operation_id = "get_repository_scan_policy",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        responses(
            (status = 200, description = "the policy in force", body = PolicyView),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn get_policy() {}

    /// Set a repository's scan policy
    ///
    /// `PUT /api/v0/repositories/{name}/_scan_policy {"scan_on_push", "block_severity",
    /// "unscanned", "attach_sbom"}` (the repository's administrators). Every replica
    /// enforces it within 5 seconds.
    #[utoipa::path(put, path = "/repositories/{name}/_scan_policy", tag = "scanning", operation_id = "put_repository_scan_policy",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        request_body = PolicyBody,
        responses(
            (status = 204, description = "the policy is set"),
            (status = 400, description = "an invalid repository name or a malformed body", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn put_policy() {}

    /// Remove a repository's scan policy
    ///
    /// `DELETE /api/v0/repositories/{name}/_scan_policy` (the repository's
    /// administrators): the registry's default applies again.
    #[utoipa::path(delete, path = "/repositories/{name}/_scan_policy", tag = "scanning", operation_id = "delete_repository_scan_policy",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        responses(
            (status = 204, description = "the policy is removed"),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "the repository has no policy of its own", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn delete_policy() {}

    /// A repository's allowlist
    ///
    /// `GET /api/v0/repositories/{name}/_scan_allowlist` (the repository's
    /// administrators): the entries that apply to it, registry-wide ones first, expired
    /// ones included.
    #[utoipa::path(get, path = "/repositories/{name}/_scan_allowlist", tag = "scanning", operation_id = "get_repository_allowlist",
        params(("name" = String, Path, description = "the repository's name; it may contain `/`")),
        responses(
            (status = 200, description = "the entries", body = Vec<AllowView>),
            (status = 400, description = "an invalid repository name", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn get_allowlist() {}

    /// Allow a vulnerability in a repository
    ///
    /// `PUT /api/v0/repositories/{name}/_scan_allowlist/{vuln_id} {"expires_at",
    /// "reason"}` (the repository's administrators): adds or replaces the entry.
    #[utoipa::path(put, path = "/repositories/{name}/_scan_allowlist/{vuln_id}", tag = "scanning", operation_id = "put_repository_allow",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("vuln_id" = String, Path, description = "an advisory id or alias, e.g. `CVE-2023-1234`"),
        ),
        request_body = AllowBody,
        responses(
            (status = 204, description = "the entry is set"),
            (status = 400, description = "an invalid repository name or id, an expiry not in the future, no reason, or a malformed body", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn put_allow() {}

    /// Remove a repository's allowlist entry
    ///
    /// `DELETE /api/v0/repositories/{name}/_scan_allowlist/{vuln_id}` (the repository's
    /// administrators).
    #[utoipa::path(delete, path = "/repositories/{name}/_scan_allowlist/{vuln_id}", tag = "scanning", operation_id = "delete_repository_allow",
        params(
            ("name" = String, Path, description = "the repository's name; it may contain `/`"),
            ("vuln_id" = String, Path, description = "an advisory id or alias, e.g. `CVE-2023-1234`"),
        ),
        responses(
            (status = 204, description = "the entry is removed"),
            (status = 400, description = "an invalid repository name or id", body = ErrorBody),
            (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
            (status = 403, description = "the caller does not administer the repository", body = ErrorBody),
            (status = 404, description = "no such entry", body = ErrorBody),
        ),
        security(("basic" = []), ("bearer" = [])))]
    fn delete_allow() {}
}
