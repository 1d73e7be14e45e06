//! A layer over 5 GiB on a real S3-compatible store (Garage). S3 refuses a server-side
//! copy of more than 5 GiB, and model or ML images routinely have larger layers, so
//! wharf must never commit one with a single copy. Both ways a push can end in one
//! chunk are tried: the whole layer in the final PUT, and the whole layer in one PATCH
//! followed by an empty PUT. The layer is generated while it is sent (it is never
//! stored on the client's side). Afterwards Garage's own request log must show that no
//! request under this test's prefix was a copy (`x-amz-copy-source`), and the layer,
//! pulled back, must have its digest.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};
use support::{serve_command, S3Server, TestServer};

/// 6 GiB: over S3's copy limit by a whole GiB.
const LAYER_BYTES: u64 = 6 << 30;
/// The generator's block: each one is unique (it starts with its number), so a block
/// lost, repeated or swapped anywhere changes the digest.
const BLOCK: usize = 1 << 20;

/// Block `index` of the layer tagged `tag`: a fixed pseudo-random MiB, stamped with
/// the tag and the block's number.
fn block(pattern: &[u8], tag: u64, index: u64) -> Bytes {
    let mut b = pattern.to_vec();
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&index.to_le_bytes());
    Bytes::from(b)
}

fn blocks() -> u64 {
    LAYER_BYTES / BLOCK as u64
}

fn layer_digest(pattern: &[u8], tag: u64) -> String {
    let mut h = Sha256::new();
    for i in 0..blocks() {
        h.update(block(pattern, tag, i));
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The layer as a request body, generated block by block as it is sent.
fn layer_body(pattern: Vec<u8>, tag: u64) -> reqwest::Body {
    let stream = futures_util::stream::iter(0..blocks())
        .map(move |i| Ok::<_, std::io::Error>(block(&pattern, tag, i)));
    reqwest::Body::wrap_stream(stream)
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{base}{location}")
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Opens an upload session; returns where to send its data.
async fn open_session(http: &Client, server: &TestServer, repo: &str) -> String {
    let r = http
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    absolute(&server.base, r.headers()["location"].to_str().unwrap())
}

/// Pulls the blob and returns its digest and length, hashing as it streams.
async fn pull(http: &Client, url: &str) -> (String, u64) {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {url}");
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len() as u64;
        h.update(&chunk);
    }
    (format!("sha256:{}", hex::encode(h.finalize())), len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_6_gib_layer_is_never_committed_with_one_copy_on_garage() {
    let (Some(s3), Some(log)) = (
        S3Server::garage(),
        support::env_or_skip("WHARF_TEST_GARAGE_LOG"),
    ) else {
        return;
    };
    let prefix = format!("large-layers-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .args(["--blobs", &format!("s3://wharf-test/{prefix}")])
        .arg("--data-dir")
        .arg(tmp.path());
    s3.configure(&mut cmd);
    let server = TestServer::launch(cmd, tmp.path());
    let http = Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()
        .unwrap();
    let repo = "models/large";
    let pattern = support::pseudo_random(0, BLOCK);

    // 1. The whole layer in the final PUT.
    let put_digest = layer_digest(&pattern, 1);
    let location = open_session(&http, &server, repo).await;
    let r = http
        .put(with_digest(&location, &put_digest))
        .header("content-type", "application/octet-stream")
        .header("content-length", LAYER_BYTES)
        .body(layer_body(pattern.clone(), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // 2. The whole layer in one PATCH, then the PUT without a body.
    let patch_digest = layer_digest(&pattern, 2);
    let location = open_session(&http, &server, repo).await;
    let r = http
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .header("content-length", LAYER_BYTES)
        .body(layer_body(pattern.clone(), 2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", LAYER_BYTES - 1)
    );
    let location = absolute(&server.base, r.headers()["location"].to_str().unwrap());
    let r = http
        .put(with_digest(&location, &patch_digest))
        .header("content-length", 0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // What wharf asked of the store, from the store's own log: every request under
    // this test's prefix, none of them a server-side copy.
    let log = std::fs::read_to_string(&log).unwrap();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Request {") && l.contains(&format!("/wharf-test/{prefix}/")))
        .collect();
    let copies: Vec<&&str> = ours
        .iter()
        .filter(|l| l.contains("x-amz-copy-source"))
        .collect();
    assert!(
        copies.is_empty(),
        "wharf asked Garage for server-side copies: {copies:#?}"
    );
    // The commits ran as multipart uploads into the blobs' own keys.
    for digest in [&put_digest, &patch_digest] {
        let hex = digest.trim_start_matches("sha256:");
        let parts = ours
            .iter()
            .filter(|l| l.contains(&format!("blobs/sha256/{hex}?")) && l.contains("partNumber="))
            .count();
        assert!(
            parts >= 2,
            "the commit of {digest} did not write parts: {parts} part requests logged"
        );
    }

    // Both layers pull back whole, through a HEAD that states their size first.
    for digest in [&put_digest, &patch_digest] {
        let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = http.head(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["content-length"].to_str().unwrap(),
            LAYER_BYTES.to_string()
        );
        assert_eq!(pull(&http, &url).await, (digest.clone(), LAYER_BYTES));
    }
}
