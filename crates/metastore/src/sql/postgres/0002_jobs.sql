-- Schema level 2 (wharf 1.1.0): the job system. Expand-only: nothing a 1.0.0 replica
-- reads or writes changes.

CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    action       TEXT NOT NULL,
    params       TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN
                   ('waiting', 'running', 'done', 'error', 'cancel_request', 'cancelled', 'worker_dead')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    worker_id    TEXT,
    cron         TEXT,
    deadline     BIGINT,
    not_before   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    heartbeat_at BIGINT,
    finished_at  BIGINT,
    progress     TEXT,
    last_error   TEXT,
    log_bytes    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_status ON jobs (status, id);
CREATE UNIQUE INDEX jobs_one_running_per_action ON jobs (action)
    WHERE status IN ('running', 'cancel_request');

CREATE TABLE job_logs (
    job_id  BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    line    TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    actions      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    job_id       BIGINT
);

CREATE TABLE crons (
    name            TEXT PRIMARY KEY,
    action          TEXT NOT NULL,
    params          TEXT NOT NULL DEFAULT '{}',
    schedule        TEXT NOT NULL,
    run_for_minutes BIGINT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    next_run_at     BIGINT NOT NULL,
    last_job_id     BIGINT,
    updated_at      BIGINT NOT NULL
);

-- Garbage-collection bookkeeping: what each manifest refers to, written with the
-- manifest from 1.1.0 on. Manifests stored before have refs_recorded = FALSE until the
-- metadatastoremigration job fills their references in; GC waits for it.
CREATE TABLE manifest_refs (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL,
    ref_digest      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, ref_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_refs_by_ref ON manifest_refs (repository_id, ref_digest);
ALTER TABLE manifests ADD COLUMN refs_recorded BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX manifests_without_refs ON manifests (repository_id, digest) WHERE NOT refs_recorded;
