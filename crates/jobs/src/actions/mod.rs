//! The actions workers run.

use std::sync::Arc;

use wharf_blobstore::BlobStore;
use wharf_metastore::MetaStore;

use crate::Action;

pub mod gc;
mod migration;
mod purge_uploads;
pub mod scan;

pub use gc::GarbageCollect;
pub use migration::MetadataStoreMigration;
pub use purge_uploads::PurgeUploads;
pub use scan::{Scan, VulndbImport, VulndbRematch};

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
}

/// Every action this build has.
pub fn all(stores: &Stores) -> Vec<Arc<dyn Action>> {
    vec![
        Arc::new(GarbageCollect::new(stores.clone())),
        Arc::new(MetadataStoreMigration::new(stores.clone())),
        Arc::new(PurgeUploads::new(stores.clone())),
        Arc::new(Scan::new(stores.clone())),
        Arc::new(VulndbImport::new(stores.clone())),
        Arc::new(VulndbRematch::new(stores.clone())),
    ]
}

/// The names of [`all`], for validating requests.
pub const NAMES: &[&str] = &[
    "gc",
    "metadatastoremigration",
    "purge_uploads",
    "scan",
    "vulndb_import",
    "vulndb_rematch",
];
