//! Downloading the vulnerability database: one OSV archive per ecosystem, laid out as
//! osv.dev lays it out (`<base>/<ecosystem>/all.zip`).
//!
//! What operators of other registries trip over, and what this does about it:
//! - repeated full downloads: the validators of the last download (`ETag`,
//!   `Last-Modified`) go back as `If-None-Match` / `If-Modified-Since`, and a `304`
//!   keeps what is stored;
//! - proxies: an explicit proxy URL, or the usual `HTTPS_PROXY` / `HTTP_PROXY` /
//!   `NO_PROXY` environment variables when none is given;
//! - rate limits and flaky mirrors: `429` and `5xx` answers and broken connections are
//!   retried with back-off, waiting at least what `Retry-After` asks;
//! - failures nobody sees: every error names the ecosystem, the URL and what went
//!   wrong, for the job's log and `wharf vulndb status`.
//!
//! Archives go to temporary files (never into memory whole: a large ecosystem's archive
//! is hundreds of megabytes) and are bounded in size.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What the download needs to know.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Where the archives are: `<base_url>/<ecosystem>/all.zip`.
    pub base_url: String,
    /// Ecosystems to download, as osv.dev names their folders (`Debian`, `PyPI`, …).
    pub ecosystems: Vec<String>,
    /// A proxy for every request; `None` uses the environment's proxy variables.
    pub proxy: Option<String>,
    /// Attempts per archive in all (the first and its retries).
    pub attempts: u32,
    /// The first retry's wait; doubled for each further retry.
    pub backoff: Duration,
    /// How long one request may take from start to end of the body.
    pub timeout: Duration,
    /// An archive larger than this is refused.
    pub max_archive_bytes: u64,
}

impl FetchConfig {
    /// The defaults, for `base_url` and `ecosystems`.
    pub fn new(base_url: impl Into<String>, ecosystems: Vec<String>) -> FetchConfig {
        FetchConfig {
            base_url: base_url.into(),
            ecosystems,
            proxy: None,
            attempts: 4,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
            max_archive_bytes: 4 << 30,
        }
    }
}

/// The HTTP validators of one downloaded archive, kept with the database version so
/// that the next download can ask "only if changed".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// One ecosystem's outcome.
#[derive(Debug)]
pub enum Fetched {
    /// The server says the archive has not changed since `Validators`.
    NotModified,
    /// A new archive, in a temporary file deleted when this is dropped.
    New {
        file: tempfile::NamedTempFile,
        bytes: u64,
        validators: Validators,
    },
}

/// Why an ecosystem's archive could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{ecosystem}: {url}: {problem}")]
pub struct FetchError {
    pub ecosystem: String,
    pub url: String,
    pub problem: String,
}

/// The client for [`fetch`]: the proxy, timeouts and a user agent naming wharf.
pub fn client(config: &FetchConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!(
            "wharf/",
            env!("CARGO_PKG_VERSION"),
            " (vulndb_update)"
        ))
        .connect_timeout(Duration::from_secs(30))
        .timeout(config.timeout);
    if let Some(proxy) = &config.proxy {
        let p = reqwest::Proxy::all(proxy).map_err(|e| format!("proxy {proxy:?}: {e}"))?;
        builder = builder.proxy(p);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The archive's URL for `ecosystem`.
pub fn archive_url(base_url: &str, ecosystem: &str) -> String {
    // Ecosystem folder names have spaces and colons ("Red Hat", "Ubuntu:22.04:LTS").
    let mut folder = String::new();
    for b in ecosystem.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                folder.push(b as char)
            }
            _ => folder.push_str(&format!("%{b:02X}")),
        }
    }
    format!("{}/{folder}/all.zip", base_url.trim_end_matches('/'))
}

