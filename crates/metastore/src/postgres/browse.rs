//! [`BrowseStore`] on PostgreSQL.

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{AssertSqlSafe, Row};

use super::PgMetaStore;
use crate::accounts::Visibility;
use crate::browse::{
    fold_teams, prefix_end, restricted_by_name_sql, viewer_params, BrowseStore, OrgDetail,
    RepoCursor, RepoQuery, RepoSort, RepoSummary, TagDetail, UnsummarisedManifest, Viewer,
    COUNT_UNSUMMARISED_SQL, DELETE_ORPHAN_SUMMARIES_SQL, LIST_ORGS_SQL, ORG_MEMBERS_SQL,
    ORG_TEAMS_SQL, REPO_GRANTS_SQL,
};
use crate::Result;
use wharf_oci::ManifestSummary;

/// `persistent(false)` for the listing queries: sqlx then sends them as unnamed
/// statements, which PostgreSQL plans with the values bound each time. A named
/// (persistent) statement switches to a generic plan after five executions, planned for
/// no value in particular, and for these queries that plan is a scan:
/// - `($1 = '' OR (r.name >= $1 AND r.name < $2))` cannot bound an index range unless
///   `$1` is known, so a namespace page walked the name index from the start (9 ms at
///   100,000 repositories instead of 0.3 ms);
/// - a generic plan expects one manifest per repository, so the tag page joined each tag
///   to its manifest by `repository_id` alone and filtered on the digest: 5,000 manifest
///   rows read per tag at 10,000 tags, 115–155 ms a page instead of 0.2 ms.
///
/// Planning each time costs a fraction of a millisecond.
const CUSTOM_PLAN: bool = false;

const COLUMNS: &str = "r.name,
        (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) AS tag_count,
        (SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id) AS last_push,
        s.visibility";

fn visible_repositories_sql(sort: RepoSort, admin: bool) -> String {
    if sort == RepoSort::Name && !admin {
        // Every parameter must appear where PostgreSQL can tell its type; $4 and $8
        // (admin, push cursor) are not used here, so a no-op names them.
        let sql = restricted_by_name_sql(
            &|n| match n {
                5 => "$5::bigint".to_string(),
                9 => "$9".to_string(),
                _ => format!("${n}::text"),
            },
            &|x, p| format!("strpos({x}, {p}) > 0"),
            COLUMNS,
        );
        let sql = sql.replace(
            "LEFT JOIN repository_settings s ON s.name = r.name\n         ORDER BY",
            "LEFT JOIN repository_settings s ON s.name = r.name\n         WHERE ($4::boolean OR TRUE) AND ($8::bigint IS NULL OR TRUE)\n         ORDER BY",
        );
        debug_assert!(
            sql.contains("$4::boolean"),
            "the no-op was not placed: {sql}"
        );
        return sql;
    }
    let ns = "split_part(r.name, '/', 1)";
    let filters = format!(
        "($1 = '' OR (r.name >= $1 AND r.name < $2))
         AND ($3 = '' OR strpos(r.name, $3) > 0)
         AND ($4 OR s.visibility = 'public' OR ($5::bigint IS NOT NULL AND (
              {ns} = $6
           OR EXISTS (SELECT 1 FROM orgs o JOIN org_members m ON m.org_id = o.id
                      WHERE m.user_id = $5 AND m.is_admin AND o.name = {ns})
           OR EXISTS (SELECT 1 FROM repository_grants g WHERE g.repository = r.name AND (
                      (g.subject_kind = 'user' AND g.subject_id = $5) OR
                      (g.subject_kind = 'team' AND g.subject_id IN
                          (SELECT team_id FROM team_members WHERE user_id = $5)))))))"
    );
    let columns = COLUMNS;
    match sort {
        RepoSort::Name => format!(
            "SELECT {columns} FROM repositories r LEFT JOIN repository_settings s ON s.name = r.name
             WHERE r.name > $7 AND ($8::bigint IS NULL OR TRUE) AND {filters}
             ORDER BY r.name LIMIT $9"
        ),
        RepoSort::LastPush => format!(
            "SELECT * FROM (SELECT {columns} FROM repositories r
                 LEFT JOIN repository_settings s ON s.name = r.name WHERE {filters}) x
             WHERE $8::bigint IS NULL OR COALESCE(x.last_push, 0) < $8
                OR (COALESCE(x.last_push, 0) = $8 AND x.name > $7)
             ORDER BY COALESCE(x.last_push, 0) DESC, x.name LIMIT $9"
        ),
    }
}

