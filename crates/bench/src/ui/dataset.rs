//! The dataset of `wharf-bench ui`: many repositories in many namespaces, one large
//! repository, accounts with a few visible repositories, and finished jobs with logs.
//!
//! The repositories, blobs, manifests, references and tags are a [`Dataset`] written by
//! the GC benchmark's bulk loaders ([`fixture::load_sqlite`], [`fixture::load_postgres`]);
//! the rows only the web UI reads (users, organisations, teams, visibility, grants, jobs
//! and their logs) are written here afterwards, with the same kind of bulk SQL.
//! Every image's configuration blob is a file in the blob directory, so the tag and image
//! pages read real configurations; layer bytes are not written (no page reads them).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use wharf_oci::Digest;

use crate::gc::fixture::{BlobRow, Dataset, ManifestRow, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE};
use crate::registry::OCI_MANIFEST;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// What the referrers (signatures) in the large repository are.
pub const SIGNATURE_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIGNATURE_LAYER: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// Repositories per namespace (each namespace is an organisation).
pub const REPOS_PER_NAMESPACE: usize = 100;
/// Part of the names of about one repository in 331: what the search looks for.
pub const SEARCH_HIT: &str = "payments";
/// Part of no name.
pub const SEARCH_MISS: &str = "no-such-name";
/// The large repository.
pub const BIG_REPO: &str = "big/images";
/// The user who is not an administrator, and whose namespace this is.
pub const VIEWER: &str = "viewer";
pub const ADMIN: &str = "admin";
const KINDS: [&str; 7] = ["api", "web", "worker", "db", "cache", "batch", "gateway"];
/// Every hundredth tag of the large repository (the 50th, the 150th, …) is an index of
/// two images whose own manifests are untagged; the image at every hundredth tag (the
/// 0th, the 100th, …) has a signature.
pub const INDEX_EVERY: usize = 100;
const SIGNED_EVERY: usize = 100;
/// Repositories the anonymous visitor may see (public ones).
const PUBLIC_REPOS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Repositories in all, the large one and the viewer's included.
    pub repos: usize,
    /// Tags of the large repository.
    pub big_tags: usize,
    /// Finished jobs.
    pub jobs: usize,
}

/// What the pages are asked for and what they must show.
pub struct UiDataset {
    pub shape: Shape,
    pub ds: Dataset,
    pub namespaces: usize,
    /// Repositories whose names contain [`SEARCH_HIT`].
    pub search_hits: usize,
    /// A name in the middle of the list, as a cursor.
    pub middle_repo: String,
    /// A namespace (with its slash) and how many repositories it holds.
    pub namespace: (String, usize),
    /// A tag in the middle of the large repository, as a cursor.
    pub middle_tag: String,
    /// A signed image manifest of the large repository, and its tag.
    pub image: (Digest, String),
    /// Public repositories (the anonymous visitor sees these).
    pub public: Vec<String>,
    /// Repositories the viewer sees: their namespace, a grant to them, a grant to their
    /// team, and the public ones.
    pub viewer_sees: BTreeSet<String>,
    pub user_grants: Vec<String>,
    /// The organisation whose team `readers` the viewer is in, and the team's grants.
    pub viewer_org: String,
    pub team_grants: Vec<String>,
    /// Configuration files written to the blob directory.
    pub config_files: usize,
    /// The id of the job with the long log, and its lines.
    pub long_job: (i64, usize),
    /// Log lines of every other job.
    pub log_lines: usize,
}

/// One image: its configuration (written out), two layers (rows only), its manifest.
struct ImageParts {
    digest: Digest,
    size: u64,
}

struct Builder<'a> {
    ds: Dataset,
    k: u64,
    seed: u64,
    files: usize,
    write: &'a mut dyn FnMut(&Digest, &[u8]) -> Result<()>,
}

