//! The distribution spec's error codes, declared once with their message and HTTP status.
//! The server turns any domain error into `{"errors":[{code, message, detail}]}` through
//! this table, so every endpoint answers bad input the same way.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    // Codes beyond the spec's table, as the reference registry also uses them.
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    /// A chunk that does not continue the upload (spec: 416).
    ChunkOutOfOrder,
    ManifestTooLarge,
    Unavailable,
    NotFound,
    // Codes of the management API (/api/v0), which the distribution spec does not cover.
    ApiNotFound,
    InvalidRequest,
    Conflict,
    Unknown,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            TagInvalid => "TAG_INVALID",
            RangeInvalid => "RANGE_INVALID",
            PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ChunkOutOfOrder => "BLOB_UPLOAD_INVALID",
            ManifestTooLarge => "MANIFEST_INVALID",
            Unavailable => "UNAVAILABLE",
            // The spec has no code for "no such endpoint"; UNSUPPORTED is the closest.
            NotFound => "UNSUPPORTED",
            ApiNotFound => "NOT_FOUND",
            InvalidRequest => "INVALID_REQUEST",
            Conflict => "CONFLICT",
            Unknown => "UNKNOWN",
        }
    }

    pub fn message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "blob unknown to registry",
            BlobUploadInvalid => "blob upload invalid",
            BlobUploadUnknown => "blob upload unknown to registry",
            DigestInvalid => "provided digest did not match uploaded content",
            ManifestBlobUnknown => "manifest references a manifest or blob unknown to registry",
            ManifestInvalid => "manifest invalid",
            ManifestUnknown => "manifest unknown to registry",
            NameInvalid => "invalid repository name",
            NameUnknown => "repository name not known to registry",
            SizeInvalid => "provided length did not match content length",
            Unauthorized => "authentication required",
            Denied => "requested access to the resource is denied",
            Unsupported => "the operation is unsupported",
            TooManyRequests => "too many requests",
            TagInvalid => "manifest tag did not match URI",
            RangeInvalid => "invalid content range",
            PaginationNumberInvalid => "invalid number of results requested",
            ChunkOutOfOrder => "chunk does not continue the upload",
            ManifestTooLarge => "manifest is larger than the registry accepts",
            Unavailable => "the registry is shutting down or not ready",
            NotFound => "no such endpoint",
            ApiNotFound => "not found",
            InvalidRequest => "invalid request",
            Conflict => "conflicts with the current state",
            Unknown => "unknown error",
        }
    }

    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown | NotFound
            | ApiNotFound => 404,
            BlobUploadInvalid
            | DigestInvalid
            | ManifestBlobUnknown
            | ManifestInvalid
            | NameInvalid
            | SizeInvalid
            | TagInvalid
            | PaginationNumberInvalid
            | InvalidRequest => 400,
            Unauthorized => 401,
            Denied => 403,
            Unsupported => 405,
            RangeInvalid | ChunkOutOfOrder => 416,
            ManifestTooLarge => 413,
            TooManyRequests => 429,
            Conflict => 409,
            Unavailable => 503,
            Unknown => 500,
        }
    }
}
