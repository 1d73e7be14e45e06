//! [`ScanStore`] on SQLite. Writes go through the one writer (so no other write can
//! come between a check and what follows it); bulk steps work in temporary tables on
//! that connection, created and dropped inside the transaction.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::{connect, SqliteMetaStore};
use crate::scan::{
    aliases_json, check_severity, package_key, parse_aliases, severity_sums, sorted_packages,
    stats_from, AdvisoryRow, AffectedEntry, AffectedRow, AllowRow, FindingRow, InventoryDetail,
    InventoryRow, MatchChanges, MatchDiff, NewMatch, PackageRow, ScanGc, ScanPolicy, ScanStats,
    ScanStore, StoredInventory, StoredPolicy, SummaryRow, VulnChange, VulndbVersion,
};
use crate::{now_ms, MetaError, Result};

const VERSION_COLUMNS: &str =
    "id, source, started_at, finished_at, status, records, ecosystems, validators, error";

fn version_row(r: &Row) -> rusqlite::Result<VulndbVersion> {
    Ok(VulndbVersion {
        id: r.get(0)?,
        source: r.get(1)?,
        started_at_ms: r.get(2)?,
        finished_at_ms: r.get(3)?,
        status: r.get(4)?,
        records: r.get::<_, Option<i64>>(5)?.map(|n| n as u64),
        ecosystems_json: r.get(6)?,
        validators_json: r.get(7)?,
        error: r.get(8)?,
    })
}

const PACKAGE_COLUMNS: &str =
    "p.id, p.ecosystem, p.name, p.version, p.match_name, p.match_version, p.purl";

/// A `PACKAGE_COLUMNS` row, then the location at column 7 if `with_location`.
fn package_row(r: &Row, with_location: bool) -> rusqlite::Result<(i64, PackageRow)> {
    Ok((
        r.get(0)?,
        PackageRow {
            ecosystem: r.get(1)?,
            name: r.get(2)?,
            version: r.get(3)?,
            match_name: r.get(4)?,
            match_version: r.get(5)?,
            purl: r.get(6)?,
            location: if with_location {
                r.get(7)?
            } else {
                String::new()
            },
        },
    ))
}

/// Checks that `version_id` is an import in progress.
fn importing(tx: &Transaction, version_id: i64) -> Result<()> {
    let status: Option<String> = tx
        .prepare_cached("SELECT status FROM vulndb_versions WHERE id = ?")?
        .query_row([version_id], |r| r.get(0))
        .optional()?;
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

fn drop_staged(tx: &Transaction, version_id: i64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM advisory_affected_staging WHERE db_version = ?",
        [version_id],
    )?;
    tx.execute(
        "DELETE FROM advisories_staging WHERE db_version = ?",
        [version_id],
    )?;
    Ok(())
}

fn current_version_id(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT COALESCE((SELECT id FROM vulndb_versions WHERE status = 'current'), 0)",
        [],
        |r| r.get(0),
    )
}

/// Recomputes the summaries of the scanned inventories listed in `temp.scan_inv`:
/// severity counts per package first, then their sums per inventory, so the large join
/// never touches the per-advisory rows. (`CROSS JOIN` fixes SQLite's loop order: the
/// listed inventories outside, their packages by primary key inside; left to itself,
/// the planner walked every inventory's packages, which made storing an inventory cost
/// in proportion to all of them.)
fn refresh_listed_summaries(tx: &Transaction, db_version: i64) -> rusqlite::Result<u64> {
    let sql = format!(
        "INSERT OR REPLACE INTO inventory_summary
             (inventory_id, critical, high, medium, low, unknown, db_version)
         WITH inv_pkg AS (SELECT DISTINCT ip.inventory_id, ip.package_id
                          FROM temp.scan_inv i CROSS JOIN inventory_packages ip
                          ON ip.inventory_id = i.id),
              per_pkg(package_id, c0, c1, c2, c3, c4) AS (
                  SELECT pv.package_id, {sums} FROM package_vulns pv
                  JOIN advisories a ON a.id = pv.advisory_id
                  WHERE a.withdrawn IS NULL AND pv.package_id IN (SELECT package_id FROM inv_pkg)
                  GROUP BY pv.package_id)
         SELECT i.id, COALESCE(SUM(pp.c0), 0), COALESCE(SUM(pp.c1), 0), COALESCE(SUM(pp.c2), 0),
                COALESCE(SUM(pp.c3), 0), COALESCE(SUM(pp.c4), 0), ?
         FROM temp.scan_inv i
         LEFT JOIN inv_pkg ip ON ip.inventory_id = i.id
         LEFT JOIN per_pkg pp ON pp.package_id = ip.package_id
         GROUP BY i.id",
        sums = severity_sums("a.severity"),
    );
    Ok(tx.execute(&sql, [db_version])? as u64)
}

