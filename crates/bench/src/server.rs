//! The two servers under test: started fresh on their own loopback port with their own
//! temporary data directory, and always stopped by PID (explicitly, or by `Drop`).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Url;
use tempfile::TempDir;

/// How long a server may take to answer `GET /v2/` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one psql statement (CREATE/DROP DATABASE) may take.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wharf,
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wharf => "wharf",
            Kind::Reference => "reference",
        }
    }
}

pub struct Server {
    pub kind: Kind,
    /// How the server was configured, for the report.
    pub setup: String,
    /// `http://127.0.0.1:PORT/`
    pub base: Url,
    pub pid: u32,
    child: Option<Child>,
    /// pg-fs, pg-s3: wharf's own database, dropped after the server has stopped.
    database: Option<Database>,
    dir: TempDir,
}

/// Where the servers keep their data.
#[derive(Clone)]
pub enum Storage {
    /// Everything in the server's temporary data directory: wharf's SQLite file and blob
    /// directory, the reference's filesystem driver.
    Local,
    /// wharf: a fresh PostgreSQL database, and blobs in a directory of its temporary data
    /// directory; the reference: its filesystem driver, as with `Local`.
    PgFs(Arc<PgFs>),
    /// wharf: a fresh PostgreSQL database and S3; the reference: the same S3 server and
    /// bucket. Each server writes under a prefix of its own.
    PgS3(Arc<PgS3>),
}

/// The shared PostgreSQL server of a pg-fs run.
pub struct PgFs {
    /// A URL that may run CREATE DATABASE; wharf gets the same URL with its own database.
    pub postgres_url: String,
    /// Tells this run's databases from any other run's.
    pub run_id: String,
}

/// The shared PostgreSQL and S3 servers of a pg-s3 run.
pub struct PgS3 {
    /// A URL that may run CREATE DATABASE; wharf gets the same URL with its own database.
    pub postgres_url: String,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Tells this run's databases and S3 prefixes from any other run's.
    pub run_id: String,
}

impl PgS3 {
    /// The S3 key prefix (no slashes) of one server.
    pub fn prefix(&self, kind: Kind) -> String {
        format!("wharf-bench-{}-{}", self.run_id, kind.name())
    }
}