impl Builder<'_> {
    fn blob(&mut self, repo: usize, digest: Digest, size: u64) {
        self.ds.blobs.push(BlobRow { digest, size, repo });
    }

    /// An image manifest in `repo`, with a configuration for `arch`.
    fn image(
        &mut self,
        repo: usize,
        arch: &str,
        tag: Option<String>,
        at_ms: i64,
    ) -> Result<ImageParts> {
        self.k += 1;
        let k = self.k;
        let name = self.ds.repos[repo].clone();
        let layers: Vec<(Digest, u64)> = (0..2u64)
            .map(|j| {
                let d = Digest::sha256_of(format!("layer {} {k} {j}", self.seed).as_bytes());
                let size = if j == 0 {
                    20_000_000 + (k * 7919) % 5_000_000
                } else {
                    1_000_000 + (k * 104_729) % 900_000
                };
                (d, size)
            })
            .collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": "2026-11-02T10:04:05Z",
            "config": {
                "Env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    format!("APP_BUILD={k}"),
                ],
                "Entrypoint": ["/usr/local/bin/app"],
                "Cmd": ["serve", "--port", "8080"],
                "WorkingDir": "/srv/app",
                "User": "app",
                "Labels": {
                    "org.opencontainers.image.source": format!("https://git.example.com/{name}"),
                    "org.opencontainers.image.revision": format!("{:040x}", k * 0x9e37_79b9),
                },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>(),
            },
            "history": [
                { "created": "2026-10-30T08:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:4b03b5f551e3fbdf4 in / " },
                { "created": "2026-10-30T08:00:00Z", "created_by": "/bin/sh -c #(nop)  CMD [\"bash\"]", "empty_layer": true },
                { "created": "2026-11-02T10:04:05Z", "created_by": "COPY app /usr/local/bin/app # buildkit" },
                { "created": "2026-11-02T10:04:05Z", "created_by": format!("ENV APP_BUILD={k}"), "empty_layer": true },
                { "created": "2026-11-02T10:04:05Z", "created_by": "ENTRYPOINT [\"/usr/local/bin/app\"]", "empty_layer": true },
            ],
        });
        let config = serde_json::to_vec(&config).expect("JSON value serializes");
        let config_digest = Digest::sha256_of(&config);
        (self.write)(&config_digest, &config)?;
        self.files += 1;
        self.blob(repo, config_digest.clone(), config.len() as u64);
        for (d, s) in &layers {
            self.blob(repo, d.clone(), *s);
        }
        let payload = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": layers.iter().map(|(d, s)| serde_json::json!({
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": d.to_string(),
                "size": s,
            })).collect::<Vec<_>>(),
        }))
        .expect("JSON value serializes");
        let parts = ImageParts {
            digest: Digest::sha256_of(&payload),
            size: payload.len() as u64,
        };
        self.ds.manifests.push(ManifestRow {
            repo,
            digest: parts.digest.clone(),
            media_type: OCI_MANIFEST,
            payload,
            refs: std::iter::once(config_digest)
                .chain(layers.into_iter().map(|(d, _)| d))
                .collect(),
            manifest_refs: Vec::new(),
            artifact_type: Some(CONFIG_MEDIA_TYPE.to_string()),
            subject: None,
            tag,
            at_ms,
        });
        Ok(parts)
    }

    /// A tagged index of an amd64 and an arm64 image (untagged).
    fn index(&mut self, repo: usize, tag: String, at_ms: i64) -> Result<()> {
        let children = [
            self.image(repo, "amd64", None, at_ms)?,
            self.image(repo, "arm64", None, at_ms)?,
        ];
        let payload = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().zip(["amd64", "arm64"]).map(|(c, arch)| serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": c.digest.to_string(),
                "size": c.size,
                "platform": { "architecture": arch, "os": "linux" },
            })).collect::<Vec<_>>(),
        }))
        .expect("JSON value serializes");
        self.ds.manifests.push(ManifestRow {
            repo,
            digest: Digest::sha256_of(&payload),
            media_type: OCI_INDEX,
            payload,
            refs: Vec::new(),
            manifest_refs: children.into_iter().map(|c| c.digest).collect(),
            artifact_type: None,
            subject: None,
            tag: Some(tag),
            at_ms,
        });
        Ok(())
    }

    /// An untagged signature of `subject`, whose empty configuration `empty` the
    /// repository links already.
    fn signature(&mut self, repo: usize, subject: &ImageParts, empty: &Digest, at_ms: i64) {
        self.k += 1;
        let sig = format!("signature {} {}", self.seed, self.k);
        let sig_digest = Digest::sha256_of(sig.as_bytes());
        self.blob(repo, sig_digest.clone(), sig.len() as u64);
        let payload = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGNATURE_TYPE,
            "config": { "mediaType": EMPTY_CONFIG, "digest": empty.to_string(), "size": 2 },
            "layers": [{ "mediaType": SIGNATURE_LAYER, "digest": sig_digest.to_string(), "size": sig.len() }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject.digest.to_string(), "size": subject.size },
        }))
        .expect("JSON value serializes");
        self.ds.manifests.push(ManifestRow {
            repo,
            digest: Digest::sha256_of(&payload),
            media_type: OCI_MANIFEST,
            payload,
            refs: vec![empty.clone(), sig_digest],
            manifest_refs: Vec::new(),
            artifact_type: Some(SIGNATURE_TYPE.to_string()),
            subject: Some(subject.digest.clone()),
            tag: None,
            at_ms,
        });
    }
}

