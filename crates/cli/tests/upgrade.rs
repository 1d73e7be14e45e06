//! `wharf upgrade plan` as an operator runs it: from the data's own version by
//! default, JSON for scripts, exit status 0 when allowed, 1 when refused, 2 for bad input.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::time::Duration;

use secure::{run, wharf_cmd};
use serde_json::Value;
use support::TestServer;

const OWN: &str = env!("CARGO_PKG_VERSION");

async fn plan(args: &[&str]) -> (i32, String) {
    let mut c = wharf_cmd(&["upgrade", "plan"]);
    c.args(args);
    let out = run(c, None, Duration::from_secs(60)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), text)
}

#[tokio::test]
async fn plan_reads_the_data_version_and_answers_with_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    assert!(server.signal_and_wait("TERM").success());
    let dir = data.to_str().unwrap();

    // Data written by this build: nothing to do.
    let (code, out) = plan(&["--data-dir", dir, "--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (p["from"].as_str(), p["allowed"].as_bool()),
        (Some(OWN), Some(true))
    );
    assert_eq!(p["path"], serde_json::json!([]));

    // Data as release 1.0.0 left it (schema level 1): one hop to this build.
    let db = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    db.execute_batch("DELETE FROM wharf_schema WHERE level > 1; UPDATE wharf_schema SET wharf_version = '1.0.0';")
        .unwrap();
    drop(db);
    let (code, out) = plan(&["--data-dir", dir]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("upgrade 1.0.0 → {OWN}: allowed")),
        "{out}"
    );
    assert!(out.contains("minor-upgrade; schema level 1 → 2"), "{out}");

    // Refused: a downgrade, and a skipped minor (with its stops) in a what-if catalog.
    let (code, out) = plan(&["--from", "9.0.0", "--format", "json"]).await;
    assert_eq!(code, 1, "{out}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (p["allowed"].as_bool(), p["rule"].as_str()),
        (Some(false), Some("major-downgrade"))
    );
    let (code, out) = plan(&[
        "--from",
        "1.1.7",
        "--to",
        "1.3.0",
        "--available",
        "1.1.7,1.2.0,1.2.3,1.3.0",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["path"], serde_json::json!(["1.2.3", "1.3.0"]));
    assert!(
        p["reason"].as_str().unwrap().contains("stop at 1.2 first"),
        "{p}"
    );
    assert!(p["warnings"].as_array().unwrap().is_empty());

    // Bad input.
    let (code, out) = plan(&["--from", "1.x"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a version"), "{out}");
    let (code, out) = plan(&["--data-dir", tmp.path().join("nothing").to_str().unwrap()]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no registry data"), "{out}");
}