#[async_trait]
impl BrowseStore for PgMetaStore {
    async fn browse_repositories(
        &self,
        viewer: &Viewer,
        q: &RepoQuery,
    ) -> Result<Vec<RepoSummary>> {
        let (admin, uid, uname) = viewer_params(viewer);
        let (after_name, after_push) = match &q.after {
            None => (String::new(), None),
            Some(RepoCursor::Name(n)) => (n.clone(), None),
            Some(RepoCursor::LastPush { at_ms, name }) => (name.clone(), Some(*at_ms)),
        };
        let sql = visible_repositories_sql(q.sort, admin);
        // Planned for these values every time (see CUSTOM_PLAN).
        let rows = sqlx::query(AssertSqlSafe(sql))
            .persistent(CUSTOM_PLAN)
            .bind(&q.prefix)
            .bind(prefix_end(&q.prefix))
            .bind(&q.contains)
            .bind(admin)
            .bind(uid)
            .bind(uname)
            .bind(after_name)
            .bind(after_push)
            .bind(q.limit as i64)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| RepoSummary {
                name: r.get(0),
                tag_count: r.get::<i64, _>(1) as u64,
                last_push_ms: r.get(2),
                visibility: r
                    .get::<Option<String>, _>(3)
                    .and_then(|v| Visibility::parse(&v)),
            })
            .collect())
    }

    async fn tag_details(
        &self,
        repo: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<TagDetail>>> {
        let mut conn = self.pool().acquire().await?;
        let Some(rid) = super::repo_id(&mut conn, repo).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT t.name, t.manifest_digest, m.media_type, m.size, m.payload, t.updated_at,
                    s.size, s.platforms
             FROM tags t JOIN manifests m
               ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
             LEFT JOIN manifest_summaries s
               ON s.repository_id = m.repository_id AND s.digest = m.digest
             WHERE t.repository_id = $1 AND t.name > $2 ORDER BY t.name LIMIT $3",
        )
        .persistent(CUSTOM_PLAN)
        .bind(rid)
        .bind(after.unwrap_or(""))
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.iter()
                .map(|r| TagDetail {
                    name: r.get(0),
                    digest: r.get(1),
                    media_type: r.get(2),
                    size: r.get::<i64, _>(3) as u64,
                    payload: Bytes::from(r.get::<Vec<u8>, _>(4)),
                    updated_at_ms: r.get(5),
                    summary: r.get::<Option<i64>, _>(6).map(|size| ManifestSummary {
                        size: size as u64,
                        platforms: r.get(7),
                    }),
                })
                .collect(),
        ))
    }

    async fn repo_grants(&self, repo: &str) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(AssertSqlSafe(REPO_GRANTS_SQL.replace("{repo}", "$1")))
            .bind(repo)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    async fn list_orgs(&self) -> Result<Vec<(String, u64, u64)>> {
        let rows = sqlx::query(LIST_ORGS_SQL).fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<i64, _>(1) as u64,
                    r.get::<i64, _>(2) as u64,
                )
            })
            .collect())
    }

    async fn org_detail(&self, org: &str) -> Result<Option<OrgDetail>> {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orgs WHERE name = $1)")
            .bind(org)
            .fetch_one(self.pool())
            .await?;
        if !exists {
            return Ok(None);
        }
        let members = sqlx::query(AssertSqlSafe(ORG_MEMBERS_SQL.replace("{org}", "$1")))
            .bind(org)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let rows = sqlx::query(AssertSqlSafe(ORG_TEAMS_SQL.replace("{org}", "$1")))
            .bind(org)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Some(OrgDetail {
            members,
            teams: fold_teams(rows),
        }))
    }

    async fn tag_count(&self, repo: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1",
        )
        .bind(repo)
        .fetch_one(self.pool())
        .await?;
        Ok(n as u64)
    }

    async fn tags_of_manifest(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 AND t.manifest_digest = $2 ORDER BY t.name LIMIT 100",
        )
        .bind(repo)
        .bind(digest)
        .fetch_all(self.pool())
        .await?)
    }

    async fn count_manifests_without_summary(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(COUNT_UNSUMMARISED_SQL)
            .fetch_one(self.pool())
            .await?;
        Ok(n as u64)
    }

    async fn manifests_without_summary(
        &self,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<UnsummarisedManifest>> {
        let (rid, digest) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT m.repository_id, m.digest, m.media_type, m.payload FROM manifests m
             WHERE (m.repository_id, m.digest) > ($1, $2) AND NOT EXISTS
               (SELECT 1 FROM manifest_summaries s
                WHERE s.repository_id = m.repository_id AND s.digest = m.digest)
             ORDER BY m.repository_id, m.digest LIMIT $3",
        )
        .bind(rid)
        .bind(digest)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| UnsummarisedManifest {
                repository_id: r.get(0),
                digest: r.get(1),
                media_type: r.get(2),
                payload: Bytes::from(r.get::<Vec<u8>, _>(3)),
            })
            .collect())
    }

    async fn delete_orphan_summaries(&self) -> Result<u64> {
        Ok(sqlx::query(DELETE_ORPHAN_SUMMARIES_SQL)
            .execute(self.pool())
            .await?
            .rows_affected())
    }

    async fn record_manifest_summaries(
        &self,
        batch: &[(i64, String, ManifestSummary)],
    ) -> Result<u64> {
        // One statement for the whole batch; the join skips a manifest deleted since it
        // was read (the foreign key would refuse it).
        let mut rids = Vec::with_capacity(batch.len());
        let mut digests = Vec::with_capacity(batch.len());
        let mut sizes = Vec::with_capacity(batch.len());
        let mut platforms = Vec::with_capacity(batch.len());
        for (rid, digest, s) in batch {
            rids.push(*rid);
            digests.push(digest.as_str());
            sizes.push(s.size as i64);
            platforms.push(s.platforms.as_deref());
        }
        let stored = sqlx::query(
            "INSERT INTO manifest_summaries (repository_id, digest, size, platforms)
             SELECT m.repository_id, m.digest, u.size, u.platforms
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[]) AS u(rid, d, size, platforms)
             JOIN manifests m ON m.repository_id = u.rid AND m.digest = u.d
             ON CONFLICT DO NOTHING",
        )
        .bind(&rids)
        .bind(&digests)
        .bind(&sizes)
        .bind(&platforms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(stored)
    }
}