/// The name of ordinary repository `i` (0-based): namespace `team-NNNN` (100 to a
/// namespace), a kind, and `i`; about one in 331 has "payments" in its name.
fn repo_name(i: usize) -> String {
    let kind = KINDS[i % KINDS.len()];
    if i % 331 == 17 {
        format!(
            "team-{:04}/{SEARCH_HIT}-{kind}-{i:06}",
            i / REPOS_PER_NAMESPACE
        )
    } else {
        format!("team-{:04}/{kind}-{i:06}", i / REPOS_PER_NAMESPACE)
    }
}

/// Builds the dataset; `write_config` receives every image configuration's bytes (to be
/// put in the blob directory).
pub fn build(
    shape: Shape,
    seed: u64,
    write_config: &mut dyn FnMut(&Digest, &[u8]) -> Result<()>,
) -> Result<UiDataset> {
    // The large repository, three of the viewer's, and at least three namespaces.
    let Some(regular) = shape
        .repos
        .checked_sub(4)
        .filter(|r| *r >= 3 * REPOS_PER_NAMESPACE)
    else {
        bail!(
            "at least {} repositories are needed",
            3 * REPOS_PER_NAMESPACE + 4
        );
    };
    if shape.big_tags < INDEX_EVERY {
        bail!("the large repository needs at least {INDEX_EVERY} tags");
    }
    let mut ds = Dataset::empty(0, "ui", true);
    ds.repos.push(BIG_REPO.to_string());
    ds.repos.extend((0..regular).map(repo_name));
    ds.repos
        .extend((1..=3).map(|n| format!("{VIEWER}/app-{n}")));
    let base = ds.created_at_ms - 30 * 24 * 3600 * 1000;
    let mut b = Builder {
        ds,
        k: 0,
        seed,
        files: 0,
        write: write_config,
    };
    // Ordinary repositories (and the viewer's): one tagged image each, pushed ten
    // seconds apart.
    for r in 1..b.ds.repos.len() {
        b.image(r, "amd64", Some("latest".into()), base + r as i64 * 10_000)?;
    }
    // The large repository: images, every hundredth tag an index, the image at every
    // hundredth tag signed; pushed a second apart, after the others.
    let empty = Digest::sha256_of(b"{}");
    b.blob(0, empty.clone(), 2);
    let big_base = base + b.ds.repos.len() as i64 * 10_000;
    let mut image = None;
    let image_at = (shape.big_tags / 2) / INDEX_EVERY * INDEX_EVERY;
    for t in 0..shape.big_tags {
        let (tag, at) = (format!("v{t:05}"), big_base + t as i64 * 1000);
        if t % INDEX_EVERY == INDEX_EVERY / 2 {
            b.index(0, tag, at)?;
            continue;
        }
        let parts = b.image(0, "amd64", Some(tag.clone()), at)?;
        if t % SIGNED_EVERY == 0 {
            b.signature(0, &parts, &empty, at + 500);
        }
        if t == image_at {
            image = Some((parts.digest, tag));
        }
    }
    let files = b.files;
    let ds = b.ds;

    let search_hits = ds.repos.iter().filter(|n| n.contains(SEARCH_HIT)).count();
    let step = regular / PUBLIC_REPOS;
    let public: Vec<String> = (0..PUBLIC_REPOS).map(|i| repo_name(i * step + 5)).collect();
    let user_grants = vec![repo_name(regular / 2 + 3), repo_name(regular / 2 + 7)];
    let viewer_org = "team-0002".to_string();
    let team_grants = vec![repo_name(210), repo_name(250)];
    let mut viewer_sees: BTreeSet<String> = public.iter().cloned().collect();
    viewer_sees.extend(user_grants.iter().cloned());
    viewer_sees.extend(team_grants.iter().cloned());
    viewer_sees.extend(
        ds.repos
            .iter()
            .filter(|n| n.starts_with("viewer/"))
            .cloned(),
    );
    let namespaces = regular.div_ceil(REPOS_PER_NAMESPACE);
    let ns = namespaces / 2;
    Ok(UiDataset {
        shape,
        namespaces,
        search_hits,
        middle_repo: repo_name(regular / 2),
        namespace: (
            format!("team-{ns:04}/"),
            ds.repos
                .iter()
                .filter(|n| n.starts_with(&format!("team-{ns:04}/")))
                .count(),
        ),
        middle_tag: format!("v{:05}", shape.big_tags / 2),
        image: image.context("no image in the middle of the large repository")?,
        public,
        viewer_sees,
        user_grants,
        viewer_org,
        team_grants,
        config_files: files,
        long_job: (shape.jobs as i64, LONG_LOG),
        log_lines: LOG_LINES,
        ds,
    })
}

