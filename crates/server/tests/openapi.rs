//! The management API's OpenAPI document and the explorer that shows it.
//!
//! - The document is compared with the committed snapshot `tests/openapi.json`, so an
//!   API change shows up in review. After a deliberate change, rewrite it with
//!   `UPDATE_SNAPSHOTS=1 cargo test -p wharf-server --test openapi` and commit it.
//! - Every operation has a summary, a tag, an id and security; every response a
//!   description; every path parameter is declared.
//! - What is documented is what is routed: each documented operation reaches a handler
//!   (which asks for credentials), and no other method on a documented path does.
//! - `/api/v0/openapi.json` serves the document; `/explorer` is a page whose assets
//!   are all served, immutable, with the right types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use wharf_auth::{AuthConfig, Authenticator};
use wharf_blobstore::MemoryBlobStore;
use wharf_metastore::SqliteMetaStore;
use wharf_registry::{Limits, Registry};
use wharf_server::{api, router, AppState, ServerInfo, Settings};

/// Stands for `info.version` in the snapshot, so a release's version bump is not an
/// API change.
const VERSION_PLACEHOLDER: &str = "(the crate's version)";

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openapi.json")
}

/// Object keys in sorted order at every level. serde_json keeps keys sorted unless a
/// crate in the same build turns on its `preserve_order` feature (a workspace-wide
/// build does: a test dependency does), so the snapshot must not depend on which.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let ordered: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The document as the snapshot holds it: pretty JSON with sorted keys, the version
/// replaced.
fn normalised(doc: Value) -> String {
    let mut doc = sorted(doc);
    assert_eq!(
        doc["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "info.version is the crate's version"
    );
    doc["info"]["version"] = Value::from(VERSION_PLACEHOLDER);
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    text.push('\n');
    text
}

fn document() -> Value {
    serde_json::from_str(&api::openapi().to_json().unwrap()).unwrap()
}

#[test]
fn the_document_matches_the_snapshot() {
    let generated = normalised(document());
    let path = snapshot_path();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let (old, new): (Vec<&str>, Vec<&str>) =
            (committed.lines().collect(), generated.lines().collect());
        let at = (0..old.len().max(new.len()))
            .find(|&i| old.get(i) != new.get(i))
            .unwrap_or(0);
        panic!(
            "the management API's OpenAPI document differs from {}, first at line {}:\n\
             \x20 committed: {}\n\
             \x20 generated: {}\n\
             If the change to the API is intended, rewrite the snapshot with\n\
             \n    UPDATE_SNAPSHOTS=1 cargo test -p wharf-server --test openapi\n\n\
             and commit it with the change, so review sees what changed.",
            path.display(),
            at + 1,
            old.get(at).unwrap_or(&"(end of file)").trim(),
            new.get(at).unwrap_or(&"(end of file)").trim(),
        );
    }
}

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: unexpected key {method}"
            );
            ops.push((method.clone(), path.clone(), op));
        }
    }
    ops
}

