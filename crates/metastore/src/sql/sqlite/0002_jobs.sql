-- Schema level 2 (wharf 1.1.0): the job system. Expand-only: nothing a 1.0.0 replica
-- reads or writes changes.

-- The cluster-wide job queue. A job is claimed by one worker at a time; its heartbeat
-- tells the others it is alive. At most one job per action runs at once.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    action       TEXT NOT NULL,
    params       TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN
                   ('waiting', 'running', 'done', 'error', 'cancel_request', 'cancelled', 'worker_dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    worker_id    TEXT,
    cron         TEXT,
    deadline     INTEGER,
    not_before   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    heartbeat_at INTEGER,
    finished_at  INTEGER,
    progress     TEXT,
    last_error   TEXT,
    log_bytes    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE UNIQUE INDEX jobs_one_running_per_action ON jobs (action)
    WHERE status IN ('running', 'cancel_request');

CREATE TABLE job_logs (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- One worker per serving replica.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    actions      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    job_id       INTEGER
) WITHOUT ROWID;

-- Schedules: a job queued at each time the cron expression names.
CREATE TABLE crons (
    name            TEXT PRIMARY KEY,
    action          TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    schedule        TEXT NOT NULL,
    run_for_minutes INTEGER,
    enabled         INTEGER NOT NULL DEFAULT 1,
    next_run_at     INTEGER NOT NULL,
    last_job_id     INTEGER,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

-- Garbage-collection bookkeeping: what each manifest refers to, written with the
-- manifest from 1.1.0 on. Manifests stored before have refs_recorded = 0 until the
-- metadatastoremigration job fills their references in; GC waits for it.
CREATE TABLE manifest_refs (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    ref_digest      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, ref_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_refs_by_ref ON manifest_refs (repository_id, ref_digest);
ALTER TABLE manifests ADD COLUMN refs_recorded INTEGER NOT NULL DEFAULT 0;
CREATE INDEX manifests_without_refs ON manifests (repository_id, digest) WHERE refs_recorded = 0;
