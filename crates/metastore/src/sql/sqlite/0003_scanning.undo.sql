-- Undoes schema level 3 before it is finalised (`wharf upgrade rollback`): the scanning
-- tables go, with what 1.2.0 replicas wrote into them; nothing 1.1.0 reads is touched.
DROP TABLE IF EXISTS manifest_summaries;
DROP TABLE IF EXISTS content_cache_choices;
DROP TABLE IF EXISTS content_caches;
DROP INDEX IF EXISTS jobs_waiting_scans_last;
DROP TABLE IF EXISTS proxy_manifests;
DROP TABLE IF EXISTS proxy_tags;
DROP TABLE IF EXISTS proxies;
DROP TABLE IF EXISTS scan_allowlist;
DROP TABLE IF EXISTS scan_policies;
DROP TABLE IF EXISTS vuln_changes;
DROP TABLE IF EXISTS inventory_summary;
DROP TABLE IF EXISTS package_vulns;
DROP TABLE IF EXISTS inventory_packages;
DROP TABLE IF EXISTS packages;
DROP TABLE IF EXISTS inventories;
DROP TABLE IF EXISTS advisory_affected_staging;
DROP TABLE IF EXISTS advisories_staging;
DROP TABLE IF EXISTS advisory_affected;
DROP TABLE IF EXISTS advisories;
DROP TABLE IF EXISTS vulndb_versions;