#[test]
fn every_operation_and_response_is_described() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "wharf management API");
    assert_eq!(doc["info"]["license"]["name"], "Apache-2.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["basic"]["scheme"], "basic");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let declared_tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();

    let mut problems = Vec::new();
    let mut ids = BTreeMap::new();
    let ops = operations(&doc);
    for (method, path, op) in &ops {
        let at = format!("{} {path}", method.to_uppercase());
        if !path.starts_with("/api/v0/") {
            problems.push(format!("{at}: not under /api/v0"));
        }
        if op["summary"].as_str().is_none_or(|s| s.trim().is_empty()) {
            problems.push(format!("{at}: no summary (the handler's doc comment)"));
        }
        match op["tags"].as_array().map(|t| t.as_slice()) {
            Some([tag]) if declared_tags.contains(tag.as_str().unwrap_or("")) => {}
            other => problems.push(format!("{at}: tags {other:?}, not one declared tag")),
        }
        match op["operationId"].as_str() {
            Some(id) => {
                if let Some(before) = ids.insert(id.to_string(), at.clone()) {
                    problems.push(format!("{at}: operationId {id} also names {before}"));
                }
            }
            None => problems.push(format!("{at}: no operationId")),
        }
        // Each names basic and bearer, or is public (an empty requirement).
        let security: Vec<String> = op["security"]
            .as_array()
            .map(|s| {
                s.iter()
                    .flat_map(|r| {
                        let keys: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
                        if keys.is_empty() {
                            vec!["(none)".to_string()]
                        } else {
                            keys
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A content cache's own endpoints take its token, nothing else.
        let cache_own = path.starts_with("/api/v0/content_caches/_self");
        if !(security == ["basic", "bearer"]
            || security == ["(none)"]
            || cache_own && security == ["cache_token"])
        {
            problems.push(format!("{at}: security {security:?}"));
        }
        let responses = op["responses"].as_object();
        if responses.is_none_or(|r| r.is_empty()) {
            problems.push(format!("{at}: no responses"));
        }
        for (status, resp) in responses.into_iter().flatten() {
            if resp["description"]
                .as_str()
                .is_none_or(|d| d.trim().is_empty())
            {
                problems.push(format!("{at} {status}: no description"));
            }
            let has_body = resp.get("content").is_some();
            if status != "204" && !has_body {
                problems.push(format!("{at} {status}: no body"));
            }
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                if schema != "#/components/schemas/ErrorBody" {
                    problems.push(format!("{at} {status}: the body is not ErrorBody"));
                }
            }
        }
        // Every {placeholder} is a declared path parameter, and no more.
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if in_path != declared {
            problems.push(format!(
                "{at}: path parameters {declared:?}, the path has {in_path:?}"
            ));
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["description"]
                .as_str()
                .is_none_or(|d| d.trim().is_empty())
            {
                problems.push(format!("{at}: parameter {} has no description", p["name"]));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(ops.len() >= 30, "only {} operations", ops.len());
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
        settings: Arc::new(Settings {
            auth_enabled: true,
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

async fn send(app: &axum::Router, method: &str, uri: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A URL for a documented path: each parameter filled in with a value it accepts.
fn concrete(path: &str, op: &Value) -> String {
    let mut uri = path.to_string();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] != "path" {
            continue;
        }
        let name = p["name"].as_str().unwrap();
        let value = match (name, p["schema"]["type"].as_str()) {
            // A repository name with `/`, as Swagger UI sends it.
            ("name", _) if path.contains("/repositories/") => "library%2Falpine",
            (_, Some("integer")) => "1",
            _ => "someone",
        };
        uri = uri.replace(&format!("{{{name}}}"), value);
    }
    uri
}

/// With authentication on and no credentials, every operation but the public ones
/// answers 401 from its handler; a method or path that is not routed never does.
#[tokio::test]
async fn what_is_documented_is_what_is_routed() {
    let doc = document();
    let (app, _dir) = app().await;
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut probes: BTreeMap<String, String> = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        probes.insert(path.clone(), concrete(&path, op));
        documented.entry(path).or_default().insert(method);
    }
    let mut problems = Vec::new();
    for (path, uri) in &probes {
        for method in METHODS {
            let (status, body) = send(&app, method, uri).await;
            let at = format!("{} {uri}", method.to_uppercase());
            let op = &doc["paths"][path][method];
            if documented[path].contains(method) {
                let public = op["security"] == serde_json::json!([{}]);
                let expected = if public {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                if status != expected {
                    problems.push(format!("{at}: documented, answered {status} {body}"));
                }
            } else if status == StatusCode::UNAUTHORIZED || status.is_success() {
                problems.push(format!("{at}: not documented, but routed ({status})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The hand-routed wildcard serves GET, PUT, DELETE and POST: each has documented
    // forms.
    for method in ["get", "put", "delete", "post"] {
        assert!(
            documented
                .iter()
                .any(|(p, m)| p.starts_with("/api/v0/repositories/") && m.contains(method)),
            "no documented {method} under /api/v0/repositories/"
        );
    }
}

#[tokio::test]
async fn the_document_is_served() {
    let (app, _dir) = app().await;
    let resp = app
        .oneshot(
            Request::get("/api/v0/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    // The generated document, which the_document_matches_the_snapshot compares with
    // the snapshot (read here, the file could be being rewritten by that test).
    assert!(
        normalised(served) == normalised(document()),
        "/api/v0/openapi.json is not api::openapi()"
    );
}

/// The `/static/...` URLs an HTML page refers to.
fn static_urls(html: &str) -> Vec<String> {
    html.split("\"/static/")
        .skip(1)
        .map(|rest| format!("/static/{}", &rest[..rest.find('"').unwrap()]))
        .collect()
}

#[tokio::test]
async fn the_explorer_page_and_its_assets_are_served() {
    let (app, _dir) = app().await;
    let resp = app
        .clone()
        .oneshot(Request::get("/explorer").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(html.contains("<title>wharf API explorer</title>"), "{html}");
    assert!(
        html.contains(r#"data-spec="/api/v0/openapi.json""#),
        "{html}"
    );
    assert!(
        html.contains(r#"href="/""#),
        "no link back to the UI: {html}"
    );
    // Under the CSP, inline script or style would be refused: there must be none.
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "{html}"
    );
    assert!(!html.contains("<style"), "{html}");

    let urls = static_urls(&html);
    for wanted in [
        "swagger-ui/swagger-ui-bundle.",
        "swagger-ui/swagger-ui.",
        "swagger-ui/init.",
    ] {
        assert!(
            urls.iter().any(|u| u.contains(wanted)),
            "{wanted} is not on the page: {urls:?}"
        );
    }
    for url in &urls {
        let resp = app
            .clone()
            .oneshot(Request::get(url.as_str()).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        let expected = match url.rsplit_once('.').unwrap().1 {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{url}: unexpected kind {other}"),
        };
        assert_eq!(resp.headers()[header::CONTENT_TYPE], expected, "{url}");
        assert_eq!(
            resp.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "{url}"
        );
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        assert!(bytes.len() > 100, "{url} is nearly empty");
    }
}