impl Server {
    /// Spawns the server and waits (bounded) until it answers `GET /v2/` with 200.
    pub async fn start(
        kind: Kind,
        bin: &Path,
        work_dir: &Path,
        storage: &Storage,
        http: &reqwest::Client,
    ) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wharf-bench-{}-", kind.name()))
            .tempdir_in(work_dir)
            .with_context(|| format!("creating a data directory in {}", work_dir.display()))?;
        let port = free_port()?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin);
        let mut setup = String::new();
        let mut database = None;
        // Each server reads only what we pass: no stray WHARF_*/REGISTRY_* override from
        // the environment (the reference maps REGISTRY_* onto its configuration), and no
        // AWS_* either (AWS_CA_BUNDLE alone makes the reference's S3 driver panic at
        // start-up: its HTTP transport cannot take a custom CA bundle).
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if ["WHARF_", "REGISTRY_", "AWS_"]
                .iter()
                .any(|p| k_str.starts_with(p))
            {
                cmd.env_remove(&k);
            }
        }
        match kind {
            Kind::Wharf => {
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--data-dir")
                    .arg(&data);
                match storage {
                    Storage::Local => setup += "defaults",
                    Storage::PgFs(p) => {
                        let db = Database::create(&p.postgres_url, &p.run_id).await?;
                        // Under `data`, so evict_page_cache finds the blob files.
                        let blobs = data.join("blobstore");
                        cmd.arg("--metadata")
                            .arg(&db.url)
                            .arg("--blobs")
                            .arg(&blobs);
                        setup += &format!(
                            "metadata in PostgreSQL (a fresh database, {}), blobs in a \
                             directory (--blobs DATA/blobstore)",
                            db.name
                        );
                        database = Some(db);
                    }
                    Storage::PgS3(s) => {
                        let db = Database::create(&s.postgres_url, &s.run_id).await?;
                        cmd.arg("--metadata")
                            .arg(&db.url)
                            .arg("--blobs")
                            .arg(format!("s3://{}/{}", s.bucket, s.prefix(kind)))
                            .arg("--s3-endpoint")
                            .arg(&s.endpoint)
                            .arg("--s3-region")
                            .arg(&s.region)
                            .env("AWS_ACCESS_KEY_ID", &s.access_key)
                            .env("AWS_SECRET_ACCESS_KEY", &s.secret_key);
                        setup += &format!(
                            "metadata in PostgreSQL (a fresh database, {}), blobs in S3 \
                             (bucket {}, prefix {}/)",
                            db.name,
                            s.bucket,
                            s.prefix(kind)
                        );
                        database = Some(db);
                    }
                }
                // The reference runs without auth; so does wharf, where the build has
                // auth at all (builds before it have no such flag and no auth).
                if has_flag(bin, "--insecure-no-auth") {
                    cmd.arg("--insecure-no-auth=true");
                    setup += ", authentication off (--insecure-no-auth)";
                } else {
                    setup += " (this build has no authentication)";
                }
            }
            Kind::Reference => {
                let config = dir.path().join("config.yml");
                let (storage_yaml, what) = match storage {
                    Storage::Local | Storage::PgFs(_) => (
                        format!("  filesystem:\n    rootdirectory: {}\n", data.display()),
                        "filesystem storage".to_string(),
                    ),
                    Storage::PgS3(s) => (
                        reference_s3(s, &s.prefix(kind)),
                        format!(
                            "s3 storage on the same server (bucket {}, rootdirectory /{}, \
                             v4auth, path-style addressing as 2.8 always uses with a \
                             regionendpoint, redirect disabled so blob bytes go through \
                             the registry as they do through wharf)",
                            s.bucket,
                            s.prefix(kind)
                        ),
                    ),
                };
                std::fs::write(&config, reference_config(&storage_yaml, port))?;
                cmd.arg("serve").arg(&config);
                setup = format!(
                    "no auth; {what}, in-memory blob descriptor cache, log level warn, \
                     no access log, upload purging off"
                );
            }
        }
        let stdout = File::create(dir.path().join("stdout.log"))?;
        let stderr = File::create(dir.path().join("stderr.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} ({})", kind.name(), bin.display()))?;
        let mut server = Server {
            kind,
            setup,
            base: Url::parse(&format!("http://127.0.0.1:{port}/"))?,
            pid: child.id(),
            child: Some(child),
            database,
            dir,
        };
        server.wait_ready(http).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let v2 = self.base.join("v2/")?;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited during start-up ({status}): {}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            // wharf announces readiness on stdout; the reference has no such line, so for
            // both we also require a 200 from the base endpoint.
            let announced = match self.kind {
                Kind::Wharf => std::fs::read_to_string(self.dir.path().join("stdout.log"))
                    .is_ok_and(|s| s.contains("listening on http://")),
                Kind::Reference => true,
            };
            if announced {
                let r = http
                    .get(v2.clone())
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not become ready within {START_TIMEOUT:?}: {}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running (not exited, not reaped).
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Drops the server's large files from the page cache (they are on disk: both
    /// servers fsync blobs).
    ///
    /// Why: on the project's VMs memory the guest has not touched recently costs a
    /// hypervisor fault per page, so a run whose page cache keeps growing gets slower
    /// for both servers part-way through (a ~3× step in push throughput). Evicting what
    /// the pushes wrote keeps the run inside memory it has already touched.
    pub fn evict_page_cache(&self) {
        let mut dirs = vec![self.dir.path().join("data")];
        // Bounded: a temporary tree this run created; each directory is visited once.
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    dirs.push(e.path());
                } else if ft.is_file() {
                    // The blobs: metadata (wharf's SQLite file, the reference's link files)
                    // is far smaller while the push phases run, and stays cached.
                    if e.metadata().is_ok_and(|m| m.len() >= 1 << 20) {
                        fadvise_dontneed(&e.path());
                    }
                }
            }
        }
    }

    /// The last lines of the server's output, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "stderr.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if !tail.is_empty() {
                out += &format!("[{f}] {tail} ");
            }
        }
        if out.is_empty() {
            "(no output)".into()
        } else {
            out
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // No libc dependency for one signal: kill(1) by PID.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        // Only now that wharf is gone: its connections end with it.
        self.database.take();
    }
}

