//! What each hop of a plan runs: its schema migrations and its background migrations,
//! from the release catalog (or, for this build's own version, the migrations it
//! carries). Shown by `wharf upgrade plan` and `GET /api/v0/upgrade/plan`.

use semver::Version;

use crate::{Catalog, Plan};

/// One schema migration a hop applies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaStep {
    pub level: u32,
    pub name: String,
    /// `initial`, `expand`, `contract` or `background`.
    pub kind: String,
}

/// What one hop runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HopWork {
    pub from: String,
    pub to: String,
    pub schema: Vec<SchemaStep>,
    /// Background migrations (jobs) that run after the hop is finalised.
    pub background: Vec<String>,
}

/// The schema level of version `v`: the catalog's, or `own_level` for this build.
pub fn schema_level(catalog: &Catalog, v: &str, own: &Version, own_level: u32) -> Option<u32> {
    let parsed = Version::parse(v).ok()?;
    catalog
        .release(&parsed)
        .map(|r| r.schema_level)
        .or_else(|| (parsed == *own).then_some(own_level))
}

/// What each hop of `plan` runs. A hop to a release in the catalog runs that release's
/// migrations above the level it starts from; a hop to this build (`own`, not in the
/// catalog) runs the migrations it carries between the two levels, all expand-only.
pub fn hop_work(catalog: &Catalog, plan: &Plan, own: &Version, own_level: u32) -> Vec<HopWork> {
    let level = |v: &str| schema_level(catalog, v, own, own_level);
    plan.hops
        .iter()
        .map(|h| {
            let (a, b) = (level(&h.from).unwrap_or(0), level(&h.to).unwrap_or(0));
            let schema = match Version::parse(&h.to).ok().and_then(|v| catalog.release(&v)) {
                Some(r) => r
                    .migrations
                    .iter()
                    .filter(|m| m.level > a)
                    .map(|m| SchemaStep {
                        level: m.level,
                        name: m.name.clone(),
                        kind: m.kind.clone(),
                    })
                    .collect(),
                None => wharf_metastore::schema::MIGRATIONS
                    .iter()
                    .filter(|m| m.level > a && m.level <= b)
                    .map(|m| SchemaStep {
                        level: m.level,
                        name: m.name.to_string(),
                        kind: "expand".into(),
                    })
                    .collect(),
            };
            let background = wharf_metastore::schema::BACKGROUND
                .iter()
                .filter(|(l, _)| *l > a && *l <= b)
                .map(|(_, name)| name.to_string())
                .collect();
            HopWork {
                from: h.from.clone(),
                to: h.to.clone(),
                schema,
                background,
            }
        })
        .collect()
}
