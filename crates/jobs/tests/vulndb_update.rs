//! The `vulndb_update` job run by a real worker against an OSV mirror on 127.0.0.1
//! serving the fixture archives (`crates/scan/tests/fixtures/vulndb`): the first run
//! imports and re-matches (an image scanned before gets its findings), the next gets
//! `304` for every archive and imports nothing, a changed archive brings a new version
//! (the unchanged ones downloaded again in full), and a missing archive or a corrupt one
//! leaves the database as it was, recorded as a failed version naming the cause.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use support::scan_images::*;
use wharf_jobs::actions::{self, Stores};
use wharf_jobs::vulndb_update::UpdateSettings;
use wharf_jobs::{Worker, WorkerConfig};
use wharf_metastore::jobs::{Job, NewJob};
use wharf_metastore::MetaStore;
use wharf_oci::Digest;

const ECOSYSTEMS: [&str; 5] = ["Alpine", "Debian", "PyPI", "Ubuntu", "crates.io"];

fn vulndb_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

/// An archive the mirror serves, and its ETag.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    etag: String,
}

/// The mirror: its archives by ecosystem (missing: `404`), and what it was asked.
#[derive(Default)]
struct Mirror {
    archives: Mutex<BTreeMap<String, Served>>,
    /// `(ecosystem, If-None-Match, status answered)` per request.
    seen: Mutex<Vec<(String, Option<String>, u16)>>,
}

impl Mirror {
    fn serve(&self, ecosystem: &str, body: Vec<u8>, etag: &str) {
        self.archives.lock().unwrap().insert(
            ecosystem.into(),
            Served {
                body,
                etag: etag.into(),
            },
        );
    }