impl Drop for Server {
    /// The safety net for errors, panics and signals: kill by PID and reap, so no server
    /// outlives the run; then `database` drops wharf's database and `dir` (declared after
    /// `child`) removes the data.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` on the whole file: the kernel drops its clean
/// cached pages. A hint; false if it could not be given.
fn fadvise_dontneed(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = File::open(path) else {
        return false;
    };
    // SAFETY: a plain syscall on a descriptor that `f` keeps open for the call.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
}

/// Whether `bin serve --help` lists `flag`.
fn has_flag(bin: &Path, flag: &str) -> bool {
    Command::new(bin)
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// A port the kernel says is free now. Another process could take it before the server
/// binds it; on a loopback-only benchmark machine that race is acceptable, and start-up
/// fails loudly if it happens.
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The reference at its best, not its packaged defaults: no auth, the in-memory blob
/// descriptor cache its sample config enables, and no per-request logging (wharf logs no
/// line per request either), so neither server pays for logs the other does not write.
/// `storage` is the YAML of the storage driver, indented under `storage:`.
fn reference_config(storage: &str, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
{storage}  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"
    )
}

/// The reference's S3 driver on the shared server. 2.8 has no `forcepathstyle` key (it
/// ignores one): with a `regionendpoint` it always addresses the bucket by path
/// (`http://HOST:PORT/BUCKET/KEY`), which is what an S3 server on 127.0.0.1 needs (a
/// virtual-host name like BUCKET.127.0.0.1 resolves nowhere). Its default chunk size
/// (10 MiB multipart parts) is kept. Redirects are off: by default the reference answers
/// a blob GET with a redirect to a pre-signed S3 URL, and the client would then measure
/// the S3 server, not the registry (wharf serves blob bytes itself).
fn reference_s3(s: &PgS3, prefix: &str) -> String {
    format!(
        "  s3:
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    rootdirectory: /{prefix}
    accesskey: {access}
    secretkey: {secret}
    secure: {secure}
    v4auth: true
  redirect:
    disable: true
",
        region = yaml_str(&s.region),
        endpoint = yaml_str(&s.endpoint),
        bucket = yaml_str(&s.bucket),
        access = yaml_str(&s.access_key),
        secret = yaml_str(&s.secret_key),
        secure = s.endpoint.starts_with("https://"),
    )
}

/// A YAML double-quoted scalar.
fn yaml_str(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

/// A PostgreSQL database created for one wharf start and dropped (best effort, bounded)
/// when this value is dropped.
pub(crate) struct Database {
    admin_url: String,
    pub(crate) name: String,
    /// `admin_url` with the database replaced by `name`.
    pub(crate) url: String,
}

impl Database {
    pub(crate) async fn create(admin_url: &str, run_id: &str) -> Result<Database> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // Lower-case letters, digits and underscores only: no quoting needed.
        let name = format!("wharf_bench_{run_id}_{n}");
        let mut url = Url::parse(admin_url).context("parsing --postgres-url")?;
        url.set_path(&format!("/{name}"));
        let (admin, sql) = (admin_url.to_string(), format!("CREATE DATABASE {name}"));
        tokio::task::spawn_blocking(move || psql(&admin, &sql))
            .await
            .context("psql task")??;
        Ok(Database {
            admin_url: admin_url.to_string(),
            name,
            url: url.to_string(),
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("warning: could not drop database {}: {e:#}", self.name);
        }
    }
}

/// Runs one SQL statement with psql, bounded in time (killed after PSQL_TIMEOUT).
fn psql(url: &str, sql: &str) -> Result<()> {
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting psql (is the PostgreSQL client installed?)")?;
    let deadline = Instant::now() + PSQL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("psql did not finish `{sql}` within {PSQL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        bail!("psql `{sql}` failed ({status}): {}", err.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg_s3() -> PgS3 {
        PgS3 {
            postgres_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "wharf-test".into(),
            region: "us-east-1".into(),
            access_key: "test".into(),
            secret_key: "te\"st".into(),
            run_id: "42".into(),
        }
    }

    #[test]
    fn reference_s3_config_is_path_style_on_the_shared_server() {
        let s = pg_s3();
        let yaml = reference_config(&reference_s3(&s, &s.prefix(Kind::Reference)), 5000);
        assert!(yaml.contains("storage:\n  s3:\n    region: \"us-east-1\"\n"));
        assert!(yaml.contains("    regionendpoint: \"http://127.0.0.1:9000\"\n"));
        assert!(yaml.contains("    rootdirectory: /wharf-bench-42-reference\n"));
        assert!(yaml.contains("    secretkey: \"te\\\"st\"\n"));
        assert!(yaml.contains("    secure: false\n"));
        assert!(yaml.contains("  redirect:\n    disable: true\n"));
        assert!(yaml.contains("  delete:\n    enabled: true\n"));
    }

    #[test]
    fn local_reference_config_keeps_its_filesystem_driver() {
        let yaml = reference_config("  filesystem:\n    rootdirectory: /tmp/x\n", 5000);
        assert!(yaml.contains("storage:\n  filesystem:\n    rootdirectory: /tmp/x\n  delete:"));
        assert!(yaml.ends_with("http:\n  addr: 127.0.0.1:5000\n"));
    }
}
