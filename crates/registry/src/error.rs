//! What can go wrong in a registry operation, in the registry's own terms. The server
//! maps each case to the wire format once, through [`RegistryError::code`].

use wharf_oci::{Digest, ErrorCode, RepoName};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob {0} is not in this repository")]
    BlobUnknown(Digest),
    #[error("upload session is unknown, finished, cancelled or expired")]
    UploadUnknown,
    #[error("chunk starts at byte {got} but the upload has {expected} bytes; send the next chunk from {expected}")]
    ChunkOutOfOrder { expected: u64, got: u64 },
    #[error("content digest is {actual}, not the {expected} given")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("received {actual} bytes but the request said {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("requested range {start}-{end} is outside the blob of {size} bytes")]
    RangeInvalid { start: u64, end: u64, size: u64 },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest is {size} bytes; this registry accepts at most {limit}")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("manifest references {0}, which is not in this repository; push it first")]
    ManifestBlobUnknown(Digest),
    #[error("tag in the manifest does not match the URL")]
    TagInvalid,
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// A vulnerability policy refuses the pull of this image manifest.
    #[error("{message}")]
    PullDenied { digest: Digest, message: String },
    #[error("internal storage error: {0}")]
    Storage(String),
}

impl RegistryError {
    pub fn code(&self) -> ErrorCode {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => ErrorCode::BlobUnknown,
            UploadUnknown => ErrorCode::BlobUploadUnknown,
            ChunkOutOfOrder { .. } => ErrorCode::ChunkOutOfOrder,
            DigestMismatch { .. } | DigestInvalid(_) => ErrorCode::DigestInvalid,
            SizeMismatch { .. } => ErrorCode::SizeInvalid,
            RangeInvalid { .. } => ErrorCode::RangeInvalid,
            BodyRead(_) => ErrorCode::BlobUploadInvalid,
            ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            ManifestTooLarge { .. } => ErrorCode::ManifestTooLarge,
            ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            TagInvalid => ErrorCode::TagInvalid,
            NameUnknown(_) => ErrorCode::NameUnknown,
            PullDenied { .. } => ErrorCode::Denied,
            Storage(_) => ErrorCode::Unknown,
        }
    }
}

impl From<wharf_metastore::MetaError> for RegistryError {
    fn from(e: wharf_metastore::MetaError) -> Self {
        match e {
            wharf_metastore::MetaError::MissingReference(d) => {
                RegistryError::ManifestBlobUnknown(d)
            }
            other => RegistryError::Storage(other.to_string()),
        }
    }
}

impl From<wharf_blobstore::StoreError> for RegistryError {
    fn from(e: wharf_blobstore::StoreError) -> Self {
        match e {
            wharf_blobstore::StoreError::InvalidRange { start, end, size } => {
                RegistryError::RangeInvalid { start, end, size }
            }
            other => RegistryError::Storage(other.to_string()),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
