//! The distribution spec, one requirement per test, against a real `wharf serve`.
//! Each test is named after the requirement it checks.

#[path = "support/http.rs"]
mod http;
mod support;

use http::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{sha256, TestServer};

const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ---------------------------------------------------------------- base, version

#[tokio::test]
async fn base_endpoint_answers_200_with_api_version_header() {
    let s = TestServer::start();
    let r = client().get(s.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn version_endpoint_reports_version_commit_and_schema_level() {
    let s = TestServer::start();
    let v: Value = client()
        .get(s.url("/api/v0/meta/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(v["schema_level"], wharf_server::SCHEMA_LEVEL);
}

// ---------------------------------------------------------------- pulling blobs

#[tokio::test]
async fn blob_get_returns_content_with_digest_header() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "pull/blob", b"some blob content").await;
    let r = c
        .get(s.url(&format!("/v2/pull/blob/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "content-length"), "17");
    assert_eq!(r.bytes().await.unwrap(), &b"some blob content"[..]);
}

#[tokio::test]
async fn blob_head_returns_length_and_digest_without_body() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "pull/head", b"0123456789").await;
    let r = c
        .head(s.url(&format!("/v2/pull/head/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn blob_get_with_range_returns_206_and_content_range() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "pull/range", b"0123456789").await;
    let url = s.url(&format!("/v2/pull/range/blobs/{d}"));
    let r = c
        .get(&url)
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 2-5/10");
    assert_eq!(r.bytes().await.unwrap(), &b"2345"[..]);
    let r = c
        .get(&url)
        .header("range", "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"789"[..]);
}

#[tokio::test]
async fn blob_get_with_unsatisfiable_range_returns_416() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "pull/range", b"0123456789").await;
    let r = c
        .get(s.url(&format!("/v2/pull/range/blobs/{d}")))
        .header("range", "bytes=10-20")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */10");
    assert_error(r, 416, "RANGE_INVALID").await;
}

#[tokio::test]
async fn blob_unknown_returns_404_blob_unknown() {
    let s = TestServer::start();
    let r = client()
        .get(s.url(&format!("/v2/none/blobs/{EMPTY_DIGEST}")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn blob_is_only_served_from_repositories_that_have_it() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "owner/repo", b"private layer").await;
    let r = c
        .get(s.url(&format!("/v2/other/repo/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "BLOB_UNKNOWN").await;
}

// ---------------------------------------------------------------- pushing blobs

#[tokio::test]
async fn upload_post_returns_202_with_location_and_upload_uuid() {
    let s = TestServer::start();
    let r = client()
        .post(s.url("/v2/push/a/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/push/a/blobs/uploads/"), "{loc}");
    assert!(loc.ends_with(&header(&r, "docker-upload-uuid")));
    assert_eq!(header(&r, "range"), "0-0");
}

#[tokio::test]
async fn monolithic_put_returns_201_with_blob_location_and_digest() {
    let s = TestServer::start();
    let c = client();
    let r = c
        .post(s.url("/v2/push/mono/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let d = sha256(b"monolithic");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .body("monolithic")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/push/mono/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    // The session is over.
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn single_post_with_digest_stores_the_blob() {
    let s = TestServer::start();
    let c = client();
    let d = sha256(b"single request");
    let r = c
        .post(s.url(&format!("/v2/push/single/blobs/uploads/?digest={d}")))
        .body("single request")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/push/single/blobs/{d}"));
    let r = c
        .get(s.url(&format!("/v2/push/single/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"single request"[..]);
}

#[tokio::test]
async fn empty_blob_can_be_pushed() {
    let s = TestServer::start();
    let c = client();
    assert_eq!(
        push_blob(&c, &s.base, "push/empty", b"").await,
        EMPTY_DIGEST
    );
    let r = c
        .head(s.url(&format!("/v2/push/empty/blobs/{EMPTY_DIGEST}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "content-length")),
        (200, "0".into())
    );
}

#[tokio::test]
async fn wrong_digest_is_refused_with_digest_invalid_and_nothing_is_stored() {
    let s = TestServer::start();
    let c = client();
    let claimed = sha256(b"what the client claims");
    let r = c
        .post(s.url(&format!("/v2/push/bad/blobs/uploads/?digest={claimed}")))
        .body("other bytes")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
    let r = c
        .head(s.url(&format!("/v2/push/bad/blobs/{claimed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let actual = sha256(b"other bytes");
    let r = c
        .head(s.url(&format!("/v2/push/bad/blobs/{actual}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sha512_digests_are_verified() {
    let s = TestServer::start();
    let c = client();
    let mut h = wharf_oci::Hasher::new(wharf_oci::Algorithm::Sha512);
    h.update(b"sha512 content");
    let d = h.finish().to_string();
    let r = c
        .post(s.url(&format!("/v2/push/sha512/blobs/uploads/?digest={d}")))
        .body("sha512 content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/push/sha512/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), &b"sha512 content"[..]);
    let r = c
        .post(s.url(&format!("/v2/push/sha512/blobs/uploads/?digest={d}")))
        .body("tampered")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn chunked_upload_patch_returns_202_with_range_then_put_completes() {
    let s = TestServer::start();
    let c = client();
    let r = c
        .post(s.url("/v2/push/chunked/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let mut loc = header(&r, "location");
    for (i, chunk) in [&b"0123"[..], b"4567", b"89"].iter().enumerate() {
        let start = i * 4;
        let end = start + chunk.len() - 1;
        let r = c
            .patch(s.url(&loc))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), format!("0-{end}"));
        loc = header(&r, "location");
    }
    let d = sha256(b"0123456789");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url(&format!("/v2/push/chunked/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"0123456789"[..]);
}

#[tokio::test]
async fn chunked_upload_final_put_may_carry_the_last_chunk() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/last/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-4")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(b"hello, world");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .body(", world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn streamed_patch_without_content_range_appends() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/stream/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(s.url(&loc)).body("abc").send().await.unwrap();
    let r = c.patch(s.url(&loc)).body("def").send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-5");
    let d = sha256(b"abcdef");
    assert_eq!(
        c.put(s.url(&format!("{loc}?digest={d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn out_of_order_chunk_returns_416_with_current_range() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/ooo/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(s.url(&loc))
        .header("content-range", "0-3")
        .body("0123")
        .send()
        .await
        .unwrap();
    // A gap.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "8-11")
        .body("89ab")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "range"), "0-3");
    assert!(header(&r, "location").ends_with(loc.rsplit('/').next().unwrap()));
    assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    // An overlap.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "2-5")
        .body("2345")
        .send()
        .await
        .unwrap();
    assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    // The session is intact and continues from where it was.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "4-7")
        .body("4567")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "range")),
        (202, "0-7".into())
    );
}

#[tokio::test]
async fn chunk_whose_length_disagrees_with_content_range_is_refused() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/len/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "0-9")
        .body("0123")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "SIZE_INVALID").await;
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-0", "nothing was recorded");
}

#[tokio::test]
async fn upload_status_returns_204_with_range_and_location() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/status/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(s.url(&loc))
        .header("content-range", "0-9")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-9");
    assert_eq!(header(&r, "location"), loc);
}

#[tokio::test]
async fn upload_cancel_returns_204_and_the_session_is_gone() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/cancel/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(s.url(&loc)).body("data").send().await.unwrap();
    assert_eq!(
        c.delete(s.url(&loc)).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        c.get(s.url(&loc)).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        c.delete(s.url(&loc)).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(
        std::fs::read_dir(s.data_dir.join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "upload data removed"
    );
}

#[tokio::test]
async fn unknown_upload_returns_404_blob_upload_unknown() {
    let s = TestServer::start();
    let c = client();
    let url = s.url("/v2/push/x/blobs/uploads/00000000-0000-4000-8000-000000000000");
    assert_error(
        c.get(&url).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_error(
        c.patch(&url).body("x").send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    let r = c
        .put(format!("{url}?digest={EMPTY_DIGEST}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn upload_session_belongs_to_its_repository() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/mine/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let id = loc.rsplit('/').next().unwrap();
    let r = c
        .get(s.url(&format!("/v2/push/theirs/blobs/uploads/{id}")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn put_without_digest_is_refused() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/nodigest/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    assert_error(
        c.put(s.url(&loc)).body("x").send().await.unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
}

// ---------------------------------------------------------------- mounting

#[tokio::test]
async fn mount_from_another_repository_returns_201() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "mount/src", b"shared layer").await;
    let r = c
        .post(s.url(&format!(
            "/v2/mount/dst/blobs/uploads/?mount={d}&from=mount/src"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/mount/dst/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    let r = c
        .get(s.url(&format!("/v2/mount/dst/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"shared layer"[..]);
}

#[tokio::test]
async fn mount_without_from_returns_201_when_the_blob_exists() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "mount/a", b"layer").await;
    let r = c
        .post(s.url(&format!("/v2/mount/b/blobs/uploads/?mount={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn mount_of_an_unknown_blob_falls_back_to_an_upload_session() {
    let s = TestServer::start();
    let c = client();
    let d = sha256(b"nowhere");
    let r = c
        .post(s.url(&format!(
            "/v2/mount/b/blobs/uploads/?mount={d}&from=mount/a"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/mount/b/blobs/uploads/"));
    // Mounting from a repository that lacks it falls back too.
    let real = push_blob(&c, &s.base, "mount/has", b"x").await;
    let r = c
        .post(s.url(&format!(
            "/v2/mount/b/blobs/uploads/?mount={real}&from=mount/lacks"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------- manifests

#[tokio::test]
async fn manifest_put_by_tag_returns_201_with_location_and_digest() {
    let s = TestServer::start();
    let c = client();
    let config = b"{}";
    push_blob(&c, &s.base, "m/put", config).await;
    let m = image_manifest(config, &[]);
    let r = put_manifest(&c, &s.base, "m/put", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let d = sha256(&m);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/m/put/manifests/{d}"));
}

#[tokio::test]
async fn manifest_get_by_tag_and_digest_returns_the_exact_bytes() {
    let s = TestServer::start();
    let c = client();
    let (m, d) = push_image(&c, &s.base, "m/get", "latest", "get").await;
    for reference in ["latest", d.as_str()] {
        let r = c
            .get(s.url(&format!("/v2/m/get/manifests/{reference}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap(), m);
    }
}

#[tokio::test]
async fn manifest_head_returns_digest_type_and_length() {
    let s = TestServer::start();
    let c = client();
    let (m, d) = push_image(&c, &s.base, "m/head", "latest", "head").await;
    let r = c
        .head(s.url("/v2/m/head/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "content-length"), m.len().to_string());
    assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
}

#[tokio::test]
async fn manifest_unknown_returns_404_manifest_unknown() {
    let s = TestServer::start();
    let c = client();
    assert_error(
        c.get(s.url("/v2/m/none/manifests/latest"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = c
        .get(s.url(&format!("/v2/m/none/manifests/{EMPTY_DIGEST}")))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn manifest_referencing_a_missing_blob_is_refused() {
    let s = TestServer::start();
    let c = client();
    let config = b"{}";
    push_blob(&c, &s.base, "m/missing", config).await;
    let m = image_manifest(config, &[b"never pushed"]);
    let r = put_manifest(&c, &s.base, "m/missing", "v1", OCI_MANIFEST, &m).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let r = c
        .get(s.url("/v2/m/missing/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");
}

#[tokio::test]
async fn manifest_put_by_digest_must_match_its_content() {
    let s = TestServer::start();
    let c = client();
    let config = b"{}";
    push_blob(&c, &s.base, "m/dig", config).await;
    let m = image_manifest(config, &[]);
    let r = put_manifest(&c, &s.base, "m/dig", EMPTY_DIGEST, OCI_MANIFEST, &m).await;
    assert_error(r, 400, "DIGEST_INVALID").await;
    let r = put_manifest(&c, &s.base, "m/dig", &sha256(&m), OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_manifest_invalid() {
    let s = TestServer::start();
    let c = client();
    let bodies: [(&str, &[u8]); 5] = [
        (OCI_MANIFEST, b"not json"),
        (OCI_MANIFEST, br#"{"schemaVersion":1}"#),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        ),
        (DOCKER_MANIFEST, &image_manifest(b"{}", &[])),
        (
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1}"#,
        ),
    ];
    for (ct, body) in bodies {
        let r = put_manifest(&c, &s.base, "m/invalid", "v1", ct, body).await;
        assert_error(r, 400, "MANIFEST_INVALID").await;
    }
}

#[tokio::test]
async fn manifest_over_the_size_limit_returns_413() {
    let s = TestServer::start_with(&["--max-manifest-bytes", "1000"], &[]);
    let c = client();
    let config = b"{}";
    push_blob(&c, &s.base, "m/big", config).await;
    let mut m: Value = serde_json::from_slice(&image_manifest(config, &[])).unwrap();
    m["annotations"] = json!({ "padding": "x".repeat(2000) });
    let r = put_manifest(
        &c,
        &s.base,
        "m/big",
        "v1",
        OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    )
    .await;
    assert_error(r, 413, "MANIFEST_INVALID").await;
}

#[tokio::test]
async fn index_requires_its_manifests_and_roundtrips() {
    let s = TestServer::start();
    let c = client();
    let (amd, amd_d) = push_image(&c, &s.base, "m/index", "amd", "amd64").await;
    let (arm, arm_d) = push_image(&c, &s.base, "m/index", "arm", "arm64").await;
    let index = |children: &[(&[u8], &str)]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|(m, arch)| {
                let mut d = descriptor(OCI_MANIFEST, m);
                d["platform"] = json!({"os": "linux", "architecture": arch});
                d
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    };
    let missing = image_manifest(b"{\"x\":1}", &[]);
    let r = put_manifest(
        &c,
        &s.base,
        "m/index",
        "multi",
        OCI_INDEX,
        &index(&[(&amd, "amd64"), (&missing, "s390x")]),
    )
    .await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let r = put_manifest(&c, &s.base, "m/index", "multi", OCI_INDEX, &idx).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(s.url("/v2/m/index/manifests/multi"))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(r.bytes().await.unwrap(), idx);
    // A client that accepts only image manifests gets the linux/amd64 one.
    let r = c
        .get(s.url("/v2/m/index/manifests/multi"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), amd_d);
    assert_ne!(amd_d, arm_d);
    // One that accepts neither gets a clear 404.
    let r = c
        .get(s.url("/v2/m/index/manifests/multi"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list_roundtrip() {
    let s = TestServer::start();
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"docker layer";
    push_blob(&c, &s.base, "m/docker", config).await;
    push_blob(&c, &s.base, "m/docker", layer).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", config),
        "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)],
    }))
    .unwrap();
    assert_eq!(
        put_manifest(&c, &s.base, "m/docker", "v2", DOCKER_MANIFEST, &m)
            .await
            .status(),
        StatusCode::CREATED
    );
    let mut entry = descriptor(DOCKER_MANIFEST, &m);
    entry["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let list = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [entry]}),
    )
    .unwrap();
    assert_eq!(
        put_manifest(&c, &s.base, "m/docker", "list", DOCKER_LIST, &list)
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = c
        .get(s.url("/v2/m/docker/manifests/list"))
        .header("accept", DOCKER_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.bytes().await.unwrap(), list);
    let r = c
        .get(s.url("/v2/m/docker/manifests/v2"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), m);
}

#[tokio::test]
async fn retagging_moves_the_tag_to_the_new_manifest() {
    let s = TestServer::start();
    let c = client();
    push_image(&c, &s.base, "m/retag", "latest", "one").await;
    let (_, second) = push_image(&c, &s.base, "m/retag", "latest", "two").await;
    let r = c
        .head(s.url("/v2/m/retag/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), second);
}

#[tokio::test]
async fn manifests_are_readable_through_the_blob_endpoint() {
    let s = TestServer::start();
    let c = client();
    let (m, d) = push_image(&c, &s.base, "m/asblob", "latest", "asblob").await;
    let r = c
        .get(s.url(&format!("/v2/m/asblob/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), m);
}

// ---------------------------------------------------------------- referrers

#[tokio::test]
async fn manifest_with_subject_returns_oci_subject_and_is_listed_by_referrers() {
    let s = TestServer::start();
    let c = client();
    let (subject_m, subject) = push_image(&c, &s.base, "r/app", "latest", "subject").await;
    let empty = b"{}";
    push_blob(&c, &s.base, "r/app", empty).await;
    let sig = b"signature bytes";
    push_blob(&c, &s.base, "r/app", sig).await;
    let mut push_artifact = Vec::new();
    for artifact_type in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor("application/vnd.oci.empty.v1+json", empty),
            "layers": [descriptor("application/octet-stream", sig)],
            "subject": descriptor(OCI_MANIFEST, &subject_m),
            "annotations": {"org.example.kind": artifact_type},
        }))
        .unwrap();
        let r = put_manifest(&c, &s.base, "r/app", &sha256(&m), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), subject);
        push_artifact.push(sha256(&m));
    }
    let r = c
        .get(s.url(&format!("/v2/r/app/referrers/{subject}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert_eq!(header(&r, "oci-filters-applied"), "");
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    let r = c
        .get(s.url(&format!(
            "/v2/r/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = r.json().await.unwrap();
    let only = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(only["digest"], push_artifact[1]);
    assert_eq!(only["artifactType"], "application/vnd.example.sbom");
    assert_eq!(
        only["annotations"]["org.example.kind"],
        "application/vnd.example.sbom"
    );
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_is_an_empty_index_not_404() {
    let s = TestServer::start();
    let r = client()
        .get(s.url(&format!("/v2/r/none/referrers/{EMPTY_DIGEST}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]));
    let r = client()
        .get(s.url("/v2/r/none/referrers/sha256:nothex"))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
}

// ---------------------------------------------------------------- deletion

#[tokio::test]
async fn deleting_a_tag_returns_202_and_keeps_the_manifest() {
    let s = TestServer::start();
    let c = client();
    let (_, d) = push_image(&c, &s.base, "d/tag", "v1", "deltag").await;
    assert_eq!(
        c.delete(s.url("/v2/d/tag/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.get(s.url("/v2/d/tag/manifests/v1"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = c
        .get(s.url(&format!("/v2/d/tag/manifests/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_error(
        c.delete(s.url("/v2/d/tag/manifests/v1"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn deleting_a_manifest_by_digest_removes_it_and_its_tags() {
    let s = TestServer::start();
    let c = client();
    let (m, d) = push_image(&c, &s.base, "d/man", "v1", "delman").await;
    put_manifest(&c, &s.base, "d/man", "v2", OCI_MANIFEST, &m).await;
    assert_eq!(
        c.delete(s.url(&format!("/v2/d/man/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    for reference in ["v1", "v2", d.as_str()] {
        let r = c
            .get(s.url(&format!("/v2/d/man/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_error(r, 404, "MANIFEST_UNKNOWN").await;
    }
    let tags: Value = c
        .get(s.url("/v2/d/man/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], json!([]));
}

#[tokio::test]
async fn deleting_a_blob_returns_202_then_it_is_unknown() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "d/blob", b"to delete").await;
    let url = s.url(&format!("/v2/d/blob/blobs/{d}"));
    assert_eq!(
        c.delete(&url).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_error(c.get(&url).send().await.unwrap(), 404, "BLOB_UNKNOWN").await;
    assert_error(c.delete(&url).send().await.unwrap(), 404, "BLOB_UNKNOWN").await;
}

// ---------------------------------------------------------------- listing

#[tokio::test]
async fn tags_list_paginates_with_n_last_and_link() {
    let s = TestServer::start();
    let c = client();
    let (m, _) = push_image(&c, &s.base, "l/tags", "t0", "tags").await;
    for t in ["t3", "t1", "t2", "t4"] {
        put_manifest(&c, &s.base, "l/tags", t, OCI_MANIFEST, &m).await;
    }
    let r = c.get(s.url("/v2/l/tags/tags/list")).send().await.unwrap();
    assert_eq!(header(&r, "link"), "");
    let all: Value = r.json().await.unwrap();
    assert_eq!(
        all,
        json!({"name": "l/tags", "tags": ["t0", "t1", "t2", "t3", "t4"]})
    );
    let r = c
        .get(s.url("/v2/l/tags/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        r#"</v2/l/tags/tags/list?n=2&last=t1>; rel="next""#
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["t0", "t1"])
    );
    let r = c
        .get(s.url("/v2/l/tags/tags/list?n=2&last=t3"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "link"), "");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["t4"]));
    let r = c
        .get(s.url("/v2/l/tags/tags/list?n=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = c
        .get(s.url("/v2/l/tags/tags/list?n=abc"))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "PAGINATION_NUMBER_INVALID").await;
}

#[tokio::test]
async fn tags_list_of_an_unknown_repository_is_404_name_unknown() {
    let s = TestServer::start();
    assert_error(
        client()
            .get(s.url("/v2/l/none/tags/list"))
            .send()
            .await
            .unwrap(),
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn catalog_lists_repositories_of_any_depth_with_pagination() {
    let s = TestServer::start();
    let c = client();
    for repo in ["c", "a/b/c/d/e", "b/x"] {
        push_blob(&c, &s.base, repo, repo.as_bytes()).await;
    }
    let all: Value = c
        .get(s.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["repositories"], json!(["a/b/c/d/e", "b/x", "c"]));
    let r = c
        .get(s.url("/v2/_catalog?n=1&last=a/b/c/d/e"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "link"),
        r#"</v2/_catalog?n=1&last=b%2Fx>; rel="next""#
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["repositories"],
        json!(["b/x"])
    );
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn invalid_repository_names_return_400_name_invalid() {
    let s = TestServer::start();
    let c = client();
    for name in [
        "UPPER",
        "a//b",
        "-lead",
        "a%2Fb",
        "a%2e%2e/b",
        "a..b",
        &"x".repeat(256),
    ] {
        let r = c
            .get(s.url(&format!("/v2/{name}/tags/list")))
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "NAME_INVALID").await;
    }
    // HTTP clients normalise `..` away, so send the traversal attempt raw.
    let push = format!("PUT /v2/a/../../etc/blobs/uploads/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", s.addr);
    assert!(
        raw_request(&s.addr, &push).starts_with("HTTP/1.1 400"),
        "traversal refused"
    );
    let get = format!(
        "GET /v2/a/../b/tags/list HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        s.addr
    );
    let resp = raw_request(&s.addr, &get);
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("NAME_INVALID"),
        "{resp}"
    );
}

/// Sends bytes as they are (no URL normalisation) and returns the whole response.
fn raw_request(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn invalid_digests_and_tags_return_400() {
    let s = TestServer::start();
    let c = client();
    assert_error(
        c.get(s.url("/v2/x/blobs/sha256:short"))
            .send()
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(
        c.get(s.url("/v2/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"))
            .send()
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    // A tag that cannot exist names no manifest (404); pushing to it is a bad request.
    assert_error(
        c.get(s.url("/v2/x/manifests/.bad")).send().await.unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let r = c.head(s.url("/v2/x/manifests/.bad")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = put_manifest(&c, &s.base, "x", ".bad", OCI_MANIFEST, b"{}").await;
    assert_error(r, 400, "TAG_INVALID").await;
    let r = c
        .post(s.url("/v2/x/blobs/uploads/?digest=nonsense"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn unsupported_methods_return_405_unsupported() {
    let s = TestServer::start();
    let c = client();
    assert_error(
        c.post(s.url("/v2/x/tags/list")).send().await.unwrap(),
        405,
        "UNSUPPORTED",
    )
    .await;
    assert_error(
        c.put(s.url(&format!("/v2/x/blobs/{EMPTY_DIGEST}")))
            .send()
            .await
            .unwrap(),
        405,
        "UNSUPPORTED",
    )
    .await;
    let r = c.post(s.url("/v2/x/tags/list")).send().await.unwrap();
    assert_eq!(header(&r, "allow"), "GET");
}

#[tokio::test]
async fn unknown_endpoints_return_404_in_the_error_format() {
    let s = TestServer::start();
    assert_error(
        client().get(s.url("/v2/x/unknown")).send().await.unwrap(),
        404,
        "UNSUPPORTED",
    )
    .await;
}

#[tokio::test]
async fn bad_input_never_breaks_the_server() {
    let s = TestServer::start();
    let c = client();
    // A body shorter than its Content-Length, cut off by the client.
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(b"only part".to_vec())]);
    let loc = header(
        &c.post(s.url("/v2/bad/trunc/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = c
        .patch(s.url(&loc))
        .header("content-length", "1000")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    // Either the client notices the short body or the server refuses it.
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let r = c.get(s.url(&loc)).send().await.unwrap();
    assert_eq!(
        header(&r, "range"),
        "0-0",
        "a truncated chunk is not recorded"
    );
    // Garbage headers and bodies.
    let r = c
        .patch(s.url(&loc))
        .header("content-range", "zzz")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    let r = c
        .get(s.url("/v2/bad/x/blobs/uploads/not..an..id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // The server is still healthy.
    assert_eq!(
        c.get(s.url("/v2/")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn upload_status_answers_head_too() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/head/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = c.head(s.url(&loc)).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "range")),
        (204, "0-0".to_string())
    );
}

#[tokio::test]
async fn mount_with_a_malformed_digest_falls_back_to_an_upload_session() {
    let s = TestServer::start();
    let r = client()
        .post(s.url("/v2/mount/x/blobs/uploads/?mount=sha256:nothex&from=mount/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn range_headers_that_are_not_understood_are_ignored() {
    let s = TestServer::start();
    let c = client();
    let d = push_blob(&c, &s.base, "pull/ign", b"0123456789").await;
    for range in ["items=0-3", "bytes=0-1,4-5", "bytes=x-y"] {
        let r = c
            .get(s.url(&format!("/v2/pull/ign/blobs/{d}")))
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(r.bytes().await.unwrap(), &b"0123456789"[..]);
    }
}

#[tokio::test]
async fn closing_put_checks_its_content_range() {
    let s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/push/close/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(s.url(&loc))
        .header("content-range", "0-3")
        .body("0123")
        .send()
        .await
        .unwrap();
    let d = sha256(b"012345");
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "6-7")
        .body("45")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "range"), "0-3");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    let r = c
        .put(s.url(&format!("{loc}?digest={d}")))
        .header("content-range", "4-5")
        .body("45")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn docker_manifests_are_served_whatever_the_accept_header() {
    let s = TestServer::start();
    let c = client();
    let config = br#"{"os":"linux"}"#;
    push_blob(&c, &s.base, "neg/docker", config).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", config),
        "layers": [],
    }))
    .unwrap();
    put_manifest(&c, &s.base, "neg/docker", "v1", DOCKER_MANIFEST, &m).await;
    let r = c
        .get(s.url("/v2/neg/docker/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST);
    assert_eq!(r.bytes().await.unwrap(), m);
}

#[tokio::test]
async fn an_index_asked_for_by_digest_is_never_swapped_for_a_platform_manifest() {
    let s = TestServer::start();
    let c = client();
    let (amd, _) = push_image(&c, &s.base, "neg/idx", "amd", "amd64").await;
    let mut entry = descriptor(OCI_MANIFEST, &amd);
    entry["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let idx = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}),
    )
    .unwrap();
    put_manifest(&c, &s.base, "neg/idx", "multi", OCI_INDEX, &idx).await;
    let r = c
        .get(s.url(&format!("/v2/neg/idx/manifests/{}", sha256(&idx))))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "MANIFEST_UNKNOWN").await;
}
