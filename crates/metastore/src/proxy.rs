//! Pull-through proxy repositories: a repository-name prefix (`hub/`) whose content is
//! fetched on demand from upstream registries. The store keeps each proxy's settings,
//! when each proxied tag was last revalidated, and each proxied manifest's size and last
//! use (for retention).

use async_trait::async_trait;
use wharf_oci::{Digest, RepoName, Tag};

use crate::Result;

/// A proxy's settings. The password is never part of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Repository-name prefix, ending in `/` (`hub/`).
    pub prefix: String,
    /// Upstream registry base URLs, tried in this order.
    pub upstreams: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A manifest by tag is revalidated against the upstream at most this often.
    pub revalidate_secs: u64,
    /// Retention: least-recently-used images go when the proxy holds more than this.
    pub max_bytes: Option<u64>,
    /// Retention: images unused for this many days go.
    pub max_idle_days: Option<u32>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("prefix", &self.prefix)
            .field("upstreams", &self.upstreams)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("revalidate_secs", &self.revalidate_secs)
            .field("max_bytes", &self.max_bytes)
            .field("max_idle_days", &self.max_idle_days)
            .finish()
    }
}

/// A manifest a proxy stored, for retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedManifest {
    pub repository: RepoName,
    pub digest: Digest,
    /// The manifest's own size plus the sizes of the blobs it names.
    pub bytes: u64,
    pub last_used_at_ms: i64,
}

#[async_trait]
pub trait ProxyStore: Send + Sync {
    /// Every proxy, by prefix.
    async fn proxies(&self) -> Result<Vec<ProxyConfig>>;
    /// Adds a proxy; `Conflict` if its prefix is taken.
    async fn create_proxy(&self, p: &ProxyConfig) -> Result<()>;
    /// Replaces a proxy's settings (not its creation time); `false` if there is none.
    async fn update_proxy(&self, p: &ProxyConfig) -> Result<bool>;
    /// Removes a proxy and its bookkeeping (the content stays, as a local repository's
    /// would); `false` if there was none.
    async fn delete_proxy(&self, prefix: &str) -> Result<bool>;

    /// The digest a proxied tag had at its last revalidation, and when that was.
    async fn proxy_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(Digest, i64)>>;
    async fn set_proxy_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        checked_at_ms: i64,
    ) -> Result<()>;

    /// Records a proxied manifest's use at `at_ms` (adding it if new; the last use never
    /// moves back).
    async fn touch_proxied_manifest(
        &self,
        prefix: &str,
        repo: &RepoName,
        digest: &Digest,
        bytes: u64,
        at_ms: i64,
    ) -> Result<()>;
    /// The manifests a proxy stored, least recently used first.
    async fn proxied_manifests(&self, prefix: &str) -> Result<Vec<ProxiedManifest>>;
    /// Forgets an evicted manifest (and the tags revalidated to it).
    async fn forget_proxied_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()>;
}
