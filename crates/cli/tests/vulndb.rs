//! `wharf vulndb` as an operator of an air-gapped registry uses it: import the OSV
//! archives copied in by hand, read the status, and see that a bad file changes nothing.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::path::PathBuf;
use std::time::Duration;

use secure::{run_fails, run_ok, wharf_cmd};
use serde_json::Value;
use support::{sha256, TestServer};

const LIMIT: Duration = Duration::from_secs(60);

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

fn vulndb(args: &[&str], data: &str) -> tokio::process::Command {
    let mut all = vec!["vulndb", "--data-dir", data];
    all.extend_from_slice(args);
    wharf_cmd(&all)
}

#[tokio::test]
async fn import_status_and_a_refused_import() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    assert!(server.signal_and_wait("TERM").success());
    let dir = data.to_str().unwrap();

    let out = run_ok(vulndb(&["status"], dir), None, LIMIT).await;
    assert!(out.contains("no vulnerability database yet"), "{out}");

    // The fixtures' archives, as osv.dev lays them out.
    let out = run_ok(
        vulndb(&["import", fixtures().to_str().unwrap()], dir),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains(
            "imported database version 1: 163 advisories (Alpine 1, Debian 1, PyPI 143, Ubuntu 1, crates.io 17)"
        ),
        "{out}"
    );
    let status: Value =
        serde_json::from_str(&run_ok(vulndb(&["status", "--json"], dir), None, LIMIT).await)
            .unwrap();
    assert_eq!(status["current"]["id"], 1, "{status}");
    assert_eq!(status["current"]["records"], 163, "{status}");
    assert_eq!(status["current"]["ecosystems"]["PyPI"], 143, "{status}");

    // One record without a package name: the whole import is refused, with the file
    // and the record named, and the current database stays.
    let bad = tmp.path().join("bad/PyPI");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        fixtures().join("osv/PyPI/PYSEC-2023-74.json"),
        bad.join("PYSEC-2023-74.json"),
    )
    .unwrap();
    std::fs::write(
        bad.join("TEST-BAD-1.json"),
        r#"{"id": "TEST-BAD-1", "modified": "2026-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI"}}]}"#,
    )
    .unwrap();
    let out = run_fails(
        vulndb(&["import", tmp.path().join("bad").to_str().unwrap()], dir),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("PyPI/TEST-BAD-1.json: TEST-BAD-1: affected[0].package has no name"),
        "{out}"
    );
    let status: Value =
        serde_json::from_str(&run_ok(vulndb(&["status", "--json"], dir), None, LIMIT).await)
            .unwrap();
    assert_eq!(status["current"]["id"], 1, "{status}");
    assert_eq!(status["versions"][0]["status"], "failed", "{status}");
    assert!(
        status["versions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("TEST-BAD-1"),
        "{status}"
    );

    // Nothing there at all.
    let out = run_fails(
        vulndb(
            &["import", tmp.path().join("missing").to_str().unwrap()],
            dir,
        ),
        None,
        LIMIT,
    )
    .await;
    assert!(out.contains("missing"), "{out}");
}

// ---------------------------------------------------------------------------------
// The online update, the schedule `serve` keeps, `wharf scan`, and the cluster status.

const UPDATE_ECOSYSTEMS: [&str; 5] = ["Alpine", "Debian", "PyPI", "Ubuntu", "crates.io"];

/// Serves the fixture archives as `<base>/<ecosystem>/all.zip` with an ETag, answering
/// `304` to a request that has it; anything else is `404`. Its base URL.
async fn start_mirror() -> String {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    async fn archive(
        Path(ecosystem): Path<String>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let Ok(body) = std::fs::read(fixtures().join(format!("osv-{ecosystem}.zip"))) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let etag = format!("\"{ecosystem}-1\"");
        if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        ([("etag", etag)], body).into_response()
    }
    let app = axum::Router::new().route("/osv/{ecosystem}/all.zip", axum::routing::get(archive));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/osv")
}

