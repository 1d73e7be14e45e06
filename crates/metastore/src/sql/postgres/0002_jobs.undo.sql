-- Undoes schema level 2 before it is finalised (`wharf upgrade rollback`): what it added,
-- and what 1.1.0 replicas wrote into it, goes; nothing 1.0.0 reads is touched.
DROP TABLE IF EXISTS job_logs;
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS workers;
DROP TABLE IF EXISTS crons;
DROP TABLE IF EXISTS manifest_refs;
DROP INDEX IF EXISTS manifests_without_refs;
ALTER TABLE manifests DROP COLUMN IF EXISTS refs_recorded;
