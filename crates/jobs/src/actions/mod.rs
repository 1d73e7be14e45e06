//! The actions workers run.

use std::sync::Arc;

use wharf_blobstore::BlobStore;
use wharf_metastore::MetaStore;

use crate::Action;

mod purge_uploads;

pub use purge_uploads::PurgeUploads;

/// What the actions work on.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Upload sessions idle longer than this are abandoned.
    pub upload_expiry: std::time::Duration,
}

/// Every action this build has.
pub fn all(stores: &Stores) -> Vec<Arc<dyn Action>> {
    vec![Arc::new(PurgeUploads::new(stores.clone()))]
}

/// The names of [`all`], for validating requests.
pub const NAMES: &[&str] = &["purge_uploads"];
