//! Upgrades, part 1: which version may follow which (docs/upgrading.md).
//!
//! - [`catalog`]: every release, its schema level, migrations and supported components,
//!   from `releases.toml`, embedded at build time and checked.
//! - [`rules`]: the semantic-versioning rules of one hop, and the planner that finds
//!   the stops between two versions, like a route planner.
//! - [`status`]: where an upgrade stands, read from the metadata store.
//! - [`events`]: what an upgrade reports as it goes, typed and versioned.
//! - [`work`]: what each hop of a plan runs (schema and background migrations).
//! - [`rehearsal`]: an upgrade rehearsed on a copy, and its forecast.

pub mod catalog;
pub mod events;
pub mod rehearsal;
pub mod rules;
pub mod status;
pub mod work;

pub use catalog::{Catalog, Release};
pub use rules::{plan, Hop, Plan};
pub use semver::Version;
