//! The OCI distribution and image vocabulary, as types that cannot hold invalid values.
//!
//! Everything here is pure: parsing and validation only, no I/O and no async, so the
//! rules of the specs can be tested exhaustively (see the property tests).

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod summary;
pub mod upload;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind, Platform};
pub use name::{NameError, Reference, RepoName, Tag};
pub use summary::ManifestSummary;
pub use upload::UploadId;
