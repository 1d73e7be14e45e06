//! [`ScanStore`] on PostgreSQL. Bulk writes bind whole columns as arrays (`UNNEST`), so
//! a batch is a few statements whatever its size.
//!
//! Concurrency with other replicas:
//! - a scan's package upsert (`ON CONFLICT DO UPDATE`) locks the package rows it uses
//!   until it commits, in one sorted order (no lock cycles between two scans), and the
//!   package GC skips locked rows (`SKIP LOCKED`): it never deletes a package that a
//!   scan is linking, and a scan that comes after a deletion inserts the row again;
//! - an import's staging, commit and failure lock its version row, so they cannot
//!   interleave.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgMetaStore;
use crate::scan::{
    aliases_json, check_severity, package_key, parse_aliases, severity_sums, sorted_packages,
    stats_from, AdvisoryRow, AffectedEntry, AffectedRow, AllowRow, FindingRow, InventoryDetail,
    InventoryRow, MatchChanges, MatchDiff, NewMatch, PackageRow, ScanGc, ScanPolicy, ScanStats,
    ScanStore, StoredInventory, StoredPolicy, SummaryRow, VulnChange, VulndbVersion,
};
use crate::{now_ms, MetaError, Result};

const VERSION_COLUMNS: &str =
    "id, source, started_at, finished_at, status, records, ecosystems, validators, error";

fn version_row(r: &PgRow) -> VulndbVersion {
    VulndbVersion {
        id: r.get(0),
        source: r.get(1),
        started_at_ms: r.get(2),
        finished_at_ms: r.get(3),
        status: r.get(4),
        records: r.get::<Option<i64>, _>(5).map(|n| n as u64),
        ecosystems_json: r.get(6),
        validators_json: r.get(7),
        error: r.get(8),
    }
}

const PACKAGE_COLUMNS: &str =
    "p.id, p.ecosystem, p.name, p.version, p.match_name, p.match_version, p.purl";

fn package_row(r: &PgRow, with_location: bool) -> (i64, PackageRow) {
    (
        r.get(0),
        PackageRow {
            ecosystem: r.get(1),
            name: r.get(2),
            version: r.get(3),
            match_name: r.get(4),
            match_version: r.get(5),
            purl: r.get(6),
            location: if with_location {
                r.get(7)
            } else {
                String::new()
            },
        },
    )
}

fn affected_entry(r: &PgRow) -> AffectedEntry {
    AffectedEntry {
        advisory_id: r.get(0),
        ecosystem: r.get(1),
        name: r.get(2),
        affected_json: r.get(3),
    }
}

/// Locks the import `version_id` and checks it is in progress.
async fn importing(conn: &mut PgConnection, version_id: i64) -> Result<()> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM vulndb_versions WHERE id = $1 FOR UPDATE")
            .bind(version_id)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref() {
        Some("importing") => Ok(()),
        Some(s) => Err(MetaError::Conflict(format!(
            "advisory database import {version_id} is {s}, not importing"
        ))),
        None => Err(MetaError::Conflict(format!(
            "no advisory database import {version_id}"
        ))),
    }
}