/// Log lines of every job, and of the newest one.
const LOG_LINES: usize = 20;
const LONG_LOG: usize = 1_000;

/// A finished job and its log.
struct JobRow {
    id: i64,
    action: &'static str,
    status: &'static str,
    created: i64,
    finished: i64,
    progress: String,
    last_error: Option<String>,
    lines: Vec<String>,
}

fn jobs(u: &UiDataset) -> Vec<JobRow> {
    let n = u.shape.jobs;
    let end = u.ds.created_at_ms;
    (1..=n)
        .map(|i| {
            let created = end - (n - i) as i64 * 3_600_000;
            let action = if i % 3 == 0 { "metadatastoremigration" } else { "gc" };
            let error = i % 10 == 7;
            let lines = if i == n { LONG_LOG } else { LOG_LINES };
            JobRow {
                id: i as i64,
                action,
                status: if error { "error" } else { "done" },
                created,
                finished: created + 20_000,
                progress: format!("done: freed 0 manifests, {i} links, {i} blobs, {} bytes", i * 4096),
                last_error: error.then(|| "the blob store did not answer within 30 s (attempt 3 of 3)".to_string()),
                lines: (0..lines)
                    .map(|l| format!(
                        "batch {l}: checked 500 links, {} unreferenced; freed {} blobs ({} bytes) in {} ms",
                        l % 13, l % 7, (l % 7) * 3917, 40 + l % 60
                    ))
                    .collect(),
            }
        })
        .collect()
}

