//! Pushes while a GC job runs: `wharf serve` on a prepared data directory (SQLite), or on a
//! prepared PostgreSQL database and blob directory, small-image pushers for a fixed time,
//! and the job API.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Client, StatusCode, Url};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::bench::push_image;
use crate::data::Image;
use crate::registry::Registry;
use crate::server::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `wharf serve` on stores it did not create; killed by PID on drop.
pub struct Wharf {
    pub base: Url,
    pub pid: u32,
    child: Option<Child>,
    log_dir: std::path::PathBuf,
}

impl Wharf {
    /// Starts `bin serve` on `data_dir` (SQLite and blobs there, or with `postgres` =
    /// `Some((url, blobs))` metadata in that PostgreSQL database and blobs in the directory
    /// `blobs`), authentication off, job heartbeat 1 s (so the worker looks for jobs every
    /// second), and waits (bounded) for `GET /v2/` to answer 200. Logs go to `log_dir`.
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        postgres: Option<(&str, &Path)>,
        log_dir: &Path,
        http: &Client,
    ) -> Result<Wharf> {
        Wharf::start_with_auth(bin, data_dir, postgres, log_dir, http, None).await
    }

    /// As [`Wharf::start`]; with `admin_password`, authentication stays on (the store
    /// then needs users, or this start creates the initial `admin` with that password,
    /// passed in `WHARF_ADMIN_PASSWORD`), and readiness is `GET /readyz` answering 200.
    pub async fn start_with_auth(
        bin: &Path,
        data_dir: &Path,
        postgres: Option<(&str, &Path)>,
        log_dir: &Path,
        http: &Client,
        admin_password: Option<&str>,
    ) -> Result<Wharf> {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("WHARF_") {
                cmd.env_remove(&k);
            }
        }
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--job-heartbeat-secs")
            .arg("1");
        match admin_password {
            None => {
                cmd.arg("--insecure-no-auth=true");
            }
            Some(pw) => {
                cmd.env("WHARF_ADMIN_PASSWORD", pw);
            }
        }
        if let Some((url, blobs)) = postgres {
            cmd.arg("--metadata").arg(url).arg("--blobs").arg(blobs);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(log_dir.join("wharf.stdout.log"))?)
            .stderr(File::create(log_dir.join("wharf.stderr.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut w = Wharf {
            base: Url::parse(&format!("http://127.0.0.1:{port}/"))?,
            pid: child.id(),
            child: Some(child),
            log_dir: log_dir.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let v2 = w.base.join(if admin_password.is_some() {
            "readyz"
        } else {
            "v2/"
        })?;
        // Bounded by START_TIMEOUT.
        loop {
            if let Some(status) = w.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("wharf exited during start-up ({status}): {}", w.log_tail());
            }
            let announced = std::fs::read_to_string(log_dir.join("wharf.stdout.log"))
                .is_ok_and(|s| s.contains("listening on http://"));
            if announced {
                let r = http
                    .get(v2.clone())
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return Ok(w);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "wharf did not become ready within {START_TIMEOUT:?}: {}",
                    w.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["wharf.stdout.log", "wharf.stderr.log"] {
            let text = std::fs::read_to_string(self.log_dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if !tail.is_empty() {
                out += &format!("[{f}] {tail} ");
            }
        }
        out
    }

    /// SIGTERM, a bounded wait, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: a signal to the PID of our own child, which is not reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the pushers did in one phase.
pub struct Pushes {
    /// When the phase started and when pushers stopped starting new pushes (ms since
    /// the epoch, this machine's clock, which the server's store also uses).
    pub start_ms: i64,
    pub end_ms: i64,
    /// Completion time of every image push (layer, config, manifest all acknowledged).
    pub done_ms: Vec<i64>,
    /// Seconds each image push took.
    pub latencies: Vec<f64>,
}

impl Pushes {
    /// Image pushes per second that completed inside `[from, to]` (ms).
    pub fn rate_in(&self, from: i64, to: i64) -> f64 {
        if to <= from {
            return f64::NAN;
        }
        let n = self
            .done_ms
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count();
        n as f64 / ((to - from) as f64 / 1000.0)
    }

    pub fn rate(&self) -> f64 {
        self.rate_in(self.start_ms, self.end_ms)
    }
}

pub fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `workers` concurrent pushers, each pushing unique small images (1 KiB layer, config,
/// manifest; blobs by POST + PUT) into its own repository, for `secs`. Every push is
/// checked (201 and the right digest header); the first failure fails the phase.
pub async fn push_for(
    reg: &Registry,
    workers: usize,
    secs: u64,
    next_id: &Arc<AtomicU64>,
) -> Result<Pushes> {
    let start_ms = epoch_ms();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for w in 0..workers.max(1) {
        let (reg, next_id) = (reg.clone(), next_id.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            let mut lat = Vec::new();
            // Bounded by the deadline and by a count no 2-core machine reaches.
            for _ in 0..1_000_000 {
                if Instant::now() >= end {
                    break;
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let img = Image::unique(id, 1024);
                let t0 = Instant::now();
                push_image(&reg, &format!("bench/push-{w}"), &format!("i{id}"), &img)
                    .await
                    .with_context(|| format!("pusher {w}, image {id}"))?;
                lat.push(t0.elapsed().as_secs_f64());
                done.push(epoch_ms());
            }
            Ok::<_, anyhow::Error>((done, lat))
        });
    }
    let end_ms = start_ms + secs as i64 * 1000;
    let mut out = Pushes {
        start_ms,
        end_ms,
        done_ms: vec![],
        latencies: vec![],
    };
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r
            .map_err(|e| anyhow!("pusher panicked: {e}"))
            .and_then(|r| r)
        {
            Ok((d, l)) => {
                out.done_ms.extend(d);
                out.latencies.extend(l);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `POST /api/v0/jobs` → the job's id.
pub async fn queue_job(http: &Client, base: &Url, action: &str, params: Value) -> Result<i64> {
    let resp = http
        .post(base.join("api/v0/jobs")?)
        .json(&json!({ "action": action, "params": params, "max_attempts": 1 }))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.context("job answer is not JSON")?;
    if status != StatusCode::ACCEPTED {
        bail!("POST /api/v0/jobs: {status}: {body}");
    }
    body["id"].as_i64().context("the queued job has no id")
}

/// `GET /api/v0/jobs/{id}`.
pub async fn get_job(http: &Client, base: &Url, id: i64) -> Result<Value> {
    let resp = http
        .get(base.join(&format!("api/v0/jobs/{id}"))?)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await.context("job answer is not JSON")?;
    if status != StatusCode::OK {
        bail!("GET job {id}: {status}: {body}");
    }
    Ok(body)
}

/// The job's log lines (`GET /api/v0/jobs/{id}/logs`), text only.
pub async fn job_log(http: &Client, base: &Url, id: i64) -> Result<Vec<String>> {
    let resp = http
        .get(base.join(&format!("api/v0/jobs/{id}/logs?limit=1000"))?)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let body: Value = resp.json().await.context("job log is not JSON")?;
    Ok(body["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    l["line"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| l.to_string())
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Polls the job every 200 ms until it is no longer waiting or running, for at most
/// `bound`; returns its last view.
pub async fn wait_job(http: &Client, base: &Url, id: i64, bound: Duration) -> Result<Value> {
    let deadline = Instant::now() + bound;
    // Bounded by `bound`.
    loop {
        let job = get_job(http, base, id).await?;
        let status = job["status"].as_str().unwrap_or("");
        if !matches!(status, "waiting" | "running" | "cancel_request") {
            return Ok(job);
        }
        if Instant::now() > deadline {
            bail!("job {id} still {status} after {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