/// Pushes an image holding one installed PyPI release (`requests` 2.19.1's METADATA, as
/// pip writes it) as `repo:tag`; its manifest digest.
async fn push_python_image(base: &str, repo: &str, tag: &str) -> String {
    let metadata = b"Metadata-Version: 2.1\nName: requests\nVersion: 2.19.1\n";
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(metadata.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(
        &mut header,
        "usr/local/lib/python3.11/site-packages/requests-2.19.1.dist-info/METADATA",
        &metadata[..],
    )
    .unwrap();
    let layer = tar.into_inner().unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let c = reqwest::Client::new();
    http::push_blob(&c, base, repo, config).await;
    http::push_blob(&c, base, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": http::OCI_MANIFEST,
        "config": http::descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [http::descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    let r = http::put_manifest(&c, base, repo, tag, http::OCI_MANIFEST, &manifest).await;
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.text().await.unwrap_or_default()
    );
    sha256(&manifest)
}

#[path = "support/http.rs"]
mod http;

/// `serve` with `--vulndb-url` schedules the update and runs it soon after the start;
/// `wharf scan` shows the findings; `vulndb update` asks only for what changed, and a
/// failed one is recorded and shown by `cluster status`, as is a stale database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_update_schedule_scan_and_warnings() {
    let mirror = start_mirror().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.to_str().unwrap();
    let ecosystems = UPDATE_ECOSYSTEMS.join(",");
    let mut server = TestServer::start_in(
        &data,
        &["--vulndb-url", &mirror, "--vulndb-ecosystems", &ecosystems],
        &[],
    );
    let digest = push_python_image(&server.base, "app/py", "v1").await;

    // The first update runs soon after the start (no database yet). Bounded: 60 s.
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        let status: Value =
            serde_json::from_str(&run_ok(vulndb(&["status", "--json"], dir), None, LIMIT).await)
                .unwrap();
        if !status["current"].is_null() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no update within {LIMIT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["current"]["source"], mirror.as_str(), "{status}");
    assert_eq!(status["current"]["records"], 163, "{status}");
    let jobs = reqwest::get(server.url("/api/v0/jobs?action=vulndb_update"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(jobs.contains("\"cron\":\"vulndb_update\""), "{jobs}");
    assert!(server.signal_and_wait("TERM").success());

    // `wharf scan`: the image read from the stores now, its findings as a table.
    let out = run_ok(
        wharf_cmd(&["scan", "--data-dir", dir, "app/py:v1"]),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains(&format!(
            "app/py:v1 ({digest}): 1 packages, 2 vulnerabilities"
        )),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.contains("PYSEC-2023-74"))
        .unwrap_or_else(|| panic!("{out}"));
    for cell in ["CVE-2023-32681", "requests", "2.19.1", "2.31.0"] {
        assert!(row.contains(cell), "{row}");
    }
    assert!(
        out.lines().next().unwrap().starts_with("app/py:v1"),
        "{out}"
    );
    assert!(out.contains("SEVERITY"), "{out}");
    let json: Value = serde_json::from_str(
        &run_ok(
            wharf_cmd(&[
                "scan",
                "--data-dir",
                dir,
                &format!("app/py@{digest}"),
                "--json",
            ]),
            None,
            LIMIT,
        )
        .await,
    )
    .unwrap();
    let ids: Vec<&str> = json["images"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["advisory"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ["PYSEC-2018-28", "PYSEC-2023-74"], "{json}");
    let missing = run_fails(
        wharf_cmd(&["scan", "--data-dir", dir, "app/py:nope"]),
        None,
        LIMIT,
    )
    .await;
    assert!(missing.contains("app/py:nope: no such image"), "{missing}");

    // Nothing changed on the mirror: nothing imported.
    let mut args = vec!["update", "--url", mirror.as_str()];
    for e in UPDATE_ECOSYSTEMS {
        args.extend(["--ecosystem", e]);
    }
    let out = run_ok(vulndb(&args, dir), None, LIMIT).await;
    assert!(
        out.contains("unchanged: every archive is as at version 1"),
        "{out}"
    );

    // A wrong URL: a clear error, a failed version, the database stays.
    let wrong = format!("{mirror}/wrong");
    let out = run_fails(
        vulndb(&["update", "--url", &wrong, "--ecosystem", "PyPI"], dir),
        None,
        LIMIT,
    )
    .await;
    let cause = format!("PyPI: {wrong}/PyPI/all.zip: the server answered 404 Not Found");
    assert!(out.contains(&cause), "{out}");
    let status: Value =
        serde_json::from_str(&run_ok(vulndb(&["status", "--json"], dir), None, LIMIT).await)
            .unwrap();
    assert_eq!(status["current"]["id"], 1, "{status}");
    assert_eq!(status["versions"][0]["status"], "failed", "{status}");
    let out = run_ok(
        wharf_cmd(&["cluster", "--data-dir", dir, "status"]),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("warning: the latest vulnerability database update failed")
            && out.contains(&cause),
        "{out}"
    );

    // Older than vulndb_stale_after_secs: a warning.
    let config = tmp.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!("data_dir = {dir:?}\nvulndb_stale_after_secs = 0\n"),
    )
    .unwrap();
    let out = run_ok(
        wharf_cmd(&["cluster", "--config", config.to_str().unwrap(), "status"]),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("warning: the vulnerability database is stale: version 1 from"),
        "{out}"
    );

    // No URL anywhere: said plainly.
    let out = run_fails(vulndb(&["update"], dir), None, LIMIT).await;
    assert!(out.contains("pass --url URL or set vulndb_url"), "{out}");
}
