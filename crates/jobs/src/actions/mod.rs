//! The actions workers run.

use std::sync::Arc;

use wharf_blobstore::BlobStore;
use wharf_metastore::MetaStore;

use crate::Action;

pub mod gc;
mod manifest_summaries;
mod migration;
mod proxy_retention;
mod purge_uploads;
pub mod scan;

pub use gc::GarbageCollect;
pub use manifest_summaries::ManifestSummaries;
pub use migration::MetadataStoreMigration;
pub use proxy_retention::ProxyRetention;
pub use purge_uploads::PurgeUploads;
pub use scan::{Scan, ScanAll, VulndbImport, VulndbRematch, VulndbUpdate};

/// What the actions work on.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Upload sessions idle longer than this are abandoned.
    pub upload_expiry: std::time::Duration,
    /// Garbage collection leaves alone what is younger than this.
    pub gc_grace: std::time::Duration,
    /// A GC run's share of wall time, unless its parameters say otherwise.
    pub gc_busy_percent: u8,
    /// The online update's settings (`vulndb_update`'s defaults).
    pub vulndb: crate::vulndb_update::UpdateSettings,
    /// The registry's address as clients use it, for the SBOMs that scans attach.
    pub registry_address: crate::sbom::RegistryAddress,
}

/// Every action this build has.
pub fn all(stores: &Stores) -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(GarbageCollect::new(stores.clone())),
        Arc::new(ManifestSummaries::new(stores.clone())),
        Arc::new(MetadataStoreMigration::new(stores.clone())),
        Arc::new(ProxyRetention::new(stores.clone())),
        Arc::new(PurgeUploads::new(stores.clone())),
        Arc::new(Scan::new(stores.clone())),
        Arc::new(ScanAll::new(stores.clone())),
        Arc::new(VulndbImport::new(stores.clone())),
        Arc::new(VulndbRematch::new(stores.clone())),
        Arc::new(VulndbUpdate::new(stores.clone())),
    ]
}

/// The names of [`all`], for validating requests.
/// The actions that run without parameters: what the web UI's start and schedule forms
/// offer (`scan` and `vulndb_import` need an image or a path; `vulndb_update` takes its
/// URL and ecosystems from the configuration).
pub const WITHOUT_PARAMS: &[&str] = &[
    "gc",
    "manifestsummaries",
    "metadatastoremigration",
    "proxy_retention",
    "purge_uploads",
    "scan_all",
    "vulndb_rematch",
    "vulndb_update",
];

pub const NAMES: &[&str] = &[
    "gc",
    "manifestsummaries",
    "metadatastoremigration",
    "proxy_retention",
    "purge_uploads",
    "scan",
    "scan_all",
    "vulndb_import",
    "vulndb_rematch",
    "vulndb_update",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_the_actions_and_the_parameterless_ones_are_among_them() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores {
            meta: Arc::new(
                wharf_metastore::SqliteMetaStore::open(dir.path().join("m.db"))
                    .await
                    .unwrap(),
            ),
            blobs: Arc::new(wharf_blobstore::MemoryBlobStore::default()),
            upload_expiry: std::time::Duration::from_secs(60),
            gc_grace: std::time::Duration::from_secs(60),
            gc_busy_percent: 50,
            vulndb: Default::default(),
            registry_address: Default::default(),
        };
        let names: Vec<&str> = all(&stores).iter().map(|a| a.name()).collect();
        assert_eq!(names, NAMES);
        assert!(WITHOUT_PARAMS.iter().all(|a| NAMES.contains(a)));
    }
}