/// The web UI's own rows, after [`fixture::load_sqlite`]: users `admin` (administrator)
/// and `viewer` with these password hashes, an organisation per namespace, the viewer a
/// plain member of one whose team `readers` has read grants, read grants to the viewer,
/// public repositories, and the jobs with their logs.
pub fn load_sqlite_extras(path: &Path, u: &UiDataset, hashes: (&str, &str)) -> Result<()> {
    use rusqlite::params;
    let mut c =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.pragma_update(None, "synchronous", "OFF")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    let tx = c.transaction()?;
    let ts = u.ds.created_at_ms;
    let mut user = tx.prepare(
        "INSERT INTO users (name, password_hash, is_admin, disabled, created_at) VALUES (?, ?, ?, 0, ?)",
    )?;
    user.execute(params![ADMIN, hashes.0, true, ts])?;
    user.execute(params![VIEWER, hashes.1, false, ts])?;
    let viewer = tx.last_insert_rowid();
    drop(user);
    {
        let mut org = tx.prepare("INSERT INTO orgs (name, created_at) VALUES (?, ?)")?;
        for n in 0..u.namespaces {
            org.execute(params![format!("team-{n:04}"), ts])?;
        }
    }
    let org: i64 = tx.query_row("SELECT id FROM orgs WHERE name = ?", [&u.viewer_org], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO org_members (org_id, user_id, is_admin) VALUES (?, ?, 0)",
        params![org, viewer],
    )?;
    tx.execute(
        "INSERT INTO teams (org_id, name) VALUES (?, 'readers')",
        params![org],
    )?;
    let team = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO team_members (team_id, user_id) VALUES (?, ?)",
        params![team, viewer],
    )?;
    {
        let mut grant = tx.prepare(
            "INSERT INTO repository_grants (repository, subject_kind, subject_id, level) VALUES (?, ?, ?, 'read')",
        )?;
        for r in &u.user_grants {
            grant.execute(params![r, "user", viewer])?;
        }
        for r in &u.team_grants {
            grant.execute(params![r, "team", team])?;
        }
        let mut public = tx.prepare(
            "INSERT INTO repository_settings (name, visibility, updated_at) VALUES (?, 'public', ?)",
        )?;
        for r in &u.public {
            public.execute(params![r, ts])?;
        }
        let mut job = tx.prepare(
            "INSERT INTO jobs (id, action, params, status, attempts, max_attempts, worker_id, not_before,
                               created_at, started_at, heartbeat_at, finished_at, progress, last_error, log_bytes)
             VALUES (?, ?, '{}', ?, ?, 3, 'bench-worker', ?, ?, ?, ?, ?, ?, ?, ?)",
        )?;
        let mut log = tx.prepare(
            "INSERT INTO job_logs (job_id, seq, at, attempt, line) VALUES (?, ?, ?, ?, ?)",
        )?;
        for j in jobs(u) {
            let attempts = if j.last_error.is_some() { 3 } else { 1 };
            let bytes: usize = j.lines.iter().map(|l| l.len() + 1).sum();
            job.execute(params![
                j.id,
                j.action,
                j.status,
                attempts,
                j.created,
                j.created,
                j.created + 1000,
                j.finished,
                j.finished,
                j.progress,
                j.last_error,
                bytes as i64
            ])?;
            for (seq, line) in j.lines.iter().enumerate() {
                log.execute(params![
                    j.id,
                    seq as i64 + 1,
                    j.created + 1000 + seq as i64 * 10,
                    attempts,
                    line
                ])?;
            }
        }
    }
    tx.commit()?;
    c.execute_batch("ANALYZE")?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// As [`load_sqlite_extras`], on PostgreSQL (after [`fixture::load_postgres`]); then
