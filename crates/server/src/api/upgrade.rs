//! Planning and checking an upgrade from a running replica, read-only: the same plan
//! as `wharf upgrade plan` and the same pre-flight checks as `wharf upgrade check`, for
//! the web UI's system page and for tools. Nothing here changes the data; applying
//! an upgrade stays with `wharf upgrade apply` and its drivers.

use std::time::Duration;

use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wharf_upgrade::work::HopWork;
use wharf_upgrade::{Catalog, Plan, Version};

use super::*;
use crate::upgrade_checks::{self, Check};

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct UpgradeQuery {
    /// The version to upgrade to [default: this replica's version].
    to: Option<String>,
    /// `check` only: the newest backup may be at most this old, in hours [default: 24].
    max_backup_age_hours: Option<u64>,
    /// `check` only: how the replicas will be replaced: `local` (stopped first: the
    /// `replicas` check fails while any serves), `docker` or `external` (replaced while
    /// they serve) [default: local].
    driver: Option<String>,
}

impl UpgradeQuery {
    /// To `version`, with the default backup age.
    pub fn to(version: &str) -> UpgradeQuery {
        UpgradeQuery {
            to: Some(version.to_string()),
            max_backup_age_hours: None,
            driver: None,
        }
    }
}

/// A content cache the upgrade replaces after the replicas.
#[derive(Serialize, ToSchema)]
pub struct CacheBrief {
    name: String,
    version: Option<String>,
    state: String,
}

/// A plan, with what each hop runs.
#[derive(Serialize, ToSchema)]
pub struct PlanView {
    #[serde(flatten)]
    plan: Plan,
    /// Whether `to` can be reached: in one hop, or through every stop in turn (as
    /// `wharf upgrade apply` goes, with any driver).
    reachable: bool,
    /// What each hop runs.
    migrations: Vec<HopWork>,
    /// The pre-flight checks `wharf upgrade check` runs.
    checks: Vec<&'static str>,
    /// The content caches, replaced after the replicas and before finalising.
    content_caches: Vec<CacheBrief>,
}

