//! Upgrades, part 1: which version may follow which (docs/upgrading.md).
//!
//! - [`catalog`]: every release, its schema level, migrations and supported components,
//!   from `releases.toml`, embedded at build time and checked.
//! - [`rules`]: the semantic-versioning rules of one hop, and the planner that finds
//!   the stops between two versions, like a route planner.

pub mod catalog;
pub mod rules;

pub use catalog::{Catalog, Release};
pub use rules::{plan, Hop, Plan};
