-- Schema level 3 (wharf 1.2.0): vulnerability scanning. Expand-only: new tables that a
-- 1.1.0 replica never reads, so it keeps serving until the upgrade is finalised.
-- Design: docs/scanning.md. Scan data is derived (from images and from the advisory
-- database) except the policies and the allowlist, which operators write.

-- Each import of the advisory database, whatever its outcome. At most one is
-- 'current': the one whose advisories are in `advisories`.
CREATE TABLE vulndb_versions (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,           -- a URL, or 'upload:<file name>', or 'file:<path>'
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL CHECK (status IN ('importing', 'current', 'superseded', 'failed')),
    records     INTEGER,
    ecosystems  TEXT,                    -- JSON: {"PyPI": 143, ...}
    validators  TEXT,                    -- JSON: each archive's ETag / Last-Modified
    error       TEXT
);
CREATE UNIQUE INDEX vulndb_one_current ON vulndb_versions (status) WHERE status = 'current';

-- The advisories of the current database version (OSV records).
CREATE TABLE advisories (
    id         TEXT PRIMARY KEY,
    modified   TEXT NOT NULL,
    withdrawn  TEXT,
    aliases    TEXT NOT NULL,            -- JSON array
    severity   TEXT NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'unknown')),
    score      REAL,
    summary    TEXT NOT NULL,
    db_version INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per affected package of an advisory: the OSV `affected` object as JSON,
-- looked up by (ecosystem, name) when packages are matched.
CREATE TABLE advisory_affected (
    advisory_id TEXT NOT NULL,
    ecosystem   TEXT NOT NULL,
    name        TEXT NOT NULL,
    affected    TEXT NOT NULL
);
CREATE INDEX advisory_affected_by_package ON advisory_affected (ecosystem, name);
CREATE INDEX advisory_affected_by_advisory ON advisory_affected (advisory_id);

-- An import in progress writes its advisories here, keyed by its version, and only
-- its commit moves them into `advisories` / `advisory_affected` (one transaction): a
-- failed or abandoned import leaves the current advisories untouched, and memory stays
-- bounded however large the database is.
CREATE TABLE advisories_staging (
    db_version INTEGER NOT NULL,
    id         TEXT NOT NULL,
    modified   TEXT NOT NULL,
    withdrawn  TEXT,
    aliases    TEXT NOT NULL,
    severity   TEXT NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low', 'unknown')),
    score      REAL,
    summary    TEXT NOT NULL,
    PRIMARY KEY (db_version, id)
) WITHOUT ROWID;

CREATE TABLE advisory_affected_staging (
    db_version  INTEGER NOT NULL,
    advisory_id TEXT NOT NULL,
    ecosystem   TEXT NOT NULL,
    name        TEXT NOT NULL,
    affected    TEXT NOT NULL
);
CREATE INDEX advisory_affected_staging_by_advisory ON advisory_affected_staging (db_version, advisory_id);

-- One inventory per image manifest digest (content-addressed: shared by every
-- repository that holds the image).
CREATE TABLE inventories (
    id              INTEGER PRIMARY KEY,
    manifest_digest TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL CHECK (status IN ('scanned', 'failed')),
    os              TEXT,                -- JSON: id, version_id, pretty_name, ecosystem
    scanned_at      INTEGER NOT NULL,
    scanner_version TEXT NOT NULL,
    error           TEXT,                -- why a failed scan failed
    notes           TEXT NOT NULL DEFAULT '[]', -- JSON array: what the scanner skipped
    sbom_digest     TEXT
);

-- The distinct packages of the whole registry: matched once each, whatever the number
-- of images that contain them.
CREATE TABLE packages (
    id            INTEGER PRIMARY KEY,
    ecosystem     TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    match_name    TEXT NOT NULL,
    match_version TEXT NOT NULL,
    purl          TEXT NOT NULL,
    UNIQUE (ecosystem, name, version, match_name, match_version)
);

CREATE TABLE inventory_packages (
    inventory_id INTEGER NOT NULL REFERENCES inventories(id) ON DELETE CASCADE,
    package_id   INTEGER NOT NULL REFERENCES packages(id),
    location     TEXT NOT NULL,
    PRIMARY KEY (inventory_id, package_id, location)
) WITHOUT ROWID;
CREATE INDEX inventory_packages_by_package ON inventory_packages (package_id, inventory_id);

-- Matches per distinct package, kept up to date by re-matching on every database change.
CREATE TABLE package_vulns (
    package_id    INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
    advisory_id   TEXT NOT NULL,
    fixed         TEXT,
    first_seen_db INTEGER NOT NULL,
    PRIMARY KEY (package_id, advisory_id)
) WITHOUT ROWID;
CREATE INDEX package_vulns_by_advisory ON package_vulns (advisory_id);

