-- Names sort in byte order ("C" collation), as the distribution spec's listings expect
-- and as SQLite does, whatever the database's default collation.

CREATE TABLE repositories (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL,
    payload       BYTEA NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repository_id   BIGINT NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    manifest_digest TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_manifest ON tags (repository_id, manifest_digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repository  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE access_tokens (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id),
    label        TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX access_tokens_by_user ON access_tokens (user_id);

CREATE TABLE orgs (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE org_members (
    org_id   BIGINT NOT NULL REFERENCES orgs(id),
    user_id  BIGINT NOT NULL REFERENCES users(id),
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE teams (
    id     BIGSERIAL PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    name   TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id BIGINT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id),
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE repository_settings (
    name       TEXT PRIMARY KEY,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    updated_at BIGINT NOT NULL
);

CREATE TABLE repository_grants (
    repository   TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'team')),
    subject_id   BIGINT NOT NULL,
    level        TEXT NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    PRIMARY KEY (repository, subject_kind, subject_id)
);

CREATE TABLE signing_keys (
    id         TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    details TEXT
);

CREATE TABLE replicas (
    id              TEXT PRIMARY KEY,
    address         TEXT NOT NULL,
    version         TEXT NOT NULL,
    schema_level    BIGINT NOT NULL,
    started_at      BIGINT NOT NULL,
    heartbeat_at    BIGINT NOT NULL,
    clock           BIGINT NOT NULL,
    disk_free       BIGINT NOT NULL,
    disk_total      BIGINT NOT NULL,
    memory_available BIGINT NOT NULL,
    heartbeat_interval BIGINT NOT NULL
);

-- Every backup `wharf backup` finished; the upgrade checks ask how recent the last is.
CREATE TABLE backups (
    id            BIGSERIAL PRIMARY KEY,
    finished_at   BIGINT NOT NULL,
    scope         TEXT NOT NULL,
    wharf_version TEXT NOT NULL,
    schema_level  BIGINT NOT NULL,
    location      TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    checksum      TEXT NOT NULL
);
