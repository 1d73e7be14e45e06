//! HTTP helpers for tests that speak the distribution API directly.

#![allow(dead_code)]

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

use super::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Asserts an error response: status and the spec's error code in the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "status for expected {code}");
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["errors"][0]["code"], code, "body: {body}");
    assert!(body["errors"][0]["message"].is_string());
}

/// Pushes a blob with POST + PUT and returns its digest.
pub async fn push_blob(c: &Client, base: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{base}{loc}{sep}digest={digest}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    digest
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    serde_json::json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// An OCI image manifest over a config and layers (their bytes).
pub fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).unwrap()
}

/// Pushes config, layers and manifest; returns the manifest's bytes and digest.
pub async fn push_image(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    seed: &str,
) -> (Vec<u8>, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
    let layer = format!("layer bytes for {seed}").into_bytes();
    push_blob(c, base, repo, &config).await;
    push_blob(c, base, repo, &layer).await;
    let manifest = image_manifest(&config, &[&layer]);
    let r = put_manifest(c, base, repo, reference, OCI_MANIFEST, &manifest).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let digest = sha256(&manifest);
    (manifest, digest)
}

pub async fn put_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Response {
    c.put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}
