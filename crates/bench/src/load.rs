//! The external load generators: wrk for manifest GETs, ab for blob HEADs (wrk 4.1 waits
//! for a body after a HEAD response with a Content-Length, and hangs).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::Url;
use tokio::process::Command;

use crate::registry::OCI_MANIFEST;

pub struct LoadResult {
    pub requests_per_sec: f64,
    pub requests: u64,
    /// Latency percentiles in milliseconds (wrk only).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A wrk script that sets the Accept header and prints exact figures from wrk's own
/// histogram in one machine-readable line, instead of parsing its rounded text.
pub fn wrk_script() -> String {
    format!(
        r#"wrk.method = "GET"
wrk.headers["Accept"] = "{OCI_MANIFEST}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WHARF_BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#
    )
}

/// `wrk -tT -cC -dDs --latency -s script URL`, bounded by the duration plus a margin.
pub async fn wrk(
    url: &Url,
    script: &Path,
    threads: u32,
    connections: u32,
    secs: u64,
) -> Result<LoadResult> {
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url.as_str());
    let out = run_bounded(cmd, Duration::from_secs(secs + 60), "wrk").await?;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("WHARF_BENCH "))
        .with_context(|| format!("wrk printed no summary: {out}"))?;
    let field = |k: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("wrk summary has no {k}: {line}"))
    };
    let (requests, duration_us) = (field("requests")?, field("duration_us")?);
    let errors: u64 = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|k| field(k))
        .sum::<Result<u64>>()?;
    // A 404 or a reset is fast; counting them would flatter a broken server.
    if errors > 0 {
        bail!("wrk saw {errors} errors (socket or non-2xx/3xx): {line}");
    }
    if requests == 0 || duration_us == 0 {
        bail!("wrk completed no requests: {line}");
    }
    Ok(LoadResult {
        requests_per_sec: requests as f64 / (duration_us as f64 / 1e6),
        requests,
        p50_ms: Some(field("p50_us")? as f64 / 1000.0),
        p99_ms: Some(field("p99_us")? as f64 / 1000.0),
    })
}

/// `ab -k -i -cC -nN URL` (keep-alive HEADs), checking that every request completed with a
/// 2xx over a kept-alive connection.
pub async fn ab_head(url: &Url, connections: u32, requests: u32) -> Result<LoadResult> {
    let mut cmd = Command::new("ab");
    cmd.arg("-k")
        .arg("-i")
        .arg("-q")
        .arg("-s")
        .arg("30")
        .arg(format!("-c{connections}"))
        .arg(format!("-n{requests}"))
        .arg(url.as_str());
    // Even at 100 requests/s, 50,000 requests end within the bound.
    let bound = Duration::from_secs(60 + u64::from(requests) / 100);
    let out = run_bounded(cmd, bound, "ab").await?;
    let field = |label: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let complete = field("Complete requests:").context("ab printed no 'Complete requests'")?;
    let failed = field("Failed requests:").unwrap_or(0.0);
    let non2xx = field("Non-2xx responses:").unwrap_or(0.0);
    let keepalive = field("Keep-Alive requests:").unwrap_or(0.0);
    let rps = field("Requests per second:").context("ab printed no 'Requests per second'")?;
    if complete as u32 != requests || failed > 0.0 || non2xx > 0.0 {
        bail!("ab: {complete} complete, {failed} failed, {non2xx} non-2xx of {requests}");
    }
    // Without keep-alive ab measures connection set-up, not the server's HEAD path.
    if keepalive < complete * 0.99 {
        bail!("ab: only {keepalive} of {complete} requests used keep-alive");
    }
    Ok(LoadResult {
        requests_per_sec: rps,
        requests: complete as u64,
        p50_ms: None,
        p99_ms: None,
    })
}

/// Runs a command to completion within `bound` (killed on timeout, as `kill_on_drop`
/// does when the future is dropped) and returns its stdout; fails on a non-zero exit.
async fn run_bounded(mut cmd: Command, bound: Duration, what: &str) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {what} (is it installed?)"))?;
    let out = tokio::time::timeout(bound, child.wait_with_output())
        .await
        .with_context(|| format!("{what} did not finish within {bound:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {stdout} {stderr}", out.status);
    }
    Ok(stdout)
}
