//! Content caches registered with the registry, their heartbeats, and which cache each
//! user or team is redirected to.

use async_trait::async_trait;

use crate::accounts::Subject;
use crate::Result;

/// A registered cache and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentCacheRow {
    pub name: String,
    /// Where clients are redirected to (`https://cache-eu.example.com`).
    pub url: String,
    pub region: String,
    pub created_at_ms: i64,
    /// When the store received the last heartbeat (store clock), if any came.
    pub heartbeat_at_ms: Option<i64>,
    /// What that heartbeat said (JSON, as the cache sent it).
    pub report: Option<String>,
}

#[async_trait]
pub trait ContentCacheStore: Send + Sync {
    /// Registers a cache; `Conflict` if the name is taken.
    async fn create_content_cache(
        &self,
        name: &str,
        url: &str,
        region: &str,
        token_hash: &str,
    ) -> Result<ContentCacheRow>;
    /// Changes a cache's URL and region; `false` if there is no such cache.
    async fn update_content_cache(&self, name: &str, url: &str, region: &str) -> Result<bool>;
    /// Replaces a cache's token; `false` if there is no such cache.
    async fn set_content_cache_token(&self, name: &str, token_hash: &str) -> Result<bool>;
    /// Forgets a cache and every choice of it; `false` if there was none.
    async fn delete_content_cache(&self, name: &str) -> Result<bool>;
    /// Every registered cache by name, and the store's clock now.
    async fn content_caches(&self) -> Result<(Vec<ContentCacheRow>, i64)>;
    /// The cache whose token hashes to `token_hash`.
    async fn content_cache_by_token(&self, token_hash: &str) -> Result<Option<ContentCacheRow>>;
    /// Records a heartbeat; `false` if the cache is no longer registered.
    async fn content_cache_heartbeat(&self, name: &str, report: &str) -> Result<bool>;
    /// Sets (or with `None` clears) the cache a user or team is redirected to;
    /// `Conflict` if the cache does not exist.
    async fn choose_content_cache(&self, subject: Subject, cache: Option<&str>) -> Result<()>;
    /// The cache a subject chose itself, if any.
    async fn content_cache_choice(&self, subject: Subject) -> Result<Option<String>>;
    /// For every user with a cache, by their own choice or else a team's (the team
    /// first by name), the user's id and the cache.
    async fn content_cache_routes(&self) -> Result<Vec<(i64, String)>>;
}

/// Every user's own choice, then, for users without one, the choice of their team
/// that comes first by organisation and team name. The same SQL on both backends.
pub(crate) const ROUTES: &str = "
    SELECT subject_id, cache FROM content_cache_choices WHERE subject_kind = 'user'
    UNION ALL
    SELECT user_id, cache FROM (
        SELECT tm.user_id, ch.cache,
               ROW_NUMBER() OVER (PARTITION BY tm.user_id ORDER BY o.name, t.name) AS n
        FROM content_cache_choices ch
        JOIN teams t ON ch.subject_kind = 'team' AND t.id = ch.subject_id
        JOIN orgs o ON o.id = t.org_id
        JOIN team_members tm ON tm.team_id = t.id
        WHERE NOT EXISTS (SELECT 1 FROM content_cache_choices u
                          WHERE u.subject_kind = 'user' AND u.subject_id = tm.user_id)
    ) ranked WHERE n = 1";
