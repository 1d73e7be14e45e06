//! The cache's upstreams: the registry, or other caches in front of it, tried in turn.
//! They are asked for blobs (fills), and for the cache's registration and heartbeats,
//! which a cache in the middle of a chain passes on to its own upstreams.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, RANGE};
use reqwest::{Client, Response, StatusCode};
use wharf_oci::Digest;

use crate::report::{CacheReport, Registration};
use crate::signed::SignedQuery;
use crate::{CACHE_BLOB_PATH, VIA_HEADER};

/// The registration endpoint, relative to an upstream's base URL.
pub const REGISTRATION_PATH: &str = "/api/v0/content_caches/_self";
/// The heartbeat endpoint.
pub const HEARTBEAT_PATH: &str = "/api/v0/content_caches/_self/heartbeat";

#[derive(Clone)]
pub struct Upstreams {
    urls: Vec<String>,
    client: Client,
    /// The `wharf-cache-via` value to send: the nodes before this one, then this one.
    instance: String,
}

impl Upstreams {
    pub fn new(urls: Vec<String>, instance: String) -> anyhow::Result<Upstreams> {
        anyhow::ensure!(
            !urls.is_empty(),
            "a cache needs at least one upstream (--cache-for URL)"
        );
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // No overall timeout: a large blob takes as long as it takes; a stalled
            // body is cut by the read timeout.
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Upstreams {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            client,
            instance,
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    fn via(&self, before: &str) -> String {
        if before.is_empty() {
            self.instance.clone()
        } else {
            format!("{before}, {}", self.instance)
        }
    }

    /// Asks `upstream` for `digest` from byte `offset` on.
    pub async fn fetch_blob(
        &self,
        upstream: &str,
        digest: &Digest,
        query: &SignedQuery,
        offset: u64,
        via: &str,
    ) -> Result<Response, String> {
        let url = format!(
            "{upstream}{CACHE_BLOB_PATH}/{digest}?{}",
            query.to_query_string()
        );
        let mut req = self.client.get(&url).header(VIA_HEADER, self.via(via));
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| format!("{upstream}: {e}"))?;
        let want = if offset > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if resp.status() != want {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(format!(
                "{upstream} answered {status}: {}",
                body.chars().take(300).collect::<String>().trim()
            ));
        }
        Ok(resp)
    }

    /// Registration (`report` absent) or heartbeat, to the first upstream that
    /// answers; `authorization` is the cache's own `Bearer` token (or, passed on, the
    /// one a cache further out sent).
    pub async fn announce(
        &self,
        authorization: &str,
        report: Option<&serde_json::Value>,
        via: &str,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let mut errors = Vec::new();
        for up in &self.urls {
            let req = match report {
                None => self.client.get(format!("{up}{REGISTRATION_PATH}")),
                Some(r) => self.client.post(format!("{up}{HEARTBEAT_PATH}")).json(r),
            }
            .header(AUTHORIZATION, authorization)
            .header(VIA_HEADER, self.via(via))
            .timeout(Duration::from_secs(10));
            match req.send().await {
                Ok(resp)
                    if resp.status().is_server_error()
                        || resp.status() == StatusCode::NOT_FOUND =>
                {
                    errors.push(format!("{up} answered {}", resp.status()));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await.map_err(|e| format!("{up}: {e}"))?;
                    return Ok((status, body));
                }
                Err(e) => errors.push(format!("{up}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// This cache's registration, or heartbeat with `report`.
    pub async fn register(
        &self,
        token: &str,
        report: Option<&CacheReport>,
    ) -> anyhow::Result<Registration> {
        let report = report.map(serde_json::to_value).transpose()?;
        let (status, body) = self
            .announce(&format!("Bearer {token}"), report.as_ref(), "")
            .await
            .map_err(|e| anyhow::anyhow!("no upstream answered: {e}"))?;
        if !status.is_success() {
            anyhow::bail!(
                "the registry refused this cache ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }
}
