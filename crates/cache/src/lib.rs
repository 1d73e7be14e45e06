//! Content caches: nodes near distant users that serve blob downloads the registry
//! redirected to them.
//!
//! The registry checks that a user may pull, then answers the blob GET with a `307` to
//! the cache the user chose, at a URL it signed ([`signed`]): digest, size and expiry,
//! under an Ed25519 key. A cache holds only the public keys (fetched with its own
//! token when it registers, [`upstream`]), so it cannot mint URLs, and it serves
//! nothing else: no tags, no manifests, no listing.
//!
//! A cache node ([`node`]) keeps blobs in a directory bounded in size, least recently
//! used first out ([`store`]). A miss is fetched once from its upstreams in turn (the
//! registry, or another cache: chains are allowed, loops are refused), streamed to
//! every client waiting for it while it is written, and kept only if its bytes hash to
//! the digest and its length is the signed size.

pub mod metrics;
pub mod node;
pub mod report;
pub mod signed;
pub mod store;
pub mod upstream;

/// The path under which caches (and registry replicas, for caches' fills) serve blobs
/// by digest: `{CACHE_BLOB_PATH}/sha256:…?s=…&e=…&k=…&sig=…`.
pub const CACHE_BLOB_PATH: &str = "/cache/v1/blobs";

/// The header that lists the cache nodes a fill request went through (their instance
/// ids), so that a cache finding itself in it refuses the loop.
pub const VIA_HEADER: &str = "wharf-cache-via";
