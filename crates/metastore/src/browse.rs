//! Reads for the web UI: pages of repositories a viewer may see, with their tag counts,
//! and pages of tags with their manifests. Every list is keyset-paginated (a page
//! starts after the last item of the previous one), so the first page costs the same
//! at 100 repositories and at 100,000.

use async_trait::async_trait;
use bytes::Bytes;
use wharf_oci::ManifestSummary;

use crate::accounts::Visibility;
use crate::Result;

/// Who is looking: decides which repositories a list shows, by the same rules as the
/// access policy (`wharf_auth::policy::repo_access`: public repositories for everyone;
/// a user's own namespace, organisations they administer, and grants to them or their
/// teams; everything for administrators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    User { id: i64, name: String },
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepoSort {
    #[default]
    Name,
    /// Newest tag push first.
    LastPush,
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoCursor {
    Name(String),
    LastPush { at_ms: i64, name: String },
}

#[derive(Debug, Clone, Default)]
pub struct RepoQuery {
    /// Only names starting with this (a namespace is `team/`).
    pub prefix: String,
    /// Only names containing this.
    pub contains: String,
    pub sort: RepoSort,
    pub after: Option<RepoCursor>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    pub name: String,
    pub tag_count: u64,
    /// The newest tag update, if it has tags.
    pub last_push_ms: Option<i64>,
    /// As set, or `None` for the default (private).
    pub visibility: Option<Visibility>,
}

impl RepoSummary {
    /// The cursor for the page after this item.
    pub fn cursor(&self, sort: RepoSort) -> RepoCursor {
        match sort {
            RepoSort::Name => RepoCursor::Name(self.name.clone()),
            RepoSort::LastPush => RepoCursor::LastPush {
                at_ms: self.last_push_ms.unwrap_or(0),
                name: self.name.clone(),
            },
        }
    }
}

/// A tag and the manifest it points at.
#[derive(Debug, Clone)]
pub struct TagDetail {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub payload: Bytes,
    pub updated_at_ms: i64,
    /// Its size and platforms as stored with it (`None` for a manifest an older release
    /// stored, until the `manifestsummaries` background migration has run).
    pub summary: Option<ManifestSummary>,
}

/// A manifest that has no summary yet, for the `manifestsummaries` background migration.
#[derive(Debug, Clone)]
pub struct UnsummarisedManifest {
    pub repository_id: i64,
    pub digest: String,
    pub media_type: String,
    pub payload: Bytes,
}

#[async_trait]
pub trait BrowseStore {
    /// A page of the repositories `viewer` may see, matching `q`.
    async fn browse_repositories(&self, viewer: &Viewer, q: &RepoQuery)
        -> Result<Vec<RepoSummary>>;

    /// A page of `repo`'s tags in name order after `after`, with their manifests;
    /// `None` if the repository does not exist.
    async fn tag_details(
        &self,
        repo: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<TagDetail>>>;

    /// Who was granted what on `repo`: (`user` or `team`, user name or `org/team`,
    /// level), by kind and name.
    async fn repo_grants(&self, repo: &str) -> Result<Vec<(String, String, String)>>;

    /// Every organisation: (name, members, teams), by name.
    async fn list_orgs(&self) -> Result<Vec<(String, u64, u64)>>;

    /// An organisation's members (name, is org admin) and teams (name, member names
    /// joined by ", "), by name; `None` if there is no such organisation.
    async fn org_detail(&self, org: &str) -> Result<Option<OrgDetail>>;

    /// How many tags `repo` has (0 if it does not exist).
    async fn tag_count(&self, repo: &str) -> Result<u64>;

    /// The tags of `repo` that point at `digest`.
    async fn tags_of_manifest(&self, repo: &str, digest: &str) -> Result<Vec<String>>;

    /// How many manifests have no summary (those older releases stored).
    async fn count_manifests_without_summary(&self) -> Result<u64>;

    /// Up to `limit` manifests without a summary after `after` (repository id, digest),
    /// in key order.
    async fn manifests_without_summary(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<UnsummarisedManifest>>;

    /// Removes the summaries of manifests that are gone (deleted by an older release,
    /// which does not know the table); returns how many.
    async fn delete_orphan_summaries(&self) -> Result<u64>;

    /// Stores summaries, in one transaction; a manifest deleted meanwhile is skipped and
    /// one summarised already is left as it is. Returns how many this stored.
    async fn record_manifest_summaries(
        &self,
        batch: &[(i64, String, ManifestSummary)],
    ) -> Result<u64>;
}

#[derive(Debug, Clone, Default)]
pub struct OrgDetail {
    pub members: Vec<(String, bool)>,
    pub teams: Vec<(String, Vec<String>)>,
}

/// The manifests without a summary (`manifestsummaries`' work), counted.
pub(crate) const COUNT_UNSUMMARISED_SQL: &str = "
SELECT COUNT(*) FROM manifests m WHERE NOT EXISTS
  (SELECT 1 FROM manifest_summaries s
   WHERE s.repository_id = m.repository_id AND s.digest = m.digest)";

pub(crate) const DELETE_ORPHAN_SUMMARIES_SQL: &str = "
DELETE FROM manifest_summaries WHERE NOT EXISTS
  (SELECT 1 FROM manifests m
   WHERE m.repository_id = manifest_summaries.repository_id AND m.digest = manifest_summaries.digest)";

pub(crate) const LIST_ORGS_SQL: &str = "
SELECT o.name,
  (SELECT COUNT(*) FROM org_members m WHERE m.org_id = o.id),
  (SELECT COUNT(*) FROM teams t WHERE t.org_id = o.id)
FROM orgs o ORDER BY o.name";

/// `{org}` is the placeholder.
pub(crate) const ORG_MEMBERS_SQL: &str = "
SELECT u.name, m.is_admin FROM orgs o JOIN org_members m ON m.org_id = o.id
JOIN users u ON u.id = m.user_id WHERE o.name = {org} ORDER BY u.name";

pub(crate) const ORG_TEAMS_SQL: &str = "
SELECT t.name, u.name FROM orgs o JOIN teams t ON t.org_id = o.id
LEFT JOIN team_members tm ON tm.team_id = t.id LEFT JOIN users u ON u.id = tm.user_id
WHERE o.name = {org} ORDER BY t.name, u.name";

/// Folds (team, member) rows into teams with their members.
pub(crate) fn fold_teams(rows: Vec<(String, Option<String>)>) -> Vec<(String, Vec<String>)> {
    let mut teams: Vec<(String, Vec<String>)> = Vec::new();
    for (team, member) in rows {
        if teams.last().is_none_or(|(t, _)| *t != team) {
            teams.push((team, Vec::new()));
        }
        if let (Some(m), Some(last)) = (member, teams.last_mut()) {
            last.1.push(m);
        }
    }
    teams
}

/// The grants of a repository with their subjects' names (one statement for both
/// backends: no placeholders, the repository name is the only parameter).
pub(crate) const REPO_GRANTS_SQL: &str = "
SELECT g.subject_kind, COALESCE(u.name, o.name || '/' || t.name, '?'), g.level
FROM repository_grants g
LEFT JOIN users u ON g.subject_kind = 'user' AND u.id = g.subject_id
LEFT JOIN teams t ON g.subject_kind = 'team' AND t.id = g.subject_id
LEFT JOIN orgs o ON o.id = t.org_id
WHERE g.repository = {repo} ORDER BY 1, 2";

/// The name-ordered page of repositories a non-administrator may see, read from what
/// makes them visible rather than by testing every repository: public ones, the
/// viewer's own namespace, namespaces of organisations the viewer administers, and
/// grants to the viewer or their teams. Each source is read in name order from the
/// cursor and stops at the page size, so a page costs the same however many
/// repositories the viewer may not see. Parameters as in both backends' listing query:
/// 1 prefix, 2 prefix end, 3 substring, 5 user id, 6 user name, 7 cursor, 9 limit.
/// A namespace `ns` is read as the index range [`ns`, `ns0`) (`0` follows `/`), which
/// also holds names like `ns-x`; the second test keeps `ns` and `ns/…` only.
/// `p(n)` writes parameter `n` in the backend's dialect, `contains(x, p)` the
/// substring test, `columns` the selected columns over `r` and `s`.
pub(crate) fn restricted_by_name_sql(
    p: &dyn Fn(u32) -> String,
    contains: &dyn Fn(&str, &str) -> String,
    columns: &str,
) -> String {
    let filter = |x: &str| {
        format!(
            "{x} > {after} AND ({prefix} = '' OR ({x} >= {prefix} AND {x} < {end})) AND ({sub} = '' OR {has})",
            after = p(7),
            prefix = p(1),
            end = p(2),
            sub = p(3),
            has = contains(x, &p(3)),
        )
    };
    let (uid, uname, limit) = (p(5), p(6), p(9));
    format!(
        "WITH visible(name) AS (
           SELECT name FROM (SELECT s.name FROM repository_settings s
               JOIN repositories r ON r.name = s.name
               WHERE s.visibility = 'public' AND {public} ORDER BY s.name LIMIT {limit}) a
           UNION
           SELECT name FROM (SELECT r.name FROM repositories r
               WHERE {uid} IS NOT NULL
                 AND r.name >= {uname} AND r.name < {uname} || '0'
                 AND (r.name = {uname} OR r.name > {uname} || '/')
                 AND {own} ORDER BY r.name LIMIT {limit}) b
           UNION
           SELECT name FROM (SELECT r.name FROM orgs o JOIN org_members m ON m.org_id = o.id
               JOIN repositories r ON r.name >= o.name AND r.name < o.name || '0'
                 AND (r.name = o.name OR r.name > o.name || '/')
               WHERE m.user_id = {uid} AND m.is_admin AND {orgs} ORDER BY r.name LIMIT {limit}) c
           UNION
           SELECT name FROM (SELECT g.repository AS name FROM repository_grants g
               JOIN repositories r ON r.name = g.repository
               WHERE ((g.subject_kind = 'user' AND g.subject_id = {uid}) OR
                      (g.subject_kind = 'team' AND g.subject_id IN
                          (SELECT team_id FROM team_members WHERE user_id = {uid})))
                 AND {grants} ORDER BY g.repository LIMIT {limit}) d)
         SELECT {columns} FROM visible v JOIN repositories r ON r.name = v.name
           LEFT JOIN repository_settings s ON s.name = r.name
         ORDER BY r.name LIMIT {limit}",
        public = filter("s.name"),
        own = filter("r.name"),
        orgs = filter("r.name"),
        grants = filter("g.repository"),
    )
}

/// The viewer as the queries' parameters: (is admin, user id, user name).
pub(crate) fn viewer_params(v: &Viewer) -> (bool, Option<i64>, String) {
    match v {
        Viewer::Anonymous => (false, None, String::new()),
        Viewer::User { id, name } => (false, Some(*id), name.clone()),
        Viewer::Admin => (true, None, String::new()),
    }
}

/// The upper bound of names starting with `prefix`: `~` sorts after every character a
/// repository name may contain.
pub(crate) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}~")
}
