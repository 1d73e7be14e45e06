//! The cache node's counters, shared by its request handlers and fills.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::report::CacheCounters;

#[derive(Debug, Default)]
pub struct Metrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub bytes_from_upstream: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    pub evictions: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub rejected_fills: AtomicU64,
    pub refused: AtomicU64,
    /// Evicted blobs still to be deleted from a blob store (a gauge).
    pub deletes_pending: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            fills: self.fills.load(Relaxed),
            bytes_from_upstream: self.bytes_from_upstream.load(Relaxed),
            bytes_to_clients: self.bytes_to_clients.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            upstream_errors: self.upstream_errors.load(Relaxed),
            rejected_fills: self.rejected_fills.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

/// The Prometheus text exposition of a cache node's state.
pub fn prometheus(
    c: &CacheCounters,
    stored_bytes: u64,
    max_bytes: u64,
    blobs: u64,
    deletes_pending: u64,
) -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP wharf_cache_{name} {help}\n# TYPE wharf_cache_{name} counter\nwharf_cache_{name} {v}\n"
        ));
    };
    counter(
        "hits_total",
        "Downloads served from what the cache held (or had fetched and verified in full).",
        c.hits,
    );
    counter(
        "misses_total",
        "Downloads of blobs the cache did not hold, or was still fetching.",
        c.misses,
    );
    counter(
        "fills_total",
        "Fetches from an upstream (concurrent misses share one).",
        c.fills,
    );
    counter(
        "upstream_bytes_total",
        "Bytes fetched from upstreams.",
        c.bytes_from_upstream,
    );
    counter(
        "client_bytes_total",
        "Bytes sent to clients.",
        c.bytes_to_clients,
    );
    counter(
        "evictions_total",
        "Blobs removed to stay under the size bound.",
        c.evictions,
    );
    counter(
        "upstream_errors_total",
        "Upstream requests that failed.",
        c.upstream_errors,
    );
    counter(
        "rejected_fills_total",
        "Fills whose bytes did not match digest or size (nothing kept).",
        c.rejected_fills,
    );
    counter(
        "refused_total",
        "Requests refused for a bad or expired signature.",
        c.refused,
    );
    let mut gauge = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP wharf_cache_{name} {help}\n# TYPE wharf_cache_{name} gauge\nwharf_cache_{name} {v}\n"
        ));
    };
    gauge("stored_bytes", "Bytes of blobs held.", stored_bytes);
    gauge("max_bytes", "The size bound.", max_bytes);
    gauge("blobs", "Blobs held.", blobs);
    gauge(
        "deletes_pending",
        "Evicted blobs not yet deleted from the blob store.",
        deletes_pending,
    );
    out
}
