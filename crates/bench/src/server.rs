//! The two servers under test: started fresh on their own loopback port with their own
//! temporary data directory, and always stopped by PID (explicitly, or by `Drop`).

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Url;
use tempfile::TempDir;

/// How long a server may take to answer `GET /v2/` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub setup: &'static str,
    /// `http://127.0.0.1:PORT/`
    pub base: Url,
    pub pid: u32,
    child: Option<Child>,
    dir: TempDir,
}

impl Server {
    /// Spawns the server and waits (bounded) until it answers `GET /v2/` with 200.
    pub async fn start(
        kind: Kind,
        bin: &Path,
        work_dir: &Path,
        http: &reqwest::Client,
    ) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wharf-bench-{}-", kind.name()))
            .tempdir_in(work_dir)
            .with_context(|| format!("creating a data directory in {}", work_dir.display()))?;
        let port = free_port()?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin);
        let mut setup = "defaults (this build has no authentication)";
        match kind {
            Kind::Wharf => {
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--data-dir")
                    .arg(&data);
                // The reference runs without auth; so does wharf, where the build has
                // auth at all (builds before it have no such flag and no auth).
                if has_flag(bin, "--insecure-no-auth") {
                    cmd.arg("--insecure-no-auth=true");
                    setup = "defaults, authentication off (--insecure-no-auth)";
                }
            }
            Kind::Reference => {
                let config = dir.path().join("config.yml");
                std::fs::write(&config, reference_config(&data, port))?;
                cmd.arg("serve").arg(&config);
                setup = "no auth; filesystem storage, in-memory blob descriptor cache, \
                         log level warn, no access log, upload purging off";
            }
        }
        // Each server reads only what we pass: no stray WHARF_*/REGISTRY_* override from
        // the environment (the reference maps REGISTRY_* onto its configuration).
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if k_str.starts_with("WHARF_") || k_str.starts_with("REGISTRY_") {
                cmd.env_remove(&k);
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
    }
}

impl Drop for Server {
    /// The safety net for errors, panics and signals: kill by PID and reap, so no server
    /// outlives the run; then `dir` (declared after `child`) removes the data.
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
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The reference at its best, not its packaged defaults: no auth, the in-memory blob
/// descriptor cache its sample config enables, and no per-request logging (wharf logs no
/// line per request either), so neither server pays for logs the other does not write.
fn reference_config(data: &Path, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
",
        data = data.display()
    )
}