async fn drop_staged(conn: &mut PgConnection, version_ids: &[i64]) -> Result<()> {
    sqlx::query("DELETE FROM advisory_affected_staging WHERE db_version = ANY($1)")
        .bind(version_ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM advisories_staging WHERE db_version = ANY($1)")
        .bind(version_ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Recomputes the summaries of the scanned inventories that `inventories` (a query
/// returning `id`, which may use `$1`) selects, with `$2` as the database version:
/// severity counts per package first, then their sums per inventory.
fn summaries_sql(inventories: &str) -> String {
    format!(
        "INSERT INTO inventory_summary (inventory_id, critical, high, medium, low, unknown, db_version)
         WITH inv AS (SELECT i.id FROM inventories i WHERE i.status = 'scanned' AND i.id IN ({inventories})),
              inv_pkg AS (SELECT DISTINCT ip.inventory_id, ip.package_id FROM inventory_packages ip
                          WHERE ip.inventory_id IN (SELECT id FROM inv)),
              per_pkg(package_id, c0, c1, c2, c3, c4) AS (
                  SELECT pv.package_id, {sums} FROM package_vulns pv
                  JOIN advisories a ON a.id = pv.advisory_id
                  WHERE a.withdrawn IS NULL AND pv.package_id IN (SELECT package_id FROM inv_pkg)
                  GROUP BY pv.package_id)
         SELECT inv.id, COALESCE(SUM(pp.c0), 0)::BIGINT, COALESCE(SUM(pp.c1), 0)::BIGINT,
                COALESCE(SUM(pp.c2), 0)::BIGINT, COALESCE(SUM(pp.c3), 0)::BIGINT,
                COALESCE(SUM(pp.c4), 0)::BIGINT, $2::BIGINT
         FROM inv LEFT JOIN inv_pkg ip ON ip.inventory_id = inv.id
         LEFT JOIN per_pkg pp ON pp.package_id = ip.package_id
         GROUP BY inv.id
         ON CONFLICT (inventory_id) DO UPDATE SET critical = EXCLUDED.critical,
             high = EXCLUDED.high, medium = EXCLUDED.medium, low = EXCLUDED.low,
             unknown = EXCLUDED.unknown, db_version = EXCLUDED.db_version",
        sums = severity_sums("a.severity"),
    )
}

/// Rows per statement for the lookups that bind arrays.
const CHUNK: usize = 10_000;

#[async_trait]
impl ScanStore for PgMetaStore {
    async fn begin_vulndb_import(&self, source: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let abandoned: Vec<i64> = sqlx::query_scalar(
            "UPDATE vulndb_versions SET status = 'failed', finished_at = $1,
                 error = 'abandoned: a newer import started'
             WHERE status = 'importing' RETURNING id",
        )
        .bind(now_ms())
        .fetch_all(&mut *tx)
        .await?;
        if !abandoned.is_empty() {
            drop_staged(&mut tx, &abandoned).await?;
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO vulndb_versions (source, started_at, status) VALUES ($1, $2, 'importing')
             RETURNING id",
        )
        .bind(source)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn stage_advisories(&self, version_id: i64, batch: &[AdvisoryRow]) -> Result<()> {
        for a in batch {
            check_severity(&a.severity)?;
        }
        // One row per id (the last one staged wins): an upsert may not touch a row twice.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, a) in batch.iter().enumerate() {
            last.insert(&a.id, i);
        }
        let kept: Vec<&AdvisoryRow> = batch
            .iter()
            .enumerate()
            .filter(|(i, a)| last[a.id.as_str()] == *i)
            .map(|(_, a)| a)
            .collect();
        let ids: Vec<&str> = kept.iter().map(|a| a.id.as_str()).collect();
        let modified: Vec<&str> = kept.iter().map(|a| a.modified.as_str()).collect();
        let withdrawn: Vec<Option<&str>> = kept.iter().map(|a| a.withdrawn.as_deref()).collect();
        let aliases: Vec<String> = kept.iter().map(|a| aliases_json(&a.aliases)).collect();
        let severity: Vec<&str> = kept.iter().map(|a| a.severity.as_str()).collect();
        let score: Vec<Option<f64>> = kept.iter().map(|a| a.score).collect();
        let summary: Vec<&str> = kept.iter().map(|a| a.summary.as_str()).collect();
        let (mut f_ids, mut f_eco, mut f_name, mut f_json) = (vec![], vec![], vec![], vec![]);
        for a in &kept {
            for f in &a.affected {
                f_ids.push(a.id.as_str());
                f_eco.push(f.ecosystem.as_str());
                f_name.push(f.name.as_str());
                f_json.push(f.affected_json.as_str());
            }
        }
        let mut tx = self.pool.begin().await?;
        importing(&mut tx, version_id).await?;
        sqlx::query(
            "DELETE FROM advisory_affected_staging WHERE db_version = $1 AND advisory_id = ANY($2)",
        )
        .bind(version_id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO advisories_staging
                 (db_version, id, modified, withdrawn, aliases, severity, score, summary)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::float8[], $8::text[])
             ON CONFLICT (db_version, id) DO UPDATE SET modified = EXCLUDED.modified,
                 withdrawn = EXCLUDED.withdrawn, aliases = EXCLUDED.aliases,
                 severity = EXCLUDED.severity, score = EXCLUDED.score, summary = EXCLUDED.summary",
        )
        .bind(version_id)
        .bind(&ids)
        .bind(&modified)
        .bind(&withdrawn)
        .bind(&aliases)
        .bind(&severity)
        .bind(&score)
        .bind(&summary)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO advisory_affected_staging (db_version, advisory_id, ecosystem, name, affected)
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])",
        )
        .bind(version_id)
        .bind(&f_ids)
        .bind(&f_eco)
        .bind(&f_name)
        .bind(&f_json)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit_vulndb_import(
        &self,
        version_id: i64,
        ecosystems_json: &str,
        validators_json: &str,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        importing(&mut tx, version_id).await?;
        sqlx::query("DELETE FROM advisory_affected")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM advisories")
            .execute(&mut *tx)
            .await?;
        let records = sqlx::query(
            "INSERT INTO advisories (id, modified, withdrawn, aliases, severity, score, summary, db_version)
             SELECT id, modified, withdrawn, aliases, severity, score, summary, db_version
             FROM advisories_staging WHERE db_version = $1",
        )
        .bind(version_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO advisory_affected (advisory_id, ecosystem, name, affected)
             SELECT advisory_id, ecosystem, name, affected
             FROM advisory_affected_staging WHERE db_version = $1",
        )
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
        drop_staged(&mut tx, &[version_id]).await?;
        sqlx::query("UPDATE vulndb_versions SET status = 'superseded' WHERE status = 'current'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE vulndb_versions SET status = 'current', finished_at = $1, records = $2,
                 ecosystems = $3, validators = $4, error = NULL
             WHERE id = $5",
        )
        .bind(now_ms())
        .bind(records as i64)
        .bind(ecosystems_json)
        .bind(validators_json)
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(records)
    }

    async fn fail_vulndb_import(&self, version_id: i64, error: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT status FROM vulndb_versions WHERE id = $1 FOR UPDATE")
                .bind(version_id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.as_deref() == Some("importing") {
            drop_staged(&mut tx, &[version_id]).await?;
            sqlx::query(
                "UPDATE vulndb_versions SET status = 'failed', finished_at = $1, error = $2
                 WHERE id = $3",
            )
            .bind(now_ms())
            .bind(error)
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn vulndb_versions(&self, limit: usize) -> Result<Vec<VulndbVersion>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM vulndb_versions ORDER BY id DESC LIMIT $1"
        )))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(version_row).collect())
    }

    async fn current_vulndb(&self) -> Result<Option<VulndbVersion>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM vulndb_versions WHERE status = 'current'"
        )))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(version_row))
    }

    async fn affected_for(&self, packages: &[(String, String)]) -> Result<Vec<AffectedEntry>> {
        let mut packages = packages.to_vec();
        packages.sort();
        packages.dedup();
        let mut out = Vec::new();
        for chunk in packages.chunks(CHUNK) {
            let (eco, name): (Vec<&str>, Vec<&str>) =
                chunk.iter().map(|(e, n)| (e.as_str(), n.as_str())).unzip();
            let rows = sqlx::query(
                "SELECT f.advisory_id, f.ecosystem, f.name, f.affected
                 FROM UNNEST($1::text[], $2::text[]) k(ecosystem, name)
                 JOIN advisory_affected f ON f.ecosystem = k.ecosystem AND f.name = k.name
                 JOIN advisories a ON a.id = f.advisory_id
                 WHERE a.withdrawn IS NULL
                 ORDER BY f.ecosystem, f.name, f.advisory_id",
            )
            .bind(&eco)
            .bind(&name)
            .fetch_all(&self.pool)
            .await?;
            out.extend(rows.iter().map(affected_entry));
        }
        Ok(out)
    }

    async fn all_affected(&self) -> Result<Vec<AffectedEntry>> {
        let rows = sqlx::query(
            "SELECT f.advisory_id, f.ecosystem, f.name, f.affected FROM advisory_affected f
             JOIN advisories a ON a.id = f.advisory_id WHERE a.withdrawn IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(affected_entry).collect())
    }

    async fn advisories(&self, ids: &[String]) -> Result<Vec<AdvisoryRow>> {
        let mut tx = self.pool.begin().await?; // one snapshot for both reads
        let rows = sqlx::query(
            "SELECT id, modified, withdrawn, aliases, severity, score, summary
             FROM advisories WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let affected = sqlx::query(
            "SELECT advisory_id, ecosystem, name, affected FROM advisory_affected
             WHERE advisory_id = ANY($1) ORDER BY advisory_id, ecosystem, name, ctid",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut by_id: HashMap<String, AdvisoryRow> = rows
            .iter()
            .map(|r| {
                let a = AdvisoryRow {
                    id: r.get(0),
                    modified: r.get(1),
                    withdrawn: r.get(2),
                    aliases: parse_aliases(r.get(3)),
                    severity: r.get(4),
                    score: r.get(5),
                    summary: r.get(6),
                    affected: Vec::new(),
                };
                (a.id.clone(), a)
            })
            .collect();
        for r in &affected {
            let e = affected_entry(r);
            if let Some(a) = by_id.get_mut(&e.advisory_id) {
                a.affected.push(AffectedRow {
                    ecosystem: e.ecosystem,
                    name: e.name,
                    affected_json: e.affected_json,
                });
            }
        }
        // In the order asked.
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn store_inventory(
        &self,
        manifest_digest: &str,
        inventory: &InventoryRow,
    ) -> Result<StoredInventory> {
        let packages = sorted_packages(&inventory.packages);
        // The distinct packages, in key order (the order their rows are locked in).
        let mut distinct: Vec<&PackageRow> = Vec::new();
        for p in &packages {
            if distinct
                .last()
                .is_none_or(|l| package_key(l) != package_key(p))
            {
                distinct.push(p);
            }
        }
        let col = |f: fn(&PackageRow) -> &str| distinct.iter().map(|p| f(p)).collect::<Vec<_>>();
        let (eco, name, version) = (col(|p| &p.ecosystem), col(|p| &p.name), col(|p| &p.version));
        let (mname, mversion, purl) = (
            col(|p| &p.match_name),
            col(|p| &p.match_version),
            col(|p| &p.purl),
        );

        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM inventories WHERE manifest_digest = $1")
            .bind(manifest_digest)
            .execute(&mut *tx)
            .await?;
        let inventory_id: i64 = sqlx::query_scalar(
            "INSERT INTO inventories (manifest_digest, status, os, scanned_at, scanner_version, error, notes)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(manifest_digest)
        .bind(&inventory.status)
        .bind(&inventory.os_json)
        .bind(now_ms())
        .bind(&inventory.scanner_version)
        .bind(&inventory.error)
        .bind(&inventory.notes_json)
        .fetch_one(&mut *tx)
        .await?;
        // Inserted or locked (the no-op update), with whether it was new; in key order.
        let rows = sqlx::query(
            "INSERT INTO packages (ecosystem, name, version, match_name, match_version, purl)
             SELECT e, n, v, mn, mv, pu FROM UNNEST($1::text[], $2::text[], $3::text[],
                 $4::text[], $5::text[], $6::text[]) WITH ORDINALITY k(e, n, v, mn, mv, pu, o)
             ORDER BY o
             ON CONFLICT (ecosystem, name, version, match_name, match_version)
                 DO UPDATE SET purl = packages.purl
             RETURNING id, (xmax = 0), ecosystem, name, version, match_name, match_version",
        )
        .bind(&eco)
        .bind(&name)
        .bind(&version)
        .bind(&mname)
        .bind(&mversion)
        .bind(&purl)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids: HashMap<(String, String, String, String, String), (i64, bool)> = rows
            .iter()
            .map(|r| {
                (
                    (r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
                    (r.get(0), r.get(1)),
                )
            })
            .collect();
        let mut new_packages = Vec::new();
        let (mut link_ids, mut link_locations) = (Vec::new(), Vec::new());
        for p in &packages {
            let k = package_key(p);
            let key = (
                k.0.to_string(),
                k.1.to_string(),
                k.2.to_string(),
                k.3.to_string(),
                k.4.to_string(),
            );
            let Some((id, new)) = ids.get_mut(&key) else {
                return Err(MetaError::Backend(format!(
                    "package {} {} was not stored",
                    p.name, p.version
                )));
            };
            if *new {
                new_packages.push((*id, p.clone()));
                *new = false; // once, at its first location
            }
            link_ids.push(*id);
            link_locations.push(p.location.as_str());
        }
        sqlx::query(
            "INSERT INTO inventory_packages (inventory_id, package_id, location)
             SELECT $1, * FROM UNNEST($2::bigint[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(inventory_id)
        .bind(&link_ids)
        .bind(&link_locations)
        .execute(&mut *tx)
        .await?;
        if inventory.status == "scanned" {
            let current: i64 = sqlx::query_scalar(
                "SELECT COALESCE((SELECT id FROM vulndb_versions WHERE status = 'current'), 0)::BIGINT",
            )
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(summaries_sql("SELECT $1::BIGINT")))
                .bind(inventory_id)
                .bind(current)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(StoredInventory {
            inventory_id,
            new_packages,
        })
    }

    async fn set_sbom_digest(&self, manifest_digest: &str, sbom_digest: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE inventories SET sbom_digest = $1 WHERE manifest_digest = $2")
                .bind(sbom_digest)
                .bind(manifest_digest)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn packages_page(&self, after_id: i64, limit: usize) -> Result<Vec<(i64, PackageRow)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.id > $1 ORDER BY p.id LIMIT $2"
        )))
        .bind(after_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| package_row(r, false)).collect())
    }

    async fn package_vulns_for(&self, package_ids: &[i64]) -> Result<Vec<NewMatch>> {
        let mut out = Vec::new();
        for chunk in package_ids.chunks(CHUNK) {
            let rows = sqlx::query(
                "SELECT package_id, advisory_id, fixed FROM package_vulns
                 WHERE package_id = ANY($1) ORDER BY package_id, advisory_id",
            )
            .bind(chunk)
            .fetch_all(&self.pool)
            .await?;
            out.extend(rows.iter().map(|r| NewMatch {
                package_id: r.get(0),
                advisory_id: r.get(1),
                fixed: r.get(2),
            }));
        }
        Ok(out)
    }

    async fn apply_matches(&self, diff: &MatchDiff) -> Result<MatchChanges> {
        let mut out = MatchChanges::default();
        // One row per match (an upsert may not touch a row twice); the last one wins.
        let mut added: HashMap<(i64, &str), Option<&str>> = HashMap::new();
        for m in &diff.added {
            added.insert((m.package_id, &m.advisory_id), m.fixed.as_deref());
        }
        let mut added: Vec<_> = added.into_iter().collect();
        added.sort();
        let a_pid: Vec<i64> = added.iter().map(|((p, _), _)| *p).collect();
        let a_aid: Vec<&str> = added.iter().map(|((_, a), _)| *a).collect();
        let a_fixed: Vec<Option<&str>> = added.iter().map(|(_, f)| *f).collect();
        let r_pid: Vec<i64> = diff.removed.iter().map(|(p, _)| *p).collect();
        let r_aid: Vec<&str> = diff.removed.iter().map(|(_, a)| a.as_str()).collect();
        let all_pid: Vec<i64> = a_pid.iter().chain(&r_pid).copied().collect();
        let all_aid: Vec<&str> = a_aid.iter().chain(&r_aid).copied().collect();

        let mut tx = self.pool.begin().await?;
        const HAS: &str = "EXISTS (SELECT 1 FROM package_vulns pv JOIN inventory_packages ip2
             ON ip2.package_id = pv.package_id
             WHERE pv.advisory_id = p.advisory_id AND ip2.inventory_id = p.inventory_id)";
        if diff.record_changes {
            sqlx::query(
                "CREATE TEMP TABLE scan_pairs (inventory_id BIGINT NOT NULL, advisory_id TEXT NOT NULL,
                     before BOOLEAN NOT NULL DEFAULT FALSE, after BOOLEAN,
                     cancelled BOOLEAN NOT NULL DEFAULT FALSE,
                     PRIMARY KEY (inventory_id, advisory_id)) ON COMMIT DROP",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO scan_pairs (inventory_id, advisory_id)
                 SELECT DISTINCT ip.inventory_id, d.advisory_id
                 FROM UNNEST($1::bigint[], $2::text[]) d(package_id, advisory_id)
                 JOIN inventory_packages ip ON ip.package_id = d.package_id",
            )
            .bind(&all_pid)
            .bind(&all_aid)
            .execute(&mut *tx)
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE scan_pairs p SET before = {HAS}"
            )))
            .execute(&mut *tx)
            .await?;
        }
        out.removed = sqlx::query(
            "DELETE FROM package_vulns pv USING UNNEST($1::bigint[], $2::text[]) d(package_id, advisory_id)
             WHERE pv.package_id = d.package_id AND pv.advisory_id = d.advisory_id",
        )
        .bind(&r_pid)
        .bind(&r_aid)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let inserted: Vec<bool> = sqlx::query_scalar(
            "INSERT INTO package_vulns (package_id, advisory_id, fixed, first_seen_db)
             SELECT p, a, f, $4 FROM UNNEST($1::bigint[], $2::text[], $3::text[]) d(p, a, f)
             ORDER BY p, a
             ON CONFLICT (package_id, advisory_id) DO UPDATE SET fixed = EXCLUDED.fixed
                 WHERE package_vulns.fixed IS DISTINCT FROM EXCLUDED.fixed
             RETURNING (xmax = 0)",
        )
        .bind(&a_pid)
        .bind(&a_aid)
        .bind(&a_fixed)
        .bind(diff.db_version)
        .fetch_all(&mut *tx)
        .await?;
        out.added = inserted.iter().filter(|new| **new).count() as u64;
        if diff.record_changes {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE scan_pairs p SET after = {HAS}"
            )))
            .execute(&mut *tx)
            .await?;
            // A change undone within the same database version (removed on one page of
            // a re-match, added back on another) is no change.
            sqlx::query(
                "UPDATE scan_pairs p SET cancelled = TRUE WHERE before <> after AND EXISTS (
                     SELECT 1 FROM vuln_changes v WHERE v.db_version = $1
                     AND v.inventory_id = p.inventory_id AND v.advisory_id = p.advisory_id
                     AND v.change = CASE WHEN p.after THEN 'removed' ELSE 'added' END)",
            )
            .bind(diff.db_version)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM vuln_changes v USING scan_pairs p
                 WHERE v.db_version = $1 AND p.cancelled
                   AND v.inventory_id = p.inventory_id AND v.advisory_id = p.advisory_id",
            )
            .bind(diff.db_version)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO vuln_changes (db_version, inventory_id, advisory_id, change)
                 SELECT $1, inventory_id, advisory_id, CASE WHEN after THEN 'added' ELSE 'removed' END
                 FROM scan_pairs WHERE before <> after AND NOT cancelled
                 ON CONFLICT DO NOTHING",
            )
            .bind(diff.db_version)
            .execute(&mut *tx)
            .await?;
            let (gained, lost): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(DISTINCT inventory_id) FROM scan_pairs WHERE after AND NOT before),
                        (SELECT COUNT(DISTINCT inventory_id) FROM scan_pairs WHERE before AND NOT after)",
            )
            .fetch_one(&mut *tx)
            .await?;
            out.newly_affected_inventories = gained as u64;
            out.unaffected_inventories = lost as u64;
        } else {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(DISTINCT inventory_id) FROM inventory_packages WHERE package_id = ANY($1)",
            )
            .bind(&a_pid)
            .fetch_one(&mut *tx)
            .await?;
            out.newly_affected_inventories = n as u64;
        }
        if diff.refresh_summaries {
            sqlx::query(AssertSqlSafe(summaries_sql(
                "SELECT DISTINCT inventory_id FROM inventory_packages WHERE package_id = ANY($1)",
            )))
            .bind(&all_pid)
            .bind(diff.db_version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn refresh_all_summaries(&self, db_version: i64) -> Result<u64> {
        // $1 is unused by the selection; a no-op names it so its type is known.
        let sql = summaries_sql("SELECT id FROM inventories WHERE $1::BIGINT IS NULL OR TRUE");
        let n = sqlx::query(AssertSqlSafe(sql))
            .bind(0_i64)
            .bind(db_version)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    async fn inventory(&self, manifest_digest: &str) -> Result<Option<InventoryDetail>> {
        let mut tx = self.pool.begin().await?;
        let Some(r) = sqlx::query(
            "SELECT id, manifest_digest, status, os, scanned_at, scanner_version, error, notes, sbom_digest
             FROM inventories WHERE manifest_digest = $1",
        )
        .bind(manifest_digest)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let mut inv = InventoryDetail {
            id: r.get(0),
            manifest_digest: r.get(1),
            status: r.get(2),
            os_json: r.get(3),
            scanned_at_ms: r.get(4),
            scanner_version: r.get(5),
            error: r.get(6),
            notes_json: r.get(7),
            sbom_digest: r.get(8),
            packages: Vec::new(),
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PACKAGE_COLUMNS}, ip.location FROM inventory_packages ip
             JOIN packages p ON p.id = ip.package_id WHERE ip.inventory_id = $1
             ORDER BY p.ecosystem, p.name, p.version, ip.location"
        )))
        .bind(inv.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        inv.packages = rows.iter().map(|r| package_row(r, true)).collect();
        Ok(Some(inv))
    }

    async fn findings(&self, manifest_digest: &str) -> Result<Vec<FindingRow>> {
        let rows = sqlx::query(
            "SELECT a.id, a.aliases, a.severity, a.score, a.summary,
                    p.id, p.ecosystem, p.name, p.version, p.purl, pv.fixed
             FROM (SELECT DISTINCT ip.package_id FROM inventories i
                   JOIN inventory_packages ip ON ip.inventory_id = i.id
                   WHERE i.manifest_digest = $1) ip
             JOIN packages p ON p.id = ip.package_id
             JOIN package_vulns pv ON pv.package_id = p.id
             JOIN advisories a ON a.id = pv.advisory_id AND a.withdrawn IS NULL
             ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1
                 WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END,
                 a.id, p.ecosystem, p.name, p.version",
        )
        .bind(manifest_digest)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| FindingRow {
                advisory_id: r.get(0),
                aliases: parse_aliases(r.get(1)),
                severity: r.get(2),
                score: r.get(3),
                summary: r.get(4),
                package_id: r.get(5),
                ecosystem: r.get(6),
                name: r.get(7),
                version: r.get(8),
                purl: r.get(9),
                fixed: r.get(10),
            })
            .collect())
    }

    async fn summaries(&self, manifest_digests: &[String]) -> Result<Vec<(String, SummaryRow)>> {
        let rows = sqlx::query(
            "SELECT i.manifest_digest, i.status, i.scanned_at, s.critical, s.high, s.medium, s.low,
                    s.unknown, s.db_version
             FROM UNNEST($1::text[]) WITH ORDINALITY d(digest, o)
             JOIN inventories i ON i.manifest_digest = d.digest
             LEFT JOIN inventory_summary s ON s.inventory_id = i.id
             ORDER BY d.o",
        )
        .bind(manifest_digests)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i| r.get::<Option<i64>, _>(i).unwrap_or(0) as u64;
                (
                    r.get(0),
                    SummaryRow {
                        status: r.get(1),
                        scanned_at_ms: r.get(2),
                        critical: n(3),
                        high: n(4),
                        medium: n(5),
                        low: n(6),
                        unknown: n(7),
                        db_version: r.get(8),
                    },
                )
            })
            .collect())
    }

    async fn vuln_change_counts(&self, db_version: i64) -> Result<(u64, u64)> {
        let r = sqlx::query(
            "SELECT COUNT(DISTINCT inventory_id) FILTER (WHERE change = 'added'),
                        COUNT(DISTINCT inventory_id) FILTER (WHERE change = 'removed')
                 FROM vuln_changes WHERE db_version = $1",
        )
        .bind(db_version)
        .fetch_one(&self.pool)
        .await?;
        Ok((r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
    }

    async fn scan_stats(&self) -> Result<ScanStats> {
        let r = sqlx::query(
            "SELECT
                    COUNT(*) FILTER (WHERE i.status = 'scanned'),
                    COUNT(*) FILTER (WHERE i.status = 'failed'),
                    COUNT(*) FILTER (WHERE s.critical > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium = 0 AND s.low > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium = 0 AND s.low = 0 AND s.unknown > 0)
                 FROM inventories i LEFT JOIN inventory_summary s ON s.inventory_id = i.id",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: [i64; 7] = std::array::from_fn(|i| r.get(i));
        Ok(stats_from(n))
    }

    async fn vuln_changes(&self, db_version: i64, limit: usize) -> Result<Vec<VulnChange>> {
        let rows = sqlx::query(
            "SELECT v.db_version, v.inventory_id, i.manifest_digest, v.advisory_id, v.change
             FROM vuln_changes v JOIN inventories i ON i.id = v.inventory_id
             WHERE v.db_version = $1 ORDER BY i.manifest_digest, v.advisory_id LIMIT $2",
        )
        .bind(db_version)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| VulnChange {
                db_version: r.get(0),
                inventory_id: r.get(1),
                manifest_digest: r.get(2),
                advisory_id: r.get(3),
                change: r.get(4),
            })
            .collect())
    }

    async fn scan_policy(&self, repository: &str) -> Result<Option<StoredPolicy>> {
        let row = sqlx::query(
            "SELECT repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at
             FROM scan_policies WHERE repository = $1",
        )
        .bind(repository)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(policy_row))
    }

    async fn scan_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(
            "SELECT repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at
             FROM scan_policies ORDER BY repository",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(policy_row).collect())
    }

    async fn set_scan_policy(&self, repository: &str, policy: &ScanPolicy) -> Result<()> {
        if let Some(s) = &policy.block_severity {
            check_severity(s)?;
        }
        sqlx::query(
            "INSERT INTO scan_policies
                 (repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository) DO UPDATE SET scan_on_push = EXCLUDED.scan_on_push,
                 block_severity = EXCLUDED.block_severity, unscanned = EXCLUDED.unscanned,
                 attach_sbom = EXCLUDED.attach_sbom, updated_at = EXCLUDED.updated_at",
        )
        .bind(repository)
        .bind(policy.scan_on_push)
        .bind(&policy.block_severity)
        .bind(&policy.unscanned)
        .bind(policy.attach_sbom)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| MetaError::Conflict(format!("scan policy refused: {e}")))?;
        Ok(())
    }

    async fn delete_scan_policy(&self, repository: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM scan_policies WHERE repository = $1")
                .bind(repository)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn allowlist(&self, repository: &str) -> Result<Vec<AllowRow>> {
        let rows = sqlx::query(
            "SELECT repository, vuln_id, expires_at, reason, created_by, created_at
             FROM scan_allowlist WHERE repository IN ('', $1) ORDER BY repository, vuln_id",
        )
        .bind(repository)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AllowRow {
                repository: r.get(0),
                vuln_id: r.get(1),
                expires_at_ms: r.get(2),
                reason: r.get(3),
                created_by: r.get(4),
                created_at_ms: r.get(5),
            })
            .collect())
    }

    async fn add_allow(&self, entry: &AllowRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO scan_allowlist (repository, vuln_id, expires_at, reason, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository, vuln_id) DO UPDATE SET expires_at = EXCLUDED.expires_at,
                 reason = EXCLUDED.reason, created_by = EXCLUDED.created_by,
                 created_at = EXCLUDED.created_at",
        )
        .bind(&entry.repository)
        .bind(&entry.vuln_id)
        .bind(entry.expires_at_ms)
        .bind(&entry.reason)
        .bind(&entry.created_by)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_allow(&self, repository: &str, vuln_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("DELETE FROM scan_allowlist WHERE repository = $1 AND vuln_id = $2")
                .bind(repository)
                .bind(vuln_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    async fn delete_inventories_without_manifests(&self) -> Result<ScanGc> {
        let mut tx = self.pool.begin().await?;
        let inventories = sqlx::query(
            "DELETE FROM inventories WHERE id IN (
                 SELECT i.id FROM inventories i
                 WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = i.manifest_digest)
                 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Rows a scan is linking right now are locked by it: skipped, not deleted.
        let packages = sqlx::query(
            "DELETE FROM packages WHERE id IN (
                 SELECT p.id FROM packages p
                 WHERE NOT EXISTS (SELECT 1 FROM inventory_packages ip WHERE ip.package_id = p.id)
                 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(ScanGc {
            inventories,
            packages,
        })
    }
}

fn policy_row(r: &PgRow) -> StoredPolicy {
    StoredPolicy {
        repository: r.get(0),
        policy: ScanPolicy {
            scan_on_push: r.get(1),
            block_severity: r.get(2),
            unscanned: r.get(3),
            attach_sbom: r.get(4),
        },
        updated_at_ms: r.get(5),
    }
}