    fn take_seen(&self) -> Vec<(String, Option<String>, u16)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn archive(
    State(m): State<Arc<Mirror>>,
    Path(ecosystem): Path<String>,
    headers: HeaderMap,
) -> Response {
    let inm = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let served = m.archives.lock().unwrap().get(&ecosystem).cloned();
    let (status, response) = match served {
        None => (404, StatusCode::NOT_FOUND.into_response()),
        Some(s) if inm.as_deref() == Some(s.etag.as_str()) => (
            304,
            (StatusCode::NOT_MODIFIED, [("etag", s.etag)]).into_response(),
        ),
        Some(s) => (
            200,
            (
                [
                    ("etag", s.etag.as_str()),
                    ("content-type", "application/zip"),
                ],
                s.body,
            )
                .into_response(),
        ),
    };
    m.seen.lock().unwrap().push((ecosystem, inm, status));
    response
}

/// Serves the mirror on 127.0.0.1; its base URL. The server ends with the test.
async fn start_mirror(mirror: Arc<Mirror>) -> String {
    let app = axum::Router::new()
        .route("/osv/{ecosystem}/all.zip", axum::routing::get(archive))
        .with_state(mirror);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/osv")
}

/// The fixture archive of `ecosystem`, without the records named in `drop`.
fn fixture_zip(ecosystem: &str, drop: &[&str]) -> Vec<u8> {
    let path = vulndb_dir().join(format!("osv-{ecosystem}.zip"));
    let bytes = std::fs::read(&path).unwrap();
    if drop.is_empty() {
        return bytes;
    }
    let mut input = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for i in 0..input.len() {
        let mut entry = input.by_index(i).unwrap();
        let name = entry.name().to_string();
        if drop.iter().any(|d| name == format!("{d}.json")) {
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.start_file(name, options).unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// The advisories `packages.json` (computed independently of wharf) expects for a
/// PyPI release.
fn expected_ids(name: &str, version: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(vulndb_dir().join("packages.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let p = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ecosystem"] == "PyPI" && p["name"] == name)
        .unwrap_or_else(|| panic!("{name} in packages.json"));
    p["expected_ids_for_each_version"][version]
        .as_array()
        .unwrap_or_else(|| panic!("{name} {version} in packages.json"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// An image holding one installed PyPI release (its `METADATA`, as pip writes it).
fn python_image(name: &str, version: &str) -> TestImage {
    let path = format!("{SITE_PACKAGES}/{name}-{version}.dist-info/METADATA");
    let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    image(vec![layer_from_files(
        &[(path.as_str(), 0o644, metadata.as_bytes())],
        Compression::Gzip,
    )])
}

/// Queues `action` (one attempt: a failure shows at once) and waits for its end.
async fn run_job(meta: &dyn MetaStore, action: &str, params: serde_json::Value) -> Job {
    let job = meta
        .enqueue(&NewJob {
            action: action.into(),
            params: params.to_string(),
            max_attempts: 1,
            deadline_ms: None,
            cron: None,
        })
        .await
        .unwrap();
    // Bounded: 60 s, one look every 50 ms.
    for _ in 0..1200 {
        let j = meta.job(job.id).await.unwrap().unwrap();
        if j.status.is_final() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {} ({action}) did not finish in 60 s", job.id);
}

async fn log_of(meta: &dyn MetaStore, job: &Job) -> String {
    meta.job_log(job.id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn findings(meta: &dyn MetaStore, digest: &Digest) -> BTreeSet<String> {
    meta.findings(&digest.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.advisory_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_imports_then_asks_only_if_changed_and_records_failures() {
    let mirror = Arc::new(Mirror::default());
    for e in ECOSYSTEMS {
        mirror.serve(e, fixture_zip(e, &[]), &format!("\"{e}-1\""));
    }
    let base = start_mirror(mirror.clone()).await;

    let reg = TestRegistry::new().await;
    let meta: Arc<dyn MetaStore> = reg.registry.meta().clone();
    let stores = Stores {
        meta: meta.clone(),
        blobs: reg.registry.blobs().clone(),
        upload_expiry: Duration::from_secs(3600),
        gc_grace: Duration::from_secs(3600),
        gc_busy_percent: 50,
        registry_address: Default::default(),
        vulndb: UpdateSettings {
            url: Some(base.clone()),
            ecosystems: ECOSYSTEMS.iter().map(|e| e.to_string()).collect(),
            proxy: None,
        },
    };
    let worker = Worker::new(
        "test",
        "test",
        meta.clone(),
        actions::all(&stores),
        WorkerConfig::with_heartbeat(Duration::from_millis(200), Duration::from_millis(100)),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stopped));

    // An image scanned before there is any database: no findings yet.
    let digest = push(
        &reg.registry,
        "app/py",
        "v1",
        &python_image("requests", "2.19.1"),
    )
    .await;
    let scan = run_job(
        meta.as_ref(),
        "scan",
        serde_json::json!({"repository": "app/py", "digest": digest.to_string()}),
    )
    .await;
    assert_eq!(scan.status.as_str(), "done", "{scan:?}");
    assert!(findings(meta.as_ref(), &digest).await.is_empty());

    // 1. The first update downloads every archive, imports them and re-matches: the
    //    image has the advisories packages.json expects.
    let first = run_job(meta.as_ref(), "vulndb_update", serde_json::json!({})).await;
    let log = log_of(meta.as_ref(), &first).await;
    assert_eq!(first.status.as_str(), "done", "{first:?}\n{log}");
    assert!(log.contains("PyPI: downloaded"), "{log}");
    assert!(log.contains("imported from 5 archives"), "{log}");
    let v1 = meta.current_vulndb().await.unwrap().unwrap();
    assert_eq!(v1.source, base);
    assert_eq!(v1.records, Some(163));
    let validators: serde_json::Value =
        serde_json::from_str(v1.validators_json.as_deref().unwrap()).unwrap();
    assert_eq!(validators["PyPI"]["etag"], "\"PyPI-1\"", "{validators}");
    let expected = expected_ids("requests", "2.19.1");
    assert!(!expected.is_empty());
    assert_eq!(findings(meta.as_ref(), &digest).await, expected);
    let seen = mirror.take_seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen
        .iter()
        .all(|(_, inm, status)| inm.is_none() && *status == 200));

    // 2. Nothing changed: every archive is asked for with its ETag, the mirror answers
    //    304, and nothing is imported.
    let second = run_job(meta.as_ref(), "vulndb_update", serde_json::json!({})).await;
    let log = log_of(meta.as_ref(), &second).await;
    assert_eq!(second.status.as_str(), "done", "{second:?}\n{log}");
    assert!(
        log.contains(&format!(
            "unchanged: every archive is as at version {}",
            v1.id
        )),
        "{log}"
    );
    let seen = mirror.take_seen();
    assert_eq!(seen.len(), 5, "{seen:?}");
    for (e, inm, status) in &seen {
        assert_eq!(inm.as_deref(), Some(format!("\"{e}-1\"").as_str()));
        assert_eq!(*status, 304);
    }
    assert_eq!(meta.vulndb_versions(10).await.unwrap().len(), 1);
    assert_eq!(meta.current_vulndb().await.unwrap().unwrap().id, v1.id);

    // 3. PyPI changes (PYSEC-2023-74 withdrawn from the mirror): a new version with
    //    every ecosystem (the unchanged ones downloaded again), and the re-match takes
    //    the advisory from the image.
    mirror.serve(
        "PyPI",
        fixture_zip("PyPI", &["PYSEC-2023-74"]),
        "\"PyPI-2\"",
    );
    let third = run_job(meta.as_ref(), "vulndb_update", serde_json::json!({})).await;
    let log = log_of(meta.as_ref(), &third).await;
    assert_eq!(third.status.as_str(), "done", "{third:?}\n{log}");
    let v2 = meta.current_vulndb().await.unwrap().unwrap();
    assert_ne!(v2.id, v1.id);
    assert_eq!(v2.records, Some(162));
    let counts: BTreeMap<String, u64> =
        serde_json::from_str(v2.ecosystems_json.as_deref().unwrap()).unwrap();
    assert_eq!(counts.len(), 5, "{counts:?}");
    let mut without: BTreeSet<String> = expected.clone();
    without.remove("PYSEC-2023-74");
    assert_eq!(findings(meta.as_ref(), &digest).await, without);
    let seen = mirror.take_seen();
    assert_eq!(
        seen.iter().filter(|(_, _, s)| *s == 200).count(),
        5,
        "every archive in full: {seen:?}"
    );

    // 4. An archive gone from the mirror: the job fails naming the ecosystem, the URL
    //    and the answer; the failure is recorded; the database and findings stay.
    mirror.archives.lock().unwrap().remove("crates.io");
    let failed = run_job(meta.as_ref(), "vulndb_update", serde_json::json!({})).await;
    assert_eq!(failed.status.as_str(), "error", "{failed:?}");
    let want = format!("crates.io: {base}/crates.io/all.zip: the server answered 404 Not Found");
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(error.contains(&want), "{error}");
    let newest = &meta.vulndb_versions(1).await.unwrap()[0];
    assert_eq!(newest.status, "failed");
    assert_eq!(newest.source, base);
    assert!(
        newest.error.as_deref().unwrap_or("").contains(&want),
        "{newest:?}"
    );
    assert_eq!(meta.current_vulndb().await.unwrap().unwrap().id, v2.id);
    assert_eq!(findings(meta.as_ref(), &digest).await, without);

    // 5. A corrupt archive: the import refuses it, naming the archive; nothing changes.
    mirror.serve(
        "crates.io",
        fixture_zip("crates.io", &[]),
        "\"crates.io-1\"",
    );
    mirror.serve(
        "PyPI",
        b"<html>a captive portal</html>".to_vec(),
        "\"PyPI-3\"",
    );
    let corrupt = run_job(meta.as_ref(), "vulndb_update", serde_json::json!({})).await;
    assert_eq!(corrupt.status.as_str(), "error", "{corrupt:?}");
    let newest = &meta.vulndb_versions(1).await.unwrap()[0];
    assert_eq!(newest.status, "failed");
    let error = newest.error.as_deref().unwrap_or("");
    assert!(error.contains("PyPI/all.zip"), "{newest:?}");
    assert_eq!(meta.current_vulndb().await.unwrap().unwrap().id, v2.id);
    assert_eq!(findings(meta.as_ref(), &digest).await, without);

    // Parameters override the configuration; no URL anywhere fails plainly.
    mirror.take_seen();
    let one = run_job(
        meta.as_ref(),
        "vulndb_update",
        serde_json::json!({"url": base, "ecosystems": ["Alpine"]}),
    )
    .await;
    assert_eq!(one.status.as_str(), "done", "{one:?}");
    let seen = mirror.take_seen();
    assert!(seen.iter().all(|(e, _, _)| e == "Alpine"), "{seen:?}");
    assert_eq!(
        meta.current_vulndb().await.unwrap().unwrap().records,
        Some(1)
    );

    let _ = stop.send(true);
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_url_the_job_says_how_to_configure_it() {
    let reg = TestRegistry::new().await;
    let meta: Arc<dyn MetaStore> = reg.registry.meta().clone();
    let stores = Stores {
        meta: meta.clone(),
        blobs: reg.registry.blobs().clone(),
        upload_expiry: Duration::from_secs(3600),
        gc_grace: Duration::from_secs(3600),
        gc_busy_percent: 50,
        registry_address: Default::default(),
        vulndb: UpdateSettings::default(),
    };
    let action = actions::all(&stores)
        .into_iter()
        .find(|a| a.name() == "vulndb_update")
        .unwrap();
    let ctx = wharf_jobs::JobContext::detached("vulndb_update", "{}", meta.clone());
    let err = format!("{:#}", action.run(&ctx).await.unwrap_err());
    assert!(err.contains("set vulndb_url"), "{err}");
    assert!(meta.vulndb_versions(1).await.unwrap().is_empty());
}