/// `VACUUM ANALYZE` again.
pub async fn load_postgres_extras(
    pool: &sqlx::PgPool,
    u: &UiDataset,
    hashes: (&str, &str),
) -> Result<()> {
    let ts = u.ds.created_at_ms;
    let mut tx = pool.begin().await?;
    let user_id = |name: &'static str, hash: String, admin: bool| {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO users (name, password_hash, is_admin, disabled, created_at)
             VALUES ($1, $2, $3, FALSE, $4) RETURNING id",
        )
        .bind(name)
        .bind(hash)
        .bind(admin)
        .bind(ts)
    };
    user_id(ADMIN, hashes.0.to_string(), true)
        .fetch_one(&mut *tx)
        .await?;
    let viewer = user_id(VIEWER, hashes.1.to_string(), false)
        .fetch_one(&mut *tx)
        .await?;
    let orgs: Vec<String> = (0..u.namespaces).map(|n| format!("team-{n:04}")).collect();
    sqlx::query("INSERT INTO orgs (name, created_at) SELECT n, $2 FROM UNNEST($1::TEXT[]) AS u(n)")
        .bind(&orgs)
        .bind(ts)
        .execute(&mut *tx)
        .await?;
    let org: i64 = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
        .bind(&u.viewer_org)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO org_members (org_id, user_id, is_admin) VALUES ($1, $2, FALSE)")
        .bind(org)
        .bind(viewer)
        .execute(&mut *tx)
        .await?;
    let team: i64 =
        sqlx::query_scalar("INSERT INTO teams (org_id, name) VALUES ($1, 'readers') RETURNING id")
            .bind(org)
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
        .bind(team)
        .bind(viewer)
        .execute(&mut *tx)
        .await?;
    for (repos, kind, id) in [
        (&u.user_grants, "user", viewer),
        (&u.team_grants, "team", team),
    ] {
        sqlx::query(
            "INSERT INTO repository_grants (repository, subject_kind, subject_id, level)
             SELECT r, $2, $3, 'read' FROM UNNEST($1::TEXT[]) AS u(r)",
        )
        .bind(repos)
        .bind(kind)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO repository_settings (name, visibility, updated_at)
         SELECT r, 'public', $2 FROM UNNEST($1::TEXT[]) AS u(r)",
    )
    .bind(&u.public)
    .bind(ts)
    .execute(&mut *tx)
    .await?;
    for j in jobs(u) {
        let attempts: i64 = if j.last_error.is_some() { 3 } else { 1 };
        let bytes: usize = j.lines.iter().map(|l| l.len() + 1).sum();
        sqlx::query(
            "INSERT INTO jobs (id, action, params, status, attempts, max_attempts, worker_id, not_before,
                               created_at, started_at, heartbeat_at, finished_at, progress, last_error, log_bytes)
             VALUES ($1, $2, '{}', $3, $4, 3, 'bench-worker', $5, $5, $6, $7, $7, $8, $9, $10)",
        )
        .bind(j.id)
        .bind(j.action)
        .bind(j.status)
        .bind(attempts)
        .bind(j.created)
        .bind(j.created + 1000)
        .bind(j.finished)
        .bind(&j.progress)
        .bind(&j.last_error)
        .bind(bytes as i64)
        .execute(&mut *tx)
        .await?;
        let seqs: Vec<i64> = (1..=j.lines.len() as i64).collect();
        let at: Vec<i64> = seqs.iter().map(|s| j.created + 1000 + s * 10).collect();
        sqlx::query(
            "INSERT INTO job_logs (job_id, seq, at, attempt, line)
             SELECT $1, s, a, $2, l FROM UNNEST($3::BIGINT[], $4::BIGINT[], $5::TEXT[]) AS u(s, a, l)",
        )
        .bind(j.id)
        .bind(attempts)
        .bind(&seqs)
        .bind(&at)
        .bind(&j.lines)
        .execute(&mut *tx)
        .await?;
    }
    // The ids above were given, not drawn: the sequence goes past them, so jobs wharf
    // queues get new ones.
    sqlx::query("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT MAX(id) FROM jobs))")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_has_the_asked_shape() {
        let shape = Shape {
            repos: 1_000,
            big_tags: 200,
            jobs: 10,
        };
        let mut files = Vec::new();
        let u = build(shape, 1, &mut |d, data| {
            assert!(d.matches(data));
            files.push(d.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(u.ds.repos.len(), 1_000);
        let mut names = u.ds.repos.clone();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1_000, "names are distinct");
        assert_eq!(u.namespaces, 10);
        assert_eq!(u.namespace, ("team-0005/".to_string(), 100));
        // 999 ordinary images; in the large repository 198 tagged images and two
        // untagged ones in each of its 2 indexes: as many configuration files.
        assert_eq!(u.config_files, 999 + 198 + 2 * 2);
        assert_eq!(files.len(), u.config_files);
        let big_tags =
            u.ds.manifests
                .iter()
                .filter(|m| m.repo == 0 && m.tag.is_some())
                .count();
        assert_eq!(big_tags, 200);
        let indexes = u.ds.manifests.iter().filter(|m| m.media_type == OCI_INDEX);
        assert_eq!(indexes.count(), 2);
        let signed =
            u.ds.manifests
                .iter()
                .filter(|m| m.subject.is_some())
                .count();
        // v00000 and v00100.
        assert_eq!(signed, 2);
        assert!(u
            .ds
            .manifests
            .iter()
            .any(|m| m.subject.as_ref() == Some(&u.image.0)));
        assert_eq!(u.image.1, "v00100");
        // 17, 348 and 679 of the 996 ordinary repositories.
        assert_eq!(u.search_hits, 3);
        // Every manifest parses, and its references are what wharf records.
        for m in &u.ds.manifests {
            let p = wharf_oci::Manifest::parse(Some(m.media_type), &m.payload).unwrap();
            assert_eq!(p.required_blobs().cloned().collect::<Vec<_>>(), m.refs);
            assert_eq!(
                p.required_manifests().cloned().collect::<Vec<_>>(),
                m.manifest_refs
            );
        }
        let mut blobs: Vec<String> = u.ds.blobs.iter().map(|b| b.digest.to_string()).collect();
        let n = blobs.len();
        blobs.sort();
        blobs.dedup();
        assert_eq!(blobs.len(), n, "blob digests are distinct");
        assert_eq!(u.viewer_sees.len(), 10 + 2 + 2 + 3);
        assert_eq!(jobs(&u).len(), 10);
        assert_eq!(jobs(&u)[9].lines.len(), LONG_LOG);
    }
}
