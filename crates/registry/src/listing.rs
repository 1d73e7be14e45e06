//! Tag lists and the catalog, paginated with `n` and `last`.

use wharf_oci::RepoName;

use crate::error::{RegistryError, Result};
use crate::Registry;

/// One page of names; `more` says whether a next page exists (for the `Link` header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Registry {
    /// Pages larger than the limit are cut to it; the `Link` header leads on.
    pub fn page_size(&self, n: Option<usize>) -> usize {
        n.unwrap_or(self.limits.max_page).min(self.limits.max_page)
    }

    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let limit = self.page_size(n);
        let tags = self
            .meta
            .list_tags(repo, last, limit + 1)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(repo.clone()))?;
        let mut items: Vec<String> = tags.into_iter().map(|t| t.to_string()).collect();
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }

    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = self.page_size(n);
        let mut items: Vec<String> = self
            .meta
            .list_repositories(last, limit + 1)
            .await?
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, more })
    }
}
