//! Online garbage collection and the metadatastoremigration job on a real `wharf
//! serve`: what is unreferenced goes, what an image needs stays, and GC refuses to run
//! while manifests stored by an older release lack their references.

mod support;

#[path = "support/http.rs"]
mod http;

#[path = "support/secure.rs"]
mod secure;

use std::time::Duration;

use http::{client, push_blob, push_image};
use reqwest::StatusCode;
use secure::{run_fails, run_ok, wharf_cmd};
use support::{sha256, TestServer};

const LIMIT: Duration = Duration::from_secs(120);

fn start(data: &std::path::Path) -> TestServer {
    TestServer::start_in(
        data,
        &["--job-heartbeat-secs", "1", "--job-retry-backoff-secs", "1"],
        &[],
    )
}

fn cmd(args: &[&str], data: &std::path::Path) -> tokio::process::Command {
    let mut c = wharf_cmd(args);
    c.arg("--data-dir").arg(data);
    c
}

fn blob_file(data: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

async fn status(c: &reqwest::Client, url: String) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}

#[tokio::test]
async fn gc_removes_unreferenced_blobs_and_keeps_every_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    let (manifest, _) = push_image(&c, &server.base, "team/app", "v1", "kept").await;
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = image["layers"][0]["digest"].as_str().unwrap().to_string();
    // A blob pushed and never used by a manifest (an abandoned push).
    let garbage = b"a layer nobody refers to".repeat(100);
    let garbage_digest = push_blob(&c, &server.base, "team/app", &garbage).await;
    assert!(blob_file(&data, &garbage_digest).exists());

    // Within the default grace period (24 h) nothing goes.
    let out = run_ok(cmd(&["gc", "--dry-run"], &data), None, LIMIT).await;
    assert!(
        out.contains("would free 0 manifests, 0 links, 0 blobs, 0 bytes"),
        "{out}"
    );
    let out = run_ok(
        cmd(&["gc", "--dry-run", "--grace-secs", "0"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains(&format!(
            "would free 0 manifests, 1 links, 1 blobs, {} bytes",
            garbage.len()
        )),
        "{out}"
    );
    assert!(
        blob_file(&data, &garbage_digest).exists(),
        "a dry run deletes nothing"
    );

    // The real run, as a job on the serving replica.
    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(
        out.contains(&format!(
            "done: freed 0 manifests, 1 links, 1 blobs, {} bytes",
            garbage.len()
        )),
        "{out}"
    );
    assert!(
        !blob_file(&data, &garbage_digest).exists(),
        "the bytes are gone"
    );
    let base = &server.base;
    assert_eq!(
        status(&c, format!("{base}/v2/team/app/blobs/{garbage_digest}")).await,
        StatusCode::NOT_FOUND
    );
    // The image is whole.
    let r = c
        .get(format!("{base}/v2/team/app/manifests/v1"))
        .header("accept", http::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .get(format!("{base}/v2/team/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    // Untagged manifests go only when asked.
    c.delete(format!("{base}/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(out.contains("freed 0 manifests"), "{out}");
}

#[tokio::test]
async fn gc_waits_for_the_migration_of_older_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    let (manifest, _) = push_image(&c, &server.base, "team/old", "v1", "stored by 1.0.0").await;
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = image["layers"][0]["digest"].as_str().unwrap().to_string();
    // The manifest as release 1.0.0 left it: no recorded references.
    let db = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    db.execute_batch("DELETE FROM manifest_refs; UPDATE manifests SET refs_recorded = 0;")
        .unwrap();
    drop(db);

    // GC refuses (three attempts, then error), saying what to do.
    let out = run_fails(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(
        out.contains("gc job") && out.contains("ended error"),
        "{out}"
    );
    assert!(
        out.contains("disabled until the metadatastoremigration job has completed: 1 manifests"),
        "{out}"
    );
    assert_eq!(
        out.matches("failed: garbage collection is disabled")
            .count(),
        3,
        "{out}"
    );
    assert!(blob_file(&data, &layer).exists(), "nothing was collected");

    let out = run_ok(
        cmd(&["jobs", "run", "metadatastoremigration", "--wait"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("1 manifests need their references recorded"),
        "{out}"
    );
    assert!(
        out.contains("done: references recorded for 1 manifests"),
        "{out}"
    );
    // Run twice: nothing counted twice.
    let out = run_ok(
        cmd(&["jobs", "run", "metadatastoremigration", "--wait"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("done: references recorded for 0 manifests"),
        "{out}"
    );

    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(out.contains("freed 0 manifests, 0 links, 0 blobs"), "{out}");
    let r = c
        .get(format!("{}/v2/team/old/blobs/{layer}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the image's layer survived");
}