impl PlanView {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn work(&self) -> &[HopWork] {
        &self.migrations
    }
    pub fn reachable(&self) -> bool {
        self.reachable
    }
    /// "eu (1.2.0, serving), …", or `None` without caches.
    pub fn caches_text(&self) -> Option<String> {
        (!self.content_caches.is_empty()).then(|| {
            self.content_caches
                .iter()
                .map(|c| crate::content_cache::describe(&c.name, c.version.as_deref(), &c.state))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// The pre-flight checks' results.
#[derive(Serialize, ToSchema)]
pub struct CheckReport {
    /// The data's version, when it could be read.
    pub from: Option<String>,
    pub to: String,
    pub checks: Vec<Check>,
    /// How many checks failed (a warning is not a failure).
    pub failed: usize,
}

/// The data's version, and the target asked for (this replica's by default).
async fn versions(
    st: &AppState,
    q: &UpgradeQuery,
) -> Result<(Result<Version, String>, Version), ApiError> {
    let to = match &q.to {
        Some(t) => Version::parse(t.trim())
            .map_err(|e| invalid(format!("to={t:?} is not a version (1.2.0): {e}")))?,
        None => own_version(st)?,
    };
    let data = st
        .registry
        .meta()
        .data_version()
        .await
        .map_err(store_error)?;
    let from = Version::parse(&data).map_err(|e| format!("the data's version {data:?}: {e}"));
    Ok((from, to))
}

fn own_version(st: &AppState) -> Result<Version, ApiError> {
    Version::parse(&st.info.version)
        .map_err(|e| ApiError::new(ErrorCode::Unknown, format!("this build's version: {e}")))
}

/// Plan an upgrade
///
/// `GET /api/v0/upgrade/plan?to=VERSION` (administrators): the path of required stops
/// from the data's version, each hop's rule, schema and background migrations, the
/// checks that will run and the content caches to replace, as `wharf upgrade plan
/// --format json` shows them. Read-only.
#[utoipa::path(get, path = "/upgrade/plan", tag = "meta", operation_id = "upgrade_plan",
    params(UpgradeQuery),
    responses(
        (status = 200, description = "the plan", body = PlanView),
        (status = 400, description = "`to` is not a version, or `driver` is not local, docker or external", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn plan(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let q: UpgradeQuery = serde_urlencoded_query(req.uri().query())?;
    let (from, to) = versions(&st, &q).await?;
    let from = from.map_err(|e| ApiError::new(ErrorCode::Unknown, e))?;
    Ok(Json(plan_view(&st, &from, &to).await?).into_response())
}

/// The plan from `from` to `to` by the built-in catalog, as the system page shows it.
pub async fn plan_view(st: &AppState, from: &Version, to: &Version) -> Result<PlanView, ApiError> {
    let catalog = Catalog::embedded();
    let own = own_version(st)?;
    let mut versions = catalog.versions();
    if !versions.contains(&own) {
        versions.push(own.clone());
    }
    let plan = wharf_upgrade::plan(from, to, &versions, false);
    let reachable = plan.allowed || plan.path.last() == Some(&plan.to);
    let migrations = wharf_upgrade::work::hop_work(&catalog, &plan, &own, crate::SCHEMA_LEVEL);
    let caches = crate::content_cache::cache_views(st.registry.meta().as_ref())
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|c| CacheBrief {
            name: c.name,
            version: c.version,
            state: c.state,
        })
        .collect();
    Ok(PlanView {
        plan,
        reachable,
        migrations,
        checks: upgrade_checks::NAMES.to_vec(),
        content_caches: caches,
    })
}

/// Run the pre-flight checks
///
/// `GET /api/v0/upgrade/check?to=VERSION&max_backup_age_hours=24` (administrators):
/// the checks of `wharf upgrade check`, run by this replica on its own stores and data
/// directory, each `pass`, `warn` or `fail` with what it measured and the fix. Nothing
/// is recorded. The `replicas` check fails while replicas serve, as it does for the
/// local driver; the docker and external drivers replace serving replicas one at a
/// time instead.
#[utoipa::path(get, path = "/upgrade/check", tag = "meta", operation_id = "upgrade_check",
    params(UpgradeQuery),
    responses(
        (status = 200, description = "the checks", body = CheckReport),
        (status = 400, description = "`to` is not a version, or `driver` is not local, docker or external", body = ErrorBody),
        (status = 401, description = "no credentials, or wrong ones", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
    ),
    security(("basic" = []), ("bearer" = [])))]
pub async fn check(State(st): State<AppState>, req: Request) -> ApiResult {
    if st.settings.auth_enabled {
        admin(&st, req.headers(), auth::client_addr(&req)).await?;
    }
    let q: UpgradeQuery = serde_urlencoded_query(req.uri().query())?;
    Ok(Json(check_report(&st, &q).await?).into_response())
}

pub async fn check_report(st: &AppState, q: &UpgradeQuery) -> Result<CheckReport, ApiError> {
    let (from, to) = versions(st, q).await?;
    let opts = upgrade_checks::Options {
        max_backup_age: Duration::from_secs(q.max_backup_age_hours.unwrap_or(24) * 3600),
        skips: Vec::new(),
        catalog: Catalog::embedded(),
        rolling: match q.driver.as_deref() {
            None | Some("local") => false,
            Some("docker" | "external") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "driver={other:?}: it is local, docker or external"
                )))
            }
        },
    };
    let checks = upgrade_checks::run_checks(&st.settings.config, &from, &to, &opts)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unknown, format!("{e:#}")))?;
    let failed = checks
        .iter()
        .filter(|c| c.status == upgrade_checks::FAIL)
        .count();
    Ok(CheckReport {
        from: from.ok().map(|v| v.to_string()),
        to: to.to_string(),
        checks,
        failed,
    })
}
