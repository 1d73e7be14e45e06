//! What a cache and the registry tell each other: the registration answer and the
//! heartbeat report.

use serde::{Deserialize, Serialize};

use crate::signed::PublicKey;

/// The registry's answer to a cache that presents its token (at start and on every
/// heartbeat): who the cache is, and the keys to verify redirects with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub region: String,
    /// The URL the registry redirects clients to.
    pub url: String,
    pub keys: Vec<PublicKey>,
    /// The registry's version, so an upgrade in step can be seen from both sides.
    pub registry_version: String,
}

/// Whether a cache takes new downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheState {
    Serving,
    /// Shutting down: the registry stops redirecting to it; what it serves finishes.
    Draining,
}

/// The counters a cache keeps since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCounters {
    /// Downloads served from what the cache held.
    pub hits: u64,
    /// Downloads of blobs it did not hold (each joined or started a fill).
    pub misses: u64,
    /// Fills from an upstream (concurrent misses of one blob share one fill).
    pub fills: u64,
    pub bytes_from_upstream: u64,
    pub bytes_to_clients: u64,
    pub evictions: u64,
    /// Upstream requests that failed (each upstream tried counts once).
    pub upstream_errors: u64,
    /// Fills whose bytes did not match the digest or the size: nothing was kept.
    pub rejected_fills: u64,
    /// Requests refused for a bad or expired signature.
    pub refused: u64,
}

/// A cache's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReport {
    /// Random per process: tells restarts apart, and marks loops.
    pub instance: String,
    pub version: String,
    pub commit: String,
    pub state: CacheState,
    pub started_at_ms: i64,
    /// The cache's own clock when it sent this (redirect expiry depends on clocks).
    pub clock_ms: i64,
    pub heartbeat_interval_ms: i64,
    pub stored_bytes: u64,
    pub max_bytes: u64,
    pub blobs: u64,
    pub counters: CacheCounters,
    /// The upstreams it fills from, in the order it tries them.
    pub upstreams: Vec<String>,
}

impl CacheReport {
    /// Hits over all downloads, if any were made.
    pub fn hit_ratio(&self) -> Option<f64> {
        let all = self.counters.hits + self.counters.misses;
        (all > 0).then(|| self.counters.hits as f64 / all as f64)
    }
}
