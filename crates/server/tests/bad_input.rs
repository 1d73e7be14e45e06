//! Property test: whatever method, path, headers and body a client sends, the server
//! answers with a status below 500 and, for errors, the spec's JSON error body. Runs
//! the real router in-process over the SQLite and in-memory stores.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use proptest::prelude::*;
use tower::ServiceExt;
use wharf_auth::{AuthConfig, Authenticator};
use wharf_blobstore::MemoryBlobStore;
use wharf_metastore::SqliteMetaStore;
use wharf_registry::{Limits, Registry};
use wharf_server::{router, AppState, ServerInfo, Settings};

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v2".to_string()),
        Just("blobs".to_string()),
        Just("uploads".to_string()),
        Just("manifests".to_string()),
        Just("tags".to_string()),
        Just("list".to_string()),
        Just("referrers".to_string()),
        Just("_catalog".to_string()),
        Just("..".to_string()),
        Just("".to_string()),
        Just(D.to_string()),
        Just("latest".to_string()),
        Just("00000000-0000-4000-8000-000000000000".to_string()),
        "[a-z0-9._-]{1,12}",
        "[ -~]{0,16}".prop_map(|s| s.replace(['?', '#', ' '], "")),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::PATCH),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
    ]
}

fn header() -> impl Strategy<Value = (&'static str, String)> {
    let name = prop_oneof![
        Just("content-range"),
        Just("range"),
        Just("content-type"),
        Just("accept"),
    ];
    let value = prop_oneof![
        "[0-9]{1,3}-[0-9]{1,3}",
        "bytes=[0-9]{0,3}-[0-9]{0,3}",
        Just("application/vnd.oci.image.manifest.v1+json".to_string()),
        Just("application/vnd.oci.image.index.v1+json".to_string()),
        "[ -~]{0,20}",
    ];
    (name, value)
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(format!("?digest={D}")),
        Just(format!("?mount={D}&from=a")),
        Just("?n=2&last=a".to_string()),
        Just("?n=-1".to_string()),
        Just("?artifactType=x".to_string()),
        "\\?[a-z]{1,5}=[ -~]{0,10}".prop_map(|s| s.replace(['#', ' '], "")),
    ]
}

async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMetaStore::open(dir.path().join("m.db"))
        .await
        .unwrap();
    let meta: Arc<dyn wharf_metastore::MetaStore> = Arc::new(meta);
    let auth = Authenticator::new(meta.clone(), AuthConfig::default())
        .await
        .unwrap();
    let registry = Registry::new(meta, Arc::new(MemoryBlobStore::new()), Limits::default());
    let caches = Arc::new(wharf_server::content_cache::CacheRouting::new(
        &wharf_server::content_cache::seeds(&auth),
        std::time::Duration::from_secs(120),
    ));
    let state = AppState {
        proxies: wharf_proxy::Proxies::new(registry.clone()),
        registry,
        auth: Arc::new(auth),
        // Authentication off: the requests must reach every handler, and bad input must
        // be refused there, not merely by the access check in front of it.
        settings: Arc::new(Settings {
            auth_enabled: false,
            tls: false,
            token_realm: None,
            heartbeat_interval: std::time::Duration::from_secs(5),
            job_heartbeat: std::time::Duration::from_secs(5),
            vulndb_stale_after: std::time::Duration::from_secs(7 * 24 * 3600),
            config: Arc::new(wharf_server::Config::default()),
        }),
        info: Arc::new(ServerInfo {
            version: "test".into(),
            commit: "test".into(),
            schema_level: 1,
        }),
        ready: Arc::new(AtomicBool::new(true)),
        caches,
    };
    (router(state), dir)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn no_request_makes_the_server_fail(
        method in method(),
        segments in proptest::collection::vec(segment(), 0..7),
        q in query(),
        headers in proptest::collection::vec(header(), 0..3),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _dir) = app().await;
            let uri = format!("/v2/{}{q}", segments.join("/"));
            let Ok(mut req) = Request::builder().method(method.clone()).uri(&uri).body(Body::from(body.clone())) else {
                return Ok(()); // not a request a client could send
            };
            for (k, v) in &headers {
                if let Ok(v) = v.parse() {
                    req.headers_mut().insert(*k, v);
                }
            }
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            prop_assert!(status.as_u16() < 500, "{method} {uri} {headers:?} -> {status}");
            if status.is_client_error() && method != Method::HEAD {
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("error body is JSON");
                prop_assert!(v["errors"][0]["code"].is_string(), "{v}");
            }
            Ok(())
        })?;
    }
}

/// Path segments of the scanning API (`/api/v0/repositories/<name>/_vulnerabilities/…`,
/// `_sbom`, `_scan`, `/api/v0/vulndb`, `/api/v0/scanning/rescan_all`).
fn scan_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("repositories".to_string()),
        Just("_vulnerabilities".to_string()),
        Just("_sbom".to_string()),
        Just("_scan".to_string()),
        Just("vulndb".to_string()),
        Just("scanning".to_string()),
        Just("rescan_all".to_string()),
        Just("library".to_string()),
        Just(D.to_string()),
        Just("latest".to_string()),
        Just("".to_string()),
        "[a-z0-9._:-]{1,12}",
        "[ -~]{0,16}".prop_map(|s| s.replace(['?', '#', ' '], "")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn no_scanning_request_makes_the_server_fail(
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PUT), Just(Method::DELETE)],
        segments in proptest::collection::vec(scan_segment(), 1..6),
        q in prop_oneof![Just(String::new()), Just("?all=maybe".to_string()), Just("?all=true".to_string()), Just("?platform=linux/arm64".to_string()), Just("?name=../x.zip".to_string())],
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (app, _dir) = app().await;
            let uri = format!("/api/v0/{}{q}", segments.join("/"));
            let Ok(req) = Request::builder().method(method.clone()).uri(&uri).body(Body::from(body.clone())) else {
                return Ok(());
            };
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            prop_assert!(status.as_u16() < 500, "{method} {uri} -> {status}");
            Ok(())
        })?;
    }
}