/// Downloads one ecosystem's archive into a temporary file in `dir`, unless it is
/// unchanged since `previous`. `log` receives a line per attempt that failed.
pub async fn fetch(
    client: &reqwest::Client,
    config: &FetchConfig,
    ecosystem: &str,
    previous: Option<&Validators>,
    dir: &Path,
    log: &(dyn Fn(String) + Send + Sync),
) -> Result<Fetched, FetchError> {
    let url = archive_url(&config.base_url, ecosystem);
    let error = |problem: String| FetchError {
        ecosystem: ecosystem.to_string(),
        url: url.clone(),
        problem,
    };
    let attempts = config.attempts.max(1);
    let mut wait = config.backoff;
    for attempt in 1..=attempts {
        let outcome = fetch_once(client, config, &url, previous, dir).await;
        let (problem, retry_after) = match outcome {
            Ok(fetched) => return Ok(fetched),
            Err(Attempt::Final(problem)) => return Err(error(problem)),
            Err(Attempt::Retry(problem, retry_after)) => (problem, retry_after),
        };
        if attempt == attempts {
            return Err(error(format!(
                "{problem} (gave up after {attempts} attempts)"
            )));
        }
        let pause = retry_after.map_or(wait, |r| r.max(wait));
        log(format!(
            "{ecosystem}: attempt {attempt} of {attempts} failed: {problem}; retrying in {:.1} s",
            pause.as_secs_f64()
        ));
        tokio::time::sleep(pause).await;
        wait = wait.saturating_mul(2);
    }
    unreachable!("the last attempt returns")
}

/// A failed attempt: worth retrying (with the server's `Retry-After`), or not.
enum Attempt {
    Retry(String, Option<Duration>),
    Final(String),
}

async fn fetch_once(
    client: &reqwest::Client,
    config: &FetchConfig,
    url: &str,
    previous: Option<&Validators>,
    dir: &Path,
) -> Result<Fetched, Attempt> {
    let mut request = client.get(url);
    if let Some(v) = previous {
        if let Some(etag) = &v.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = &v.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| Attempt::Retry(describe(&e), None))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            // A server asking for an hour is not waited for inside one job attempt.
            .map(|s| Duration::from_secs(s.min(300)));
        return Err(Attempt::Retry(
            format!("the server answered {status}"),
            retry_after,
        ));
    }
    if !status.is_success() {
        let hint = match status.as_u16() {
            404 => ": no archive there (is the base URL right, and the ecosystem's name spelt as its folder?)",
            401 | 403 => ": the server refuses (a proxy or mirror that needs credentials?)",
            407 => ": the proxy wants credentials (put them in the proxy URL)",
            _ => "",
        };
        return Err(Attempt::Final(format!(
            "the server answered {status}{hint}"
        )));
    }
    if let Some(len) = response.content_length() {
        if len > config.max_archive_bytes {
            return Err(Attempt::Final(format!(
                "the archive is {len} bytes, over the limit of {} bytes",
                config.max_archive_bytes
            )));
        }
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    let mut file = tempfile::Builder::new()
        .prefix("vulndb-")
        .suffix(".zip")
        .tempfile_in(dir)
        .map_err(|e| {
            Attempt::Final(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
    let mut bytes = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            // A connection cut half-way: the partial file is dropped, the next attempt starts over.
            Err(e) => {
                return Err(Attempt::Retry(
                    format!(
                        "the download broke off after {bytes} bytes: {}",
                        describe(&e)
                    ),
                    None,
                ))
            }
        };
        bytes += chunk.len() as u64;
        if bytes > config.max_archive_bytes {
            return Err(Attempt::Final(format!(
                "the archive is larger than the limit of {} bytes",
                config.max_archive_bytes
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| Attempt::Final(format!("writing {}: {e}", file.path().display())))?;
    }
    file.flush()
        .map_err(|e| Attempt::Final(format!("writing {}: {e}", file.path().display())))?;
    Ok(Fetched::New {
        file,
        bytes,
        validators,
    })
}

/// An error with its causes ("error sending request: connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// Validators per ecosystem, as stored with a database version.
pub type ValidatorsByEcosystem = BTreeMap<String, Validators>;
