//! The handful of distribution-API calls the benchmark makes, each checking its status
//! and the headers a client relies on, so a fast wrong answer never counts as a figure.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE,
};
use reqwest::{Client, Response, StatusCode, Url};
use wharf_oci::{Algorithm, Digest, Hasher};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCTET_STREAM: &str = "application/octet-stream";
/// Bound on any request that carries no large body (large ones use the client's default).
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One server's API, addressed by its base URL.
#[derive(Clone)]
pub struct Registry {
    http: Client,
    base: Url,
}

impl Registry {
    pub fn new(http: Client, base: Url) -> Registry {
        Registry { http, base }
    }

    pub fn url(&self, path: &str) -> Result<Url> {
        Ok(self.base.join(path)?)
    }

    /// `POST /v2/<repo>/blobs/uploads/` → the session's absolute URL.
    pub async fn start_upload(&self, repo: &str) -> Result<Url> {
        let resp = self
            .http
            .post(self.url(&format!("v2/{repo}/blobs/uploads/"))?)
            .header(CONTENT_LENGTH, "0")
            .timeout(SMALL_TIMEOUT)
            .send()
            .await?;
        let (h, _) = expect(resp, StatusCode::ACCEPTED, "POST upload").await?;
        self.location(&h)
    }

    /// Monolithic push: POST, then one PUT `?digest=` carrying the whole blob.
    pub async fn push_monolithic(&self, repo: &str, data: Bytes, digest: &Digest) -> Result<()> {
        let session = self.start_upload(repo).await?;
        let resp = self
            .http
            .put(with_digest(session, digest))
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(data)
            .send()
            .await?;
        let (h, _) = expect(resp, StatusCode::CREATED, "monolithic PUT").await?;
        check_digest_header(&h, digest)
    }

    /// Chunked push: POST, PATCHes of `chunk` bytes with an inclusive `Content-Range`,
    /// and a final empty PUT `?digest=`. Follows the `Location` of every response (the
    /// reference changes it after each chunk) and checks the `Range` it reports.
    /// Returns how long the final PUT took.
    pub async fn push_chunked(
        &self,
        repo: &str,
        data: &Bytes,
        chunk: usize,
        digest: &Digest,
    ) -> Result<Duration> {
        let mut session = self.start_upload(repo).await?;
        let mut start = 0;
        // Bounded: `start` grows by at least one byte per round.
        while start < data.len() {
            let end = (start + chunk.max(1)).min(data.len());
            let resp = self
                .http
                .patch(session)
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_RANGE, format!("{}-{}", start, end - 1))
                .body(data.slice(start..end))
                .send()
                .await?;
            let (h, _) = expect(resp, StatusCode::ACCEPTED, "PATCH chunk").await?;
            let range = header(&h, RANGE.as_str());
            if range.as_deref() != Some(&format!("0-{}", end - 1)) {
                bail!(
                    "after the chunk ending at byte {} the server reports Range {range:?}",
                    end - 1
                );
            }
            session = self.location(&h)?;
            start = end;
        }
        let t0 = Instant::now();
        let resp = self
            .http
            .put(with_digest(session, digest))
            .header(CONTENT_LENGTH, "0")
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        let (h, _) = expect(resp, StatusCode::CREATED, "final PUT").await?;
        let elapsed = t0.elapsed();
        check_digest_header(&h, digest)?;
        Ok(elapsed)
    }

    /// `GET` a blob, streaming the body; counts bytes and, with `hash`, digests them.
    pub async fn get_blob(
        &self,
        repo: &str,
        digest: &Digest,
        hash: bool,
    ) -> Result<(u64, Option<Digest>)> {
        let mut resp = self
            .http
            .get(self.url(&format!("v2/{repo}/blobs/{digest}"))?)
            .send()
            .await?;
        if resp.status() != StatusCode::OK {
            expect(resp, StatusCode::OK, "GET blob").await?;
            unreachable!("expect fails on any other status");
        }
        let mut hasher = hash.then(|| Hasher::new(Algorithm::Sha256));
        let mut n = 0u64;
        // Bounded by the body's length and the client's timeout.
        while let Some(chunk) = resp.chunk().await? {
            n += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
        }
        Ok((n, hasher.map(Hasher::finish)))
    }

    /// `HEAD` a blob → its `Content-Length`.
    pub async fn head_blob(&self, repo: &str, digest: &Digest) -> Result<u64> {
        let resp = self
            .http
            .head(self.url(&format!("v2/{repo}/blobs/{digest}"))?)
            .timeout(SMALL_TIMEOUT)
            .send()
            .await?;
        let (h, _) = expect(resp, StatusCode::OK, "HEAD blob").await?;
        header(&h, CONTENT_LENGTH.as_str())
            .and_then(|v| v.parse().ok())
            .context("HEAD blob has no Content-Length")
    }

    /// `PUT` an OCI image manifest under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        body: Bytes,
        digest: &Digest,
    ) -> Result<()> {
        let resp = self
            .http
            .put(self.url(&format!("v2/{repo}/manifests/{reference}"))?)
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body)
            .timeout(SMALL_TIMEOUT)
            .send()
            .await?;
        let (h, _) = expect(resp, StatusCode::CREATED, "PUT manifest").await?;
        check_digest_header(&h, digest)
    }

    /// `GET` a manifest accepting OCI → (body, `Docker-Content-Digest`).
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Bytes, Option<String>)> {
        let resp = self
            .http
            .get(self.url(&format!("v2/{repo}/manifests/{reference}"))?)
            .header(ACCEPT, OCI_MANIFEST)
            .timeout(SMALL_TIMEOUT)
            .send()
            .await?;
        let (h, body) = expect(resp, StatusCode::OK, "GET manifest").await?;
        Ok((body, header(&h, "docker-content-digest")))
    }

    /// `GET /v2/<repo>/tags/list` (no `n`) → the raw body.
    pub async fn tags_list(&self, repo: &str) -> Result<Bytes> {
        let resp = self
            .http
            .get(self.url(&format!("v2/{repo}/tags/list"))?)
            .timeout(SMALL_TIMEOUT)
            .send()
            .await?;
        let (_, body) = expect(resp, StatusCode::OK, "GET tags/list").await?;
        Ok(body)
    }

    fn location(&self, h: &HeaderMap) -> Result<Url> {
        let loc = header(h, LOCATION.as_str()).context("response has no Location")?;
        // wharf answers with a path, the reference with an absolute URL: join handles both.
        Ok(self.base.join(&loc)?)
    }
}

/// Appends `digest=` to a session URL, keeping the query the server put there (the
/// reference keeps its upload state in `_state`).
fn with_digest(mut url: Url, digest: &Digest) -> Url {
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    url
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn check_digest_header(h: &HeaderMap, want: &Digest) -> Result<()> {
    match header(h, "docker-content-digest") {
        Some(got) if got == want.to_string() => Ok(()),
        got => bail!("Docker-Content-Digest is {got:?}, expected {want}"),
    }
}

/// Reads the whole (small) body so the connection goes back to the pool, and fails with
/// the server's own words on any status but `want`.
async fn expect(resp: Response, want: StatusCode, what: &str) -> Result<(HeaderMap, Bytes)> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the body"))?;
    if status != want {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
        bail!("{what}: status {status}, expected {want}: {text}");
    }
    Ok((headers, body))
}