-- Severity counts per inventory, for lists and pull policies.
CREATE TABLE inventory_summary (
    inventory_id INTEGER PRIMARY KEY REFERENCES inventories(id) ON DELETE CASCADE,
    critical     INTEGER NOT NULL,
    high         INTEGER NOT NULL,
    medium       INTEGER NOT NULL,
    low          INTEGER NOT NULL,
    unknown      INTEGER NOT NULL,
    db_version   INTEGER NOT NULL
);

-- What each database change did to stored images: "newly affected images".
CREATE TABLE vuln_changes (
    db_version   INTEGER NOT NULL,
    inventory_id INTEGER NOT NULL REFERENCES inventories(id) ON DELETE CASCADE,
    advisory_id  TEXT NOT NULL,
    change       TEXT NOT NULL CHECK (change IN ('added', 'removed')),
    PRIMARY KEY (db_version, inventory_id, advisory_id)
) WITHOUT ROWID;
-- For the cascade when an inventory is deleted (rescans, GC).
CREATE INDEX vuln_changes_by_inventory ON vuln_changes (inventory_id);

-- Pull and scan policies by repository name ('' is the registry's default), kept by
-- name like repository_settings so they can be set before the first push.
CREATE TABLE scan_policies (
    repository     TEXT PRIMARY KEY,
    scan_on_push   INTEGER NOT NULL,
    block_severity TEXT CHECK (block_severity IN ('critical', 'high', 'medium', 'low', 'unknown')),
    unscanned      TEXT NOT NULL CHECK (unscanned IN ('allow', 'refuse')),
    attach_sbom    INTEGER NOT NULL DEFAULT 0,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Vulnerabilities a policy lets through, by advisory id or alias ('' repository:
-- registry-wide), each until it expires.
CREATE TABLE scan_allowlist (
    repository TEXT NOT NULL,
    vuln_id    TEXT NOT NULL,
    expires_at INTEGER,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repository, vuln_id)
) WITHOUT ROWID;

-- Workers take scans after every other kind of job: scan on push can queue thousands,
-- and a garbage collection or an upgrade's migration must not wait behind them.
CREATE INDEX jobs_waiting_scans_last ON jobs (status, (action = 'scan'), id);

-- Content caches: nodes near distant users that the registry redirects blob
-- downloads to. Registered by an administrator; a cache proves who it is with its
-- token (only the token's SHA-256 is kept) and reports itself on every heartbeat.
CREATE TABLE content_caches (
    name         TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    region       TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    -- The last heartbeat: when (store clock) and what it said (JSON), if any.
    heartbeat_at INTEGER,
    report       TEXT
) WITHOUT ROWID;

-- Which cache a user, or the members of a team, are redirected to ('user' or
-- 'team' and the id). A user's own choice wins over their teams'.
CREATE TABLE content_cache_choices (
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'team')),
    subject_id   INTEGER NOT NULL,
    cache        TEXT NOT NULL REFERENCES content_caches(name) ON DELETE CASCADE,
    PRIMARY KEY (subject_kind, subject_id)
) WITHOUT ROWID;

-- Pull-through proxy repositories (issue 16): a repository-name prefix served from
-- upstream registries, tried in order (`upstreams` is a JSON array of URLs).
CREATE TABLE proxies (
    prefix          TEXT PRIMARY KEY,
    upstreams       TEXT NOT NULL,
    username        TEXT,
    password        TEXT,
    revalidate_secs INTEGER NOT NULL,
    max_bytes       INTEGER,
    max_idle_days   INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;
-- When each proxied tag was last revalidated against the upstream, and to what.
CREATE TABLE proxy_tags (
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    checked_at INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
) WITHOUT ROWID;
-- Each manifest a proxy stored: its size with its blobs and its last use (retention).
CREATE TABLE proxy_manifests (
    repository   TEXT NOT NULL,
    digest       TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    bytes        INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
CREATE INDEX proxy_manifests_by_use ON proxy_manifests (prefix, last_used_at);

-- What a list of tags shows of each manifest (size and platforms, crates/oci's
-- summary), written with the manifest from 1.2.0 on so that a page of tags reads no
-- blobs. For the manifests older releases stored, the background migration
-- `manifestsummaries` fills it in after the upgrade is finalised. `platforms` is NULL
-- when they could not be told (an image configuration missing from the blob store).
-- No foreign key to `manifests`: one would make this expand (and its undo, which a
-- rollback runs while 1.2.0 replicas push) lock that busy table, and the undo deadlock
-- with pushes on PostgreSQL. A manifest's delete removes its summary in the same
-- transaction; what 1.1.0 replicas delete during the upgrade, `manifestsummaries`
-- removes afterwards.
CREATE TABLE manifest_summaries (
    repository_id INTEGER NOT NULL,
    digest        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    platforms     TEXT,
    PRIMARY KEY (repository_id, digest)
);