fn create_inv_list(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS scan_inv (id INTEGER PRIMARY KEY);
         DELETE FROM temp.scan_inv;",
    )
}

impl SqliteMetaStore {
    /// A read that may take long (loading thousands of rows): on the blocking pool, on
    /// a connection of its own, so it neither stalls the async workers nor holds a
    /// pooled reader.
    async fn read_long<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let conn = connect(&path)?;
            f(&conn)
        })
        .await
        .map_err(super::backend)?
    }
}

#[async_trait]
impl ScanStore for SqliteMetaStore {
    async fn begin_vulndb_import(&self, source: &str) -> Result<i64> {
        let source = source.to_string();
        self.write(move |tx| {
            let abandoned: Vec<i64> = tx
                .prepare("SELECT id FROM vulndb_versions WHERE status = 'importing'")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in abandoned {
                drop_staged(tx, id)?;
                tx.execute(
                    "UPDATE vulndb_versions SET status = 'failed', finished_at = ?,
                     error = 'abandoned: a newer import started' WHERE id = ?",
                    params![now_ms(), id],
                )?;
            }
            tx.execute(
                "INSERT INTO vulndb_versions (source, started_at, status) VALUES (?, ?, 'importing')",
                params![source, now_ms()],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    async fn stage_advisories(&self, version_id: i64, batch: &[AdvisoryRow]) -> Result<()> {
        for a in batch {
            check_severity(&a.severity)?;
        }
        let batch = batch.to_vec();
        // Staged rows are not acknowledged to anyone: the commit makes them durable.
        self.write_relaxed(move |tx| {
            importing(tx, version_id)?;
            let mut del = tx.prepare_cached(
                "DELETE FROM advisory_affected_staging WHERE db_version = ? AND advisory_id = ?",
            )?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO advisories_staging
                     (db_version, id, modified, withdrawn, aliases, severity, score, summary)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (db_version, id) DO UPDATE SET modified = excluded.modified,
                     withdrawn = excluded.withdrawn, aliases = excluded.aliases,
                     severity = excluded.severity, score = excluded.score, summary = excluded.summary",
            )?;
            let mut aff = tx.prepare_cached(
                "INSERT INTO advisory_affected_staging (db_version, advisory_id, ecosystem, name, affected)
                 VALUES (?, ?, ?, ?, ?)",
            )?;
            for a in &batch {
                // A record staged before (in this batch or an earlier one) is replaced.
                del.execute(params![version_id, a.id])?;
                ins.execute(params![
                    version_id,
                    a.id,
                    a.modified,
                    a.withdrawn,
                    aliases_json(&a.aliases),
                    a.severity,
                    a.score,
                    a.summary
                ])?;
                for f in &a.affected {
                    aff.execute(params![version_id, a.id, f.ecosystem, f.name, f.affected_json])?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn commit_vulndb_import(
        &self,
        version_id: i64,
        ecosystems_json: &str,
        validators_json: &str,
    ) -> Result<u64> {
        let (ecosystems, validators) = (ecosystems_json.to_string(), validators_json.to_string());
        self.write(move |tx| {
            importing(tx, version_id)?;
            tx.execute("DELETE FROM advisory_affected", [])?;
            tx.execute("DELETE FROM advisories", [])?;
            let records = tx.execute(
                "INSERT INTO advisories (id, modified, withdrawn, aliases, severity, score, summary, db_version)
                 SELECT id, modified, withdrawn, aliases, severity, score, summary, db_version
                 FROM advisories_staging WHERE db_version = ?",
                [version_id],
            )?;
            tx.execute(
                "INSERT INTO advisory_affected (advisory_id, ecosystem, name, affected)
                 SELECT advisory_id, ecosystem, name, affected
                 FROM advisory_affected_staging WHERE db_version = ?",
                [version_id],
            )?;
            drop_staged(tx, version_id)?;
            tx.execute(
                "UPDATE vulndb_versions SET status = 'superseded' WHERE status = 'current'",
                [],
            )?;
            tx.execute(
                "UPDATE vulndb_versions SET status = 'current', finished_at = ?, records = ?,
                     ecosystems = ?, validators = ?, error = NULL
                 WHERE id = ?",
                params![now_ms(), records as i64, ecosystems, validators, version_id],
            )?;
            Ok(records as u64)
        })
        .await
    }

    async fn fail_vulndb_import(&self, version_id: i64, error: &str) -> Result<()> {
        let error = error.to_string();
        self.write(move |tx| {
            drop_staged(tx, version_id)?;
            tx.execute(
                "UPDATE vulndb_versions SET status = 'failed', finished_at = ?, error = ?
                 WHERE id = ? AND status = 'importing'",
                params![now_ms(), error, version_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn vulndb_versions(&self, limit: usize) -> Result<Vec<VulndbVersion>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM vulndb_versions ORDER BY id DESC LIMIT ?"
            ))?;
            let rows = st.query_map([limit as i64], version_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn current_vulndb(&self) -> Result<Option<VulndbVersion>> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM vulndb_versions WHERE status = 'current'"
            ))?
            .query_row([], version_row)
            .optional()?)
        })
        .await
    }

    async fn affected_for(&self, packages: &[(String, String)]) -> Result<Vec<AffectedEntry>> {
        let mut packages = packages.to_vec();
        packages.sort();
        packages.dedup();
        self.read_long(move |c| {
            let mut st = c.prepare_cached(
                "SELECT f.advisory_id, f.ecosystem, f.name, f.affected FROM advisory_affected f
                 JOIN advisories a ON a.id = f.advisory_id
                 WHERE f.ecosystem = ? AND f.name = ? AND a.withdrawn IS NULL
                 ORDER BY f.advisory_id",
            )?;
            let mut out = Vec::new();
            for (eco, name) in &packages {
                let rows = st.query_map(params![eco, name], affected_entry)?;
                for row in rows {
                    out.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn all_affected(&self) -> Result<Vec<AffectedEntry>> {
        self.read_long(|c| {
            let mut st = c.prepare(
                "SELECT f.advisory_id, f.ecosystem, f.name, f.affected FROM advisory_affected f
                 JOIN advisories a ON a.id = f.advisory_id WHERE a.withdrawn IS NULL",
            )?;
            let rows = st.query_map([], affected_entry)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn advisories(&self, ids: &[String]) -> Result<Vec<AdvisoryRow>> {
        let ids = ids.to_vec();
        self.read(move |c| {
            let mut adv = c.prepare_cached(
                "SELECT id, modified, withdrawn, aliases, severity, score, summary
                 FROM advisories WHERE id = ?",
            )?;
            let mut aff = c.prepare_cached(
                "SELECT ecosystem, name, affected FROM advisory_affected WHERE advisory_id = ?
                 ORDER BY ecosystem, name, rowid",
            )?;
            let mut out = Vec::new();
            for id in &ids {
                let Some(mut a) = adv
                    .query_row([id], |r| {
                        Ok(AdvisoryRow {
                            id: r.get(0)?,
                            modified: r.get(1)?,
                            withdrawn: r.get(2)?,
                            aliases: parse_aliases(&r.get::<_, String>(3)?),
                            severity: r.get(4)?,
                            score: r.get(5)?,
                            summary: r.get(6)?,
                            affected: Vec::new(),
                        })
                    })
                    .optional()?
                else {
                    continue;
                };
                a.affected = aff
                    .query_map([id], |r| {
                        Ok(AffectedRow {
                            ecosystem: r.get(0)?,
                            name: r.get(1)?,
                            affected_json: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                out.push(a);
            }
            Ok(out)
        })
        .await
    }

    async fn store_inventory(
        &self,
        manifest_digest: &str,
        inventory: &InventoryRow,
    ) -> Result<StoredInventory> {
        let digest = manifest_digest.to_string();
        let inv = InventoryRow {
            packages: sorted_packages(&inventory.packages),
            ..inventory.clone()
        };
        self.write(move |tx| {
            tx.prepare_cached("DELETE FROM inventories WHERE manifest_digest = ?")?
                .execute([&digest])?;
            tx.prepare_cached(
                "INSERT INTO inventories (manifest_digest, status, os, scanned_at, scanner_version, error, notes)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                digest,
                inv.status,
                inv.os_json,
                now_ms(),
                inv.scanner_version,
                inv.error,
                inv.notes_json
            ])?;
            let inventory_id = tx.last_insert_rowid();
            let mut find = tx.prepare_cached(
                "SELECT id FROM packages WHERE ecosystem = ? AND name = ? AND version = ?
                 AND match_name = ? AND match_version = ?",
            )?;
            let mut add = tx.prepare_cached(
                "INSERT INTO packages (ecosystem, name, version, match_name, match_version, purl)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?;
            let mut link = tx.prepare_cached(
                "INSERT OR IGNORE INTO inventory_packages (inventory_id, package_id, location)
                 VALUES (?, ?, ?)",
            )?;
            let mut new_packages: Vec<(i64, PackageRow)> = Vec::new();
            // Sorted: the rows of one package (several locations) are adjacent.
            let mut last: Option<(usize, i64)> = None;
            for (i, p) in inv.packages.iter().enumerate() {
                let id = match last {
                    Some((j, id)) if package_key(&inv.packages[j]) == package_key(p) => id,
                    _ => {
                        let found: Option<i64> = find
                            .query_row(
                                params![p.ecosystem, p.name, p.version, p.match_name, p.match_version],
                                |r| r.get(0),
                            )
                            .optional()?;
                        let id = match found {
                            Some(id) => id,
                            None => {
                                add.execute(params![
                                    p.ecosystem,
                                    p.name,
                                    p.version,
                                    p.match_name,
                                    p.match_version,
                                    p.purl
                                ])?;
                                let id = tx.last_insert_rowid();
                                new_packages.push((id, p.clone()));
                                id
                            }
                        };
                        last = Some((i, id));
                        id
                    }
                };
                link.execute(params![inventory_id, id, p.location])?;
            }
            drop((find, add, link));
            if inv.status == "scanned" {
                create_inv_list(tx)?;
                tx.execute("INSERT INTO temp.scan_inv (id) VALUES (?)", [inventory_id])?;
                refresh_listed_summaries(tx, current_version_id(tx)?)?;
                tx.execute("DELETE FROM temp.scan_inv", [])?;
            }
            Ok(StoredInventory {
                inventory_id,
                new_packages,
            })
        })
        .await
    }

    async fn set_sbom_digest(&self, manifest_digest: &str, sbom_digest: &str) -> Result<bool> {
        let (digest, sbom) = (manifest_digest.to_string(), sbom_digest.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "UPDATE inventories SET sbom_digest = ? WHERE manifest_digest = ?",
                params![sbom, digest],
            )? > 0)
        })
        .await
    }

    async fn packages_page(&self, after_id: i64, limit: usize) -> Result<Vec<(i64, PackageRow)>> {
        self.read_long(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.id > ? ORDER BY p.id LIMIT ?"
            ))?;
            let rows = st.query_map(params![after_id, limit as i64], |r| package_row(r, false))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn package_vulns_for(&self, package_ids: &[i64]) -> Result<Vec<NewMatch>> {
        let mut ids = package_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.read_long(move |c| {
            let mut st = c.prepare_cached(
                "SELECT package_id, advisory_id, fixed FROM package_vulns WHERE package_id = ?
                 ORDER BY advisory_id",
            )?;
            let mut out = Vec::new();
            for id in ids {
                let rows = st.query_map([id], |r| {
                    Ok(NewMatch {
                        package_id: r.get(0)?,
                        advisory_id: r.get(1)?,
                        fixed: r.get(2)?,
                    })
                })?;
                for m in rows {
                    out.push(m?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn apply_matches(&self, diff: &MatchDiff) -> Result<MatchChanges> {
        let diff = diff.clone();
        self.write(move |tx| {
            let mut out = MatchChanges::default();
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS scan_diff (package_id INTEGER NOT NULL,
                     advisory_id TEXT NOT NULL, added INTEGER NOT NULL,
                     PRIMARY KEY (package_id, advisory_id));
                 DELETE FROM temp.scan_diff;
                 CREATE TEMP TABLE IF NOT EXISTS scan_pairs (inventory_id INTEGER NOT NULL,
                     advisory_id TEXT NOT NULL, before INTEGER NOT NULL, after INTEGER,
                     cancelled INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (inventory_id, advisory_id)) WITHOUT ROWID;
                 DELETE FROM temp.scan_pairs;",
            )?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR REPLACE INTO temp.scan_diff (package_id, advisory_id, added) VALUES (?, ?, ?)",
                )?;
                for (p, a) in &diff.removed {
                    ins.execute(params![p, a, 0])?;
                }
                for m in &diff.added {
                    ins.execute(params![m.package_id, m.advisory_id, 1])?;
                }
            }
            // What each touched image had before: does any of its packages match?
            const HAS: &str = "EXISTS (SELECT 1 FROM package_vulns pv JOIN inventory_packages ip2
                 ON ip2.package_id = pv.package_id
                 WHERE pv.advisory_id = p.advisory_id AND ip2.inventory_id = p.inventory_id)";
            if diff.record_changes {
                tx.execute(
                    "INSERT OR IGNORE INTO temp.scan_pairs (inventory_id, advisory_id, before)
                     SELECT DISTINCT ip.inventory_id, d.advisory_id, 0 FROM temp.scan_diff d
                     CROSS JOIN inventory_packages ip ON ip.package_id = d.package_id",
                    [],
                )?;
                tx.execute(&format!("UPDATE temp.scan_pairs AS p SET before = {HAS}"), [])?;
            }
            {
                let mut del = tx.prepare_cached(
                    "DELETE FROM package_vulns WHERE package_id = ? AND advisory_id = ?",
                )?;
                for (p, a) in &diff.removed {
                    out.removed += del.execute(params![p, a])? as u64;
                }
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO package_vulns (package_id, advisory_id, fixed, first_seen_db)
                     VALUES (?, ?, ?, ?)",
                )?;
                let mut upd = tx.prepare_cached(
                    "UPDATE package_vulns SET fixed = ? WHERE package_id = ? AND advisory_id = ?
                     AND fixed IS NOT ?",
                )?;
                for m in &diff.added {
                    let n = ins.execute(params![m.package_id, m.advisory_id, m.fixed, diff.db_version])?;
                    if n == 0 {
                        upd.execute(params![m.fixed, m.package_id, m.advisory_id, m.fixed])?;
                    }
                    out.added += n as u64;
                }
            }
            if diff.record_changes {
                tx.execute(&format!("UPDATE temp.scan_pairs AS p SET after = {HAS}"), [])?;
                // A change undone within the same database version (removed on one page
                // of a re-match, added back on another) is no change.
                tx.execute(
                    "UPDATE temp.scan_pairs AS p SET cancelled = 1 WHERE before <> after AND EXISTS (
                         SELECT 1 FROM vuln_changes v WHERE v.db_version = ?
                         AND v.inventory_id = p.inventory_id AND v.advisory_id = p.advisory_id
                         AND v.change = CASE WHEN p.after THEN 'removed' ELSE 'added' END)",
                    [diff.db_version],
                )?;
                tx.execute(
                    "DELETE FROM vuln_changes WHERE db_version = ? AND (inventory_id, advisory_id) IN
                         (SELECT inventory_id, advisory_id FROM temp.scan_pairs WHERE cancelled)",
                    [diff.db_version],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO vuln_changes (db_version, inventory_id, advisory_id, change)
                     SELECT ?, inventory_id, advisory_id, CASE WHEN after THEN 'added' ELSE 'removed' END
                     FROM temp.scan_pairs WHERE before <> after AND NOT cancelled",
                    [diff.db_version],
                )?;
                let (gained, lost): (i64, i64) = tx.query_row(
                    "SELECT (SELECT COUNT(DISTINCT inventory_id) FROM temp.scan_pairs WHERE after AND NOT before),
                            (SELECT COUNT(DISTINCT inventory_id) FROM temp.scan_pairs WHERE before AND NOT after)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                out.newly_affected_inventories = gained as u64;
                out.unaffected_inventories = lost as u64;
            } else {
                // Without the before/after comparison: the images holding a package
                // with a new match.
                out.newly_affected_inventories = tx.query_row(
                    "SELECT COUNT(DISTINCT ip.inventory_id) FROM temp.scan_diff d
                     CROSS JOIN inventory_packages ip ON ip.package_id = d.package_id WHERE d.added",
                    [],
                    |r| r.get::<_, i64>(0),
                )? as u64;
            }
            if diff.refresh_summaries {
                create_inv_list(tx)?;
                tx.execute(
                    "INSERT OR IGNORE INTO temp.scan_inv (id)
                     SELECT DISTINCT ip.inventory_id FROM temp.scan_diff d
                     CROSS JOIN inventory_packages ip ON ip.package_id = d.package_id
                     JOIN inventories i ON i.id = ip.inventory_id WHERE i.status = 'scanned'",
                    [],
                )?;
                refresh_listed_summaries(tx, diff.db_version)?;
                tx.execute("DELETE FROM temp.scan_inv", [])?;
            }
            tx.execute_batch("DELETE FROM temp.scan_diff; DELETE FROM temp.scan_pairs;")?;
            Ok(out)
        })
        .await
    }

    async fn refresh_all_summaries(&self, db_version: i64) -> Result<u64> {
        self.write(move |tx| {
            create_inv_list(tx)?;
            tx.execute(
                "INSERT INTO temp.scan_inv (id) SELECT id FROM inventories WHERE status = 'scanned'",
                [],
            )?;
            let n = refresh_listed_summaries(tx, db_version)?;
            tx.execute("DELETE FROM temp.scan_inv", [])?;
            Ok(n)
        })
        .await
    }

    async fn inventory(&self, manifest_digest: &str) -> Result<Option<InventoryDetail>> {
        let digest = manifest_digest.to_string();
        self.read(move |c| {
            let Some(mut inv) = c
                .prepare_cached(
                    "SELECT id, manifest_digest, status, os, scanned_at, scanner_version, error, notes, sbom_digest
                     FROM inventories WHERE manifest_digest = ?",
                )?
                .query_row([&digest], |r| {
                    Ok(InventoryDetail {
                        id: r.get(0)?,
                        manifest_digest: r.get(1)?,
                        status: r.get(2)?,
                        os_json: r.get(3)?,
                        scanned_at_ms: r.get(4)?,
                        scanner_version: r.get(5)?,
                        error: r.get(6)?,
                        notes_json: r.get(7)?,
                        sbom_digest: r.get(8)?,
                        packages: Vec::new(),
                    })
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT {PACKAGE_COLUMNS}, ip.location FROM inventory_packages ip
                 JOIN packages p ON p.id = ip.package_id WHERE ip.inventory_id = ?
                 ORDER BY p.ecosystem, p.name, p.version, ip.location"
            ))?;
            inv.packages = st
                .query_map([inv.id], |r| package_row(r, true))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(inv))
        })
        .await
    }

    async fn findings(&self, manifest_digest: &str) -> Result<Vec<FindingRow>> {
        let digest = manifest_digest.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT a.id, a.aliases, a.severity, a.score, a.summary,
                        p.id, p.ecosystem, p.name, p.version, p.purl, pv.fixed
                 FROM (SELECT DISTINCT ip.package_id FROM inventories i
                       CROSS JOIN inventory_packages ip ON ip.inventory_id = i.id
                       WHERE i.manifest_digest = ?) ip
                 JOIN packages p ON p.id = ip.package_id
                 JOIN package_vulns pv ON pv.package_id = p.id
                 JOIN advisories a ON a.id = pv.advisory_id AND a.withdrawn IS NULL
                 ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1
                     WHEN 'medium' THEN 2 WHEN 'low' THEN 3 ELSE 4 END,
                     a.id, p.ecosystem, p.name, p.version",
            )?;
            let rows = st.query_map([&digest], |r| {
                Ok(FindingRow {
                    advisory_id: r.get(0)?,
                    aliases: parse_aliases(&r.get::<_, String>(1)?),
                    severity: r.get(2)?,
                    score: r.get(3)?,
                    summary: r.get(4)?,
                    package_id: r.get(5)?,
                    ecosystem: r.get(6)?,
                    name: r.get(7)?,
                    version: r.get(8)?,
                    purl: r.get(9)?,
                    fixed: r.get(10)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn summaries(&self, manifest_digests: &[String]) -> Result<Vec<(String, SummaryRow)>> {
        let digests = manifest_digests.to_vec();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT i.status, i.scanned_at, s.critical, s.high, s.medium, s.low, s.unknown, s.db_version
                 FROM inventories i LEFT JOIN inventory_summary s ON s.inventory_id = i.id
                 WHERE i.manifest_digest = ?",
            )?;
            let mut out = Vec::new();
            for d in digests {
                let row = st
                    .query_row([&d], |r| {
                        let n = |i| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
                        Ok(SummaryRow {
                            status: r.get(0)?,
                            scanned_at_ms: r.get(1)?,
                            critical: n(2)?,
                            high: n(3)?,
                            medium: n(4)?,
                            low: n(5)?,
                            unknown: n(6)?,
                            db_version: r.get(7)?,
                        })
                    })
                    .optional()?;
                if let Some(s) = row {
                    out.push((d, s));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn vuln_change_counts(&self, db_version: i64) -> Result<(u64, u64)> {
        self.read(move |c| {
            let (added, removed): (i64, i64) = c
                .prepare_cached(
                    "SELECT COUNT(DISTINCT inventory_id) FILTER (WHERE change = 'added'),
                        COUNT(DISTINCT inventory_id) FILTER (WHERE change = 'removed')
                 FROM vuln_changes WHERE db_version = ?",
                )?
                .query_row([db_version], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((added as u64, removed as u64))
        })
        .await
    }

    async fn scan_stats(&self) -> Result<ScanStats> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT
                    COUNT(*) FILTER (WHERE i.status = 'scanned'),
                    COUNT(*) FILTER (WHERE i.status = 'failed'),
                    COUNT(*) FILTER (WHERE s.critical > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium = 0 AND s.low > 0),
                    COUNT(*) FILTER (WHERE s.critical = 0 AND s.high = 0 AND s.medium = 0 AND s.low = 0 AND s.unknown > 0)
                 FROM inventories i LEFT JOIN inventory_summary s ON s.inventory_id = i.id",
            )?;
            let n: [i64; 7] = st.query_row([], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?])
            })?;
            Ok(stats_from(n))
        })
        .await
    }

    async fn vuln_changes(&self, db_version: i64, limit: usize) -> Result<Vec<VulnChange>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT v.db_version, v.inventory_id, i.manifest_digest, v.advisory_id, v.change
                 FROM vuln_changes v JOIN inventories i ON i.id = v.inventory_id
                 WHERE v.db_version = ? ORDER BY i.manifest_digest, v.advisory_id LIMIT ?",
            )?;
            let rows = st.query_map(params![db_version, limit as i64], |r| {
                Ok(VulnChange {
                    db_version: r.get(0)?,
                    inventory_id: r.get(1)?,
                    manifest_digest: r.get(2)?,
                    advisory_id: r.get(3)?,
                    change: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn scan_policy(&self, repository: &str) -> Result<Option<StoredPolicy>> {
        let repository = repository.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at
                 FROM scan_policies WHERE repository = ?",
            )?
            .query_row([repository], policy_row)
            .optional()?)
        })
        .await
    }

    async fn scan_policies(&self) -> Result<Vec<StoredPolicy>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at
                 FROM scan_policies ORDER BY repository",
            )?;
            let rows = st.query_map([], policy_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_scan_policy(&self, repository: &str, policy: &ScanPolicy) -> Result<()> {
        if let Some(s) = &policy.block_severity {
            check_severity(s)?;
        }
        let (repository, p) = (repository.to_string(), policy.clone());
        self.write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO scan_policies
                     (repository, scan_on_push, block_severity, unscanned, attach_sbom, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    repository,
                    p.scan_on_push,
                    p.block_severity,
                    p.unscanned,
                    p.attach_sbom,
                    now_ms()
                ],
            )
            .map_err(|e| MetaError::Conflict(format!("scan policy refused: {e}")))?;
            Ok(())
        })
        .await
    }

    async fn delete_scan_policy(&self, repository: &str) -> Result<bool> {
        let repository = repository.to_string();
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM scan_policies WHERE repository = ?",
                [repository],
            )? > 0)
        })
        .await
    }

    async fn allowlist(&self, repository: &str) -> Result<Vec<AllowRow>> {
        let repository = repository.to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT repository, vuln_id, expires_at, reason, created_by, created_at
                 FROM scan_allowlist WHERE repository IN ('', ?) ORDER BY repository, vuln_id",
            )?;
            let rows = st.query_map([repository], |r| {
                Ok(AllowRow {
                    repository: r.get(0)?,
                    vuln_id: r.get(1)?,
                    expires_at_ms: r.get(2)?,
                    reason: r.get(3)?,
                    created_by: r.get(4)?,
                    created_at_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_allow(&self, entry: &AllowRow) -> Result<()> {
        let e = entry.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO scan_allowlist
                     (repository, vuln_id, expires_at, reason, created_by, created_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    e.repository,
                    e.vuln_id,
                    e.expires_at_ms,
                    e.reason,
                    e.created_by,
                    now_ms()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_allow(&self, repository: &str, vuln_id: &str) -> Result<bool> {
        let (repository, vuln_id) = (repository.to_string(), vuln_id.to_string());
        self.write(move |tx| {
            Ok(tx.execute(
                "DELETE FROM scan_allowlist WHERE repository = ? AND vuln_id = ?",
                params![repository, vuln_id],
            )? > 0)
        })
        .await
    }

    async fn delete_inventories_without_manifests(&self) -> Result<ScanGc> {
        self.write(|tx| {
            // `NOT IN` over the manifests' digests: SQLite reads them once into a
            // temporary index (manifests are keyed by repository first).
            let inventories = tx.execute(
                "DELETE FROM inventories WHERE manifest_digest NOT IN (SELECT digest FROM manifests)",
                [],
            )? as u64;
            let packages = tx.execute(
                "DELETE FROM packages WHERE NOT EXISTS
                     (SELECT 1 FROM inventory_packages ip WHERE ip.package_id = packages.id)",
                [],
            )? as u64;
            Ok(ScanGc {
                inventories,
                packages,
            })
        })
        .await
    }
}

/// `advisory_id, ecosystem, name, affected` as selected from `advisory_affected`.
fn affected_entry(r: &Row) -> rusqlite::Result<AffectedEntry> {
    Ok(AffectedEntry {
        advisory_id: r.get(0)?,
        ecosystem: r.get(1)?,
        name: r.get(2)?,
        affected_json: r.get(3)?,
    })
}

fn policy_row(r: &Row) -> rusqlite::Result<StoredPolicy> {
    Ok(StoredPolicy {
        repository: r.get(0)?,
        policy: ScanPolicy {
            scan_on_push: r.get(1)?,
            block_severity: r.get(2)?,
            unscanned: r.get(3)?,
            attach_sbom: r.get(4)?,
        },
        updated_at_ms: r.get(5)?,
    })
}
