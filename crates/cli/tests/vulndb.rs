//! `wharf vulndb` as an operator of an air-gapped registry uses it: import the OSV
//! archives copied in by hand, read the status, and see that a bad file changes nothing.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::path::PathBuf;
use std::time::Duration;

use secure::{run_fails, run_ok, wharf_cmd};
use serde_json::Value;
use support::TestServer;

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
