//! Downloading OSV archives from a mirror on 127.0.0.1 that behaves as real ones do:
//! validators and `304`, a rate limit, server errors, a body cut half-way, a missing
//! ecosystem, and a proxy in between.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_jobs::vulndb_fetch::{self, FetchConfig, Fetched, Validators};

fn fixture(ecosystem: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scan/tests/fixtures/vulndb")
        .join(format!("osv-{ecosystem}.zip"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const ETAG: &str = "\"pypi-v1\"";
const LAST_MODIFIED: &str = "Fri, 04 Dec 2026 10:00:00 GMT";

/// The mirror's behaviour, and what it saw.
#[derive(Default)]
struct Mirror {
    requests: AtomicUsize,
    /// Answers with 503 (and `Retry-After: 0`) this many times first.
    failures_first: AtomicUsize,
    /// Answers with 429 this many times first.
    rate_limited_first: AtomicUsize,
    /// Sends half the body, then breaks the connection, this many times first.
    cut_first: AtomicUsize,
    conditional_headers: Mutex<Vec<(Option<String>, Option<String>)>>,
}

async fn archive(
    State(m): State<Arc<Mirror>>,
    Path(ecosystem): Path<String>,
    headers: HeaderMap,
) -> Response {
    m.requests.fetch_add(1, Ordering::SeqCst);
    let take = |n: &AtomicUsize| {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    };
    if take(&m.failures_first) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            "busy",
        )
            .into_response();
    }
    if take(&m.rate_limited_first) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "slow down",
        )
            .into_response();
    }
    let Ok(body) = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scan/tests/fixtures/vulndb")
            .join(format!("osv-{ecosystem}.zip")),
    ) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (inm, ims) = (header("if-none-match"), header("if-modified-since"));
    m.conditional_headers
        .lock()
        .unwrap()
        .push((inm.clone(), ims));
    if ecosystem == "PyPI" && inm.as_deref() == Some(ETAG) {
        return (StatusCode::NOT_MODIFIED, [("etag", ETAG)]).into_response();
    }
    if take(&m.cut_first) {
        let half = body[..body.len() / 2].to_vec();
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(half),
            Err(std::io::Error::other("the mirror went away")),
        ]);
        return Response::builder()
            .header("content-length", body.len())
            .body(Body::from_stream(stream))
            .unwrap();
    }
    (
        [
            ("etag", ETAG),
            ("last-modified", LAST_MODIFIED),
            ("content-type", "application/zip"),
        ],
        body,
    )
        .into_response()
}

/// Serves the mirror on 127.0.0.1; returns its base URL. The server ends with the test.
async fn start(mirror: Arc<Mirror>) -> String {
    let app = axum::Router::new()
        .route("/{ecosystem}/all.zip", axum::routing::get(archive))
        .with_state(mirror);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn config(base: &str) -> FetchConfig {
    FetchConfig {
        backoff: Duration::from_millis(10),
        ..FetchConfig::new(base, vec!["PyPI".into()])
    }
}

fn quiet() -> impl Fn(String) + Send + Sync {
    |_| {}
}

#[tokio::test]
async fn a_download_keeps_its_validators_and_the_next_one_is_not_modified() {
    let mirror = Arc::new(Mirror::default());
    let base = start(mirror.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&base);
    let client = vulndb_fetch::client(&cfg).unwrap();

    let first = vulndb_fetch::fetch(&client, &cfg, "PyPI", None, dir.path(), &quiet())
        .await
        .unwrap();
    let Fetched::New {
        file,
        bytes,
        validators,
    } = first
    else {
        panic!("a first download brings the archive: {first:?}");
    };
    assert_eq!(std::fs::read(file.path()).unwrap(), fixture("PyPI"));
    assert_eq!(bytes, fixture("PyPI").len() as u64);
    assert_eq!(
        validators,
        Validators {
            etag: Some(ETAG.into()),
            last_modified: Some(LAST_MODIFIED.into())
        }
    );

    let second = vulndb_fetch::fetch(
        &client,
        &cfg,
        "PyPI",
        Some(&validators),
        dir.path(),
        &quiet(),
    )
    .await
    .unwrap();
    assert!(matches!(second, Fetched::NotModified), "{second:?}");
    let seen = mirror.conditional_headers.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (None, None),
            (Some(ETAG.into()), Some(LAST_MODIFIED.into()))
        ],
        "the second request asked only if changed"
    );
    // The temporary file goes with the outcome.
    let path = file.path().to_path_buf();
    drop(file);
    assert!(!path.exists());
}

