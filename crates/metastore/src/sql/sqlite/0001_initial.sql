CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Blobs whose bytes are in the blob store.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Which repositories may use which blobs (pushed there, or mounted).
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id INTEGER NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    payload       BLOB NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repository_id   INTEGER NOT NULL,
    name            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_by_manifest ON tags (repository_id, manifest_digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repository  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Accounts and access control -------------------------------------------------

-- Users and organisations share one namespace: a repository's first path component
-- names its owner, which is a user or an organisation.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

CREATE TABLE access_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    label        TEXT NOT NULL,
    -- SHA-256 of the secret: tokens are random and long, so a fast hash is enough and
    -- lets a replica find a token by its hash.
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX access_tokens_by_user ON access_tokens (user_id);

CREATE TABLE orgs (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE org_members (
    org_id   INTEGER NOT NULL REFERENCES orgs(id),
    user_id  INTEGER NOT NULL REFERENCES users(id),
    is_admin INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;

CREATE TABLE teams (
    id     INTEGER PRIMARY KEY,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    name   TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id INTEGER NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (team_id, user_id)
) WITHOUT ROWID;

-- Visibility and grants are kept by repository name, so they can be set before the
-- first push creates the repository.
CREATE TABLE repository_settings (
    name       TEXT PRIMARY KEY,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE repository_grants (
    repository   TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'team')),
    subject_id   INTEGER NOT NULL,
    level        TEXT NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    PRIMARY KEY (repository, subject_kind, subject_id)
) WITHOUT ROWID;

-- Keys that sign registry bearer tokens; shared by every replica through this store.
CREATE TABLE signing_keys (
    id         TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    details TEXT
);

-- Replicas ------------------------------------------------------------------------

-- Every serving process, as it last reported itself. heartbeat_at is the store's own
-- clock, the reference that replicas' clocks are compared with.
CREATE TABLE replicas (
    id              TEXT PRIMARY KEY,
    address         TEXT NOT NULL,
    version         TEXT NOT NULL,
    schema_level    INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    heartbeat_at    INTEGER NOT NULL,
    clock           INTEGER NOT NULL,
    disk_free       INTEGER NOT NULL,
    disk_total      INTEGER NOT NULL,
    memory_available INTEGER NOT NULL,
    heartbeat_interval INTEGER NOT NULL
) WITHOUT ROWID;

-- Backups ---------------------------------------------------------------------------

-- Every backup `wharf backup` finished; the upgrade checks ask how recent the last is.
CREATE TABLE backups (
    id            INTEGER PRIMARY KEY,
    finished_at   INTEGER NOT NULL,
    scope         TEXT NOT NULL,
    wharf_version TEXT NOT NULL,
    schema_level  INTEGER NOT NULL,
    location      TEXT NOT NULL,
    bytes         INTEGER NOT NULL,
    checksum      TEXT NOT NULL
);
