//! Shared by the black-box tests: a real `wharf serve` process on a free loopback port
//! with its own temporary data directory, stopped (SIGKILL) and removed on drop, even
//! when the test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

pub struct TestServer {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A fresh registry without authentication, for tests of the protocol itself.
    pub fn start() -> TestServer {
        Self::start_with(&[], &[])
    }

    /// A fresh registry with authentication on, as it ships; the initial administrator
    /// is `admin` with [`ADMIN_PASSWORD`].
    pub fn start_secure() -> TestServer {
        Self::start_secure_with(&[])
    }

    /// [`TestServer::start_secure`] with extra `serve` flags.
    pub fn start_secure_with(args: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut cmd = serve_command();
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args);
        cmd.env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let mut s = Self::launch(cmd, &data_dir);
        s._tmp = Some(tmp);
        s
    }

    /// A fresh registry with extra `serve` flags and environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_in(&data_dir, args, env);
        s._tmp = Some(tmp);
        s
    }

    /// A registry without authentication over an existing data directory (to restart
    /// over the same data).
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut cmd = serve_command();
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--insecure-no-auth")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::launch(cmd, data_dir)
    }

    /// Starts a prepared `serve` command (see [`serve_command`]) and waits until it
    /// listens. `data_dir` is where the test expects the data to be.
    pub fn launch(mut cmd: Command, data_dir: &Path) -> TestServer {
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("start wharf serve");
        let addr = wait_for_address(&mut child);
        TestServer {
            child,
            base: format!("http://{addr}"),
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Removes `tmp` when this server is dropped (after the process is stopped).
    pub fn owning(mut self, tmp: tempfile::TempDir) -> TestServer {
        self._tmp = Some(tmp);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal (by this child's own PID) and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "could not signal wharf");
        wait_with_timeout(&mut self.child, Duration::from_secs(30))
            .expect("wharf did not exit after the signal")
    }
}

/// `wharf serve` with a clean environment: no configuration leaks in from the caller.
pub fn serve_command() -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("WHARF_LOG_LEVEL", "warn").stderr(Stdio::inherit());
    cmd
}

/// Reads the `listening on http://ADDR` line `serve` prints once it is accepting.
fn wait_for_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let url = line.split(" listening on ").nth(1).map(str::trim);
            if let Some(addr) =
                url.and_then(|u| u.strip_prefix("http://").or(u.strip_prefix("https://")))
            {
                let _ = tx.send(addr.to_string());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("wharf serve did not report its address within 30 s (exit: {status:?})");
        }
    }
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    wharf_oci::Digest::sha256_of(data).to_string()
}

/// Whether a command exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Tests that need an external tool run whenever it is there; under CI=true a missing
/// tool is a failure, never a silent skip.
pub fn require_tool(cmd: &str) -> bool {
    if have(cmd) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{cmd} is required under CI=true; scripts/install-test-deps.sh installs it");
    }
    eprintln!("SKIPPED: {cmd} is not installed (run scripts/install-test-deps.sh)");
    false
}

/// Runs SQL with psql against `url`; returns the output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qtAc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database `wharf_PREFIX_PID` on the PostgreSQL server at `url`; its URL.
pub fn create_database(url: &str, prefix: &str) -> String {
    let db = format!("wharf_{prefix}_{}", std::process::id());
    psql(url, &format!("CREATE DATABASE {db}"));
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// A fresh database on the test PostgreSQL that scripts/test.sh starts
/// (`WHARF_TEST_POSTGRES_URL`). Without one: `None` (the test prints SKIPPED and
/// returns), except under `CI=true`, where the test fails.
pub fn pg_database(prefix: &str) -> Option<String> {
    let Ok(url) = std::env::var("WHARF_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "WHARF_TEST_POSTGRES_URL is required under CI=true (scripts/test.sh sets it)"
        );
        eprintln!("SKIPPED: no WHARF_TEST_POSTGRES_URL (run the suite with scripts/test.sh)");
        return None;
    };
    Some(create_database(&url, prefix))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The variable `scripts/test.sh` sets for a service a test needs; without it the test
/// is skipped, except under `CI=true`, where a missing service fails it.
pub fn env_or_skip(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{name} is required under CI=true (scripts/test.sh sets it)"
            );
            eprintln!("SKIPPED: no {name} (run the suite with scripts/test.sh)");
            None
        }
    }
}

/// An S3-compatible server that `scripts/test.sh` started, with a bucket `wharf-test`:
/// moto (a mock, quick to start) or Garage (a real object store).
#[derive(Clone, Debug)]
#[allow(dead_code)] // each test binary uses its own part of the support module
pub struct S3Server {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
}

#[allow(dead_code)]
impl S3Server {
    /// moto, from `WHARF_TEST_S3_ENDPOINT` (skipped without it, except under CI).
    pub fn moto() -> Option<S3Server> {
        Some(S3Server {
            endpoint: env_or_skip("WHARF_TEST_S3_ENDPOINT")?,
            key_id: "test".into(),
            secret: "test".into(),
        })
    }

    /// Garage, from `WHARF_TEST_GARAGE_ENDPOINT` and its key (skipped without them,
    /// except under CI).
    pub fn garage() -> Option<S3Server> {
        Some(S3Server {
            endpoint: env_or_skip("WHARF_TEST_GARAGE_ENDPOINT")?,
            key_id: env_or_skip("WHARF_TEST_GARAGE_KEY_ID")?,
            secret: env_or_skip("WHARF_TEST_GARAGE_SECRET")?,
        })
    }

    /// Points a `wharf serve` at this server: endpoint and credentials (the blob
    /// location itself is the caller's `--blobs s3://wharf-test/…`).
    pub fn configure(&self, cmd: &mut Command) {
        cmd.args(["--s3-endpoint", &self.endpoint])
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret);
    }
}

/// `len` incompressible bytes, the same for the same `seed` (xorshift64).
#[allow(dead_code)]
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