#[tokio::test]
async fn rate_limits_server_errors_and_a_broken_download_are_retried() {
    let mirror = Arc::new(Mirror::default());
    mirror.failures_first.store(1, Ordering::SeqCst);
    mirror.rate_limited_first.store(1, Ordering::SeqCst);
    mirror.cut_first.store(1, Ordering::SeqCst);
    let base = start(mirror.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&base);
    let client = vulndb_fetch::client(&cfg).unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = {
        let lines = lines.clone();
        move |l: String| lines.lock().unwrap().push(l)
    };

    let got = vulndb_fetch::fetch(&client, &cfg, "PyPI", None, dir.path(), &log)
        .await
        .unwrap();
    let Fetched::New { file, .. } = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        std::fs::read(file.path()).unwrap(),
        fixture("PyPI"),
        "the whole archive, not the cut one"
    );
    assert_eq!(mirror.requests.load(Ordering::SeqCst), 4);
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("503"), "{lines:?}");
    assert!(lines[1].contains("429"), "{lines:?}");
    // The mirror dies after half the body; whether the client had the headers by then
    // depends on how the server flushed them.
    assert!(
        lines[2].contains("broke off") || lines[2].contains("connection closed"),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("PyPI: attempt ")),
        "{lines:?}"
    );
    // Only the one archive is left in the directory: no partial download stays behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn giving_up_and_a_missing_ecosystem_say_what_and_where() {
    let mirror = Arc::new(Mirror::default());
    mirror.failures_first.store(100, Ordering::SeqCst);
    let base = start(mirror.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = FetchConfig {
        attempts: 3,
        ..config(&base)
    };
    let client = vulndb_fetch::client(&cfg).unwrap();

    let e = vulndb_fetch::fetch(&client, &cfg, "PyPI", None, dir.path(), &quiet())
        .await
        .unwrap_err();
    assert_eq!(mirror.requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        e.to_string(),
        format!("PyPI: {base}/PyPI/all.zip: the server answered 503 Service Unavailable (gave up after 3 attempts)")
    );

    mirror.failures_first.store(0, Ordering::SeqCst);
    let e = vulndb_fetch::fetch(&client, &cfg, "Red Hat", None, dir.path(), &quiet())
        .await
        .unwrap_err();
    assert_eq!(e.url, format!("{base}/Red%20Hat/all.zip"));
    assert!(
        e.problem
            .starts_with("the server answered 404 Not Found: no archive there"),
        "{e}"
    );
    assert_eq!(
        mirror.requests.load(Ordering::SeqCst),
        4,
        "a 404 is not retried"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[tokio::test]
async fn an_oversized_archive_is_refused() {
    let base = start(Arc::new(Mirror::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = FetchConfig {
        max_archive_bytes: 1000,
        ..config(&base)
    };
    let client = vulndb_fetch::client(&cfg).unwrap();
    let e = vulndb_fetch::fetch(&client, &cfg, "PyPI", None, dir.path(), &quiet())
        .await
        .unwrap_err();
    assert!(e.problem.contains("over the limit of 1000 bytes"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A forward proxy on 127.0.0.1 that records the request line and answers it itself:
/// the mirror's host name is never resolved, so only the proxy can have answered.
#[tokio::test]
async fn a_configured_proxy_carries_the_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(String::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        *recorder.lock().unwrap() = String::from_utf8_lossy(&head).into_owned();
        let body = fixture("Alpine");
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"a1\"\r\nconnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(reply.as_bytes()).await.unwrap();
        socket.write_all(&body).await.unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let cfg = FetchConfig {
        proxy: Some(proxy),
        attempts: 1,
        ..FetchConfig::new("http://osv-mirror.invalid/vulns", vec!["Alpine".into()])
    };
    let client = vulndb_fetch::client(&cfg).unwrap();
    let got = vulndb_fetch::fetch(&client, &cfg, "Alpine", None, dir.path(), &quiet())
        .await
        .unwrap();
    let Fetched::New {
        file, validators, ..
    } = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(std::fs::read(file.path()).unwrap(), fixture("Alpine"));
    assert_eq!(validators.etag.as_deref(), Some("\"a1\""));
    let head = seen.lock().unwrap().clone();
    assert!(
        head.starts_with("GET http://osv-mirror.invalid/vulns/Alpine/all.zip HTTP/1.1\r\n"),
        "the proxy got the absolute URL: {head:?}"
    );
}

#[test]
fn a_bad_proxy_url_is_an_error_not_a_panic() {
    let cfg = FetchConfig {
        proxy: Some("::not a url".into()),
        ..FetchConfig::new("http://x", vec![])
    };
    let e = vulndb_fetch::client(&cfg).unwrap_err();
    assert!(e.starts_with("proxy \"::not a url\""), "{e}");
}
