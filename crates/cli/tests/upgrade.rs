//! `wharf upgrade plan` as an operator runs it: from the data's own version by
//! default, JSON for scripts, exit status 0 when allowed, 1 when refused, 2 for bad input.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::time::Duration;

use secure::{run, wharf_cmd};
use serde_json::Value;
use support::TestServer;
// support/http.rs uses it through the crate root.
use support::sha256;

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

    // Data as release 1.0.0 left it (schema level 1): two hops to this build, through
    // 1.1.0, which `apply` with the local driver makes by itself.
    let db = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    db.execute_batch("DELETE FROM wharf_schema WHERE level > 1; UPDATE wharf_schema SET wharf_version = '1.0.0';")
        .unwrap();
    drop(db);
    let (code, out) = plan(&["--data-dir", dir]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("upgrade 1.0.0 → {OWN}: allowed in 2 hops")),
        "{out}"
    );
    assert!(out.contains("as one hop, rule skip-minor"), "{out}");
    assert!(
        out.contains(&format!("path of required stops: 1.1.0 → {OWN}")),
        "{out}"
    );
    assert!(
        out.contains("1.0.0 → 1.1.0  (minor-upgrade; schema level 1 → 2)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "1.1.0 → {OWN}  (minor-upgrade; schema level 2 → 3)"
        )),
        "{out}"
    );
    assert!(
        out.contains("background migration: metadatastoremigration"),
        "{out}"
    );
    // What the hop runs, the checks, and an estimate from the data's size.
    let (code, out) = plan(&["--data-dir", dir, "--format", "json"]).await;
    assert_eq!(code, 0, "{out}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["migrations"][0]["schema"][0]["level"], 2, "{p}");
    assert_eq!(p["migrations"][0]["schema"][0]["kind"], "expand", "{p}");
    assert_eq!(
        p["migrations"][0]["background"],
        serde_json::json!(["metadatastoremigration"]),
        "{p}"
    );
    assert!(
        p["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "clock-drift"),
        "{p}"
    );
    assert_eq!(p["estimate"]["data"]["manifests"], 0, "{p}");
    assert!(p["estimate"]["secs"]["background"].is_number(), "{p}");

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
    // Not as one hop; through the stops, yes.
    assert_eq!(code, 0, "{out}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (p["allowed"].as_bool(), p["reachable"].as_bool()),
        (Some(false), Some(true))
    );
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

/// Turns a store written by this build back into what release 1.1.0 left: schema level 2
/// (level 3's undo: the scanning tables go).
fn as_release_1_1_0(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(include_str!(
        "../../metastore/src/sql/sqlite/0003_scanning.undo.sql"
    ))
    .unwrap();
    c.execute_batch(
        "DELETE FROM wharf_schema WHERE level > 2; UPDATE wharf_schema SET wharf_version = '1.1.0';",
    )
    .unwrap();
}

/// Turns a store written by this build back into what release 1.0.0 left: schema level 1
/// (the reverse of levels 3's and 2's expand migrations).
fn as_release_1_0_0(db: &std::path::Path) {
    as_release_1_1_0(db);
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TABLE job_logs; DROP TABLE jobs; DROP TABLE workers; DROP TABLE crons; DROP TABLE manifest_refs;
         DROP INDEX manifests_without_refs; ALTER TABLE manifests DROP COLUMN refs_recorded;
         DELETE FROM wharf_schema WHERE level > 1; UPDATE wharf_schema SET wharf_version = '1.0.0';",
    )
    .unwrap();
}

#[path = "support/http.rs"]
mod http;

#[tokio::test]
async fn apply_moves_1_0_0_data_through_1_1_0_and_resumes_after_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    let (manifest, _) = http::push_image(&c, &server.base, "team/app", "v1", "from 1.0.0").await;
    let garbage = http::push_blob(&c, &server.base, "team/app", b"never used").await;
    assert!(server.signal_and_wait("TERM").success());
    as_release_1_0_0(&data.join("metadata.db"));
    let dir = data.to_str().unwrap();

    // This build refuses the old data, naming the command.
    let mut serve = support::serve_command();
    serve.args([
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--data-dir",
        dir,
    ]);
    let out = serve.stderr(std::process::Stdio::piped()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `wharf upgrade apply` first"));

    // A backup that cannot be written stops the upgrade after its checks; nothing else moved.
    let blocked = tmp.path().join("not-a-dir");
    std::fs::write(&blocked, b"a file").unwrap();
    let mut c1 = wharf_cmd(&[
        "upgrade",
        "apply",
        "--yes",
        "--data-dir",
        dir,
        "--backup-dir",
    ]);
    c1.arg(&blocked);
    let out = run(c1, None, Duration::from_secs(60)).await;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("[1/5] checks: no replica serving") && text.contains("cannot create"),
        "{text}"
    );
    let (_, plan_out) = plan(&["--data-dir", dir]).await;
    assert!(
        plan_out.contains("upgrade 1.0.0 →"),
        "still at 1.0.0: {plan_out}"
    );

    // Again: it resumes the first hop, runs 1.1.0's background migration here, then
    // makes the second hop.
    let out = run(
        wharf_cmd(&["upgrade", "apply", "--yes", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hop1 = text
        .split_once(&format!("upgrade 1.1.0 → {OWN}"))
        .map_or(text.as_str(), |(a, _)| a);
    let hop2 = text
        .split_once(&format!("upgrade 1.1.0 → {OWN}"))
        .map_or("", |(_, b)| b);
    assert!(
        text.starts_with(&format!(
            "upgrade in 2 hops: 1.0.0 → 1.1.0 → {OWN} (each hop's background migrations finish before the next)"
        )),
        "{text}"
    );
    assert!(hop1.contains("upgrade 1.0.0 → 1.1.0 (resuming)"), "{text}");
    assert!(hop1.contains("[1/5] checks: done before"), "{text}");
    assert!(hop1.contains("[2/5] backup: metadata backup"), "{text}");
    assert!(
        hop1.contains("[3/5] expand: schema levels applied: [2]"),
        "{text}"
    );
    assert!(
        hop1.contains("[4/5] finalise: the data belongs to 1.1.0"),
        "{text}"
    );
    assert!(
        hop1.contains("[5/5] background: metadatastoremigration done (job 1)"),
        "{text}"
    );
    assert!(hop2.starts_with(" (starting)"), "{text}");
    assert!(
        hop2.contains("[3/5] expand: schema levels applied: [3]"),
        "{text}"
    );
    assert!(
        hop2.contains(&format!("[4/5] finalise: the data belongs to {OWN}")),
        "{text}"
    );
    // Level 3's background migration is queued for the registry to run once started.
    assert!(
        hop2.contains("[5/5] background: manifestsummaries queued as job "),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with(&format!("upgraded to {OWN}")),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("backups")).unwrap().count(),
        2,
        "one pre-upgrade backup per hop"
    );
    let out = run(
        wharf_cmd(&["upgrade", "status", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let st = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        st.contains("step 5 of 5") && st.contains("expand done"),
        "{st}"
    );
    assert!(st.contains("metadatastoremigration (job 1): done"), "{st}");
    let out = run(
        wharf_cmd(&["upgrade", "apply", "--yes", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));

    // The registry serves the upgraded data: the migration's log says what it did; GC
    // works and keeps the image.
    let server = TestServer::start_in(&data, &["--job-heartbeat-secs", "1"], &[]);
    let mut follow = wharf_cmd(&["jobs", "logs", "1", "--data-dir", dir]);
    follow.kill_on_drop(true);
    let out = run(follow, None, Duration::from_secs(60)).await;
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        log.contains("done: references recorded for 1 manifests"),
        "{log}"
    );
    let mut st = wharf_cmd(&["upgrade", "status", "--format", "json", "--data-dir", dir]);
    st.kill_on_drop(true);
    let out = run(st, None, Duration::from_secs(60)).await;
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["background_migrations"][0]["status"], "done", "{st}");
    assert_eq!(
        st["background_migrations"][0]["progress"]["done"], 1,
        "{st}"
    );
    assert_eq!(st["replicas"][0]["alive"], true, "{st}");
    // The API tells the same.
    let api: serde_json::Value = c
        .get(format!("{}/api/v0/upgrade", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["data_version"], OWN, "{api}");
    assert_eq!(api["binary_version"], OWN, "{api}");
    assert_eq!(
        (api["steps_done"].as_u64(), api["steps_total"].as_u64()),
        (Some(5), Some(5)),
        "{api}"
    );
    assert_eq!(api["journal"][2]["step"], "expand", "{api}");
    assert_eq!(api["journal"][2]["from_version"], "1.1.0", "{api}");
    assert_eq!(api["pending_manifests"], 0, "{api}");
    assert_eq!(api["background_migrations"][0]["status"], "done", "{api}");
    assert_eq!(api["replicas"][0]["version"], OWN, "{api}");
    assert_eq!(api["plan"]["allowed"], true, "{api}");
    let out = run(
        wharf_cmd(&["gc", "--grace-secs", "0", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let gc = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(gc.contains("freed 0 manifests, 1 links, 1 blobs"), "{gc}");
    let r = c
        .get(format!("{}/v2/team/app/manifests/v1", server.base))
        .header("accept", http::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .get(format!("{}/v2/team/app/blobs/{garbage}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
}

/// The check `name` of an `upgrade check --format json` report.
fn named_check(report: &Value, name: &str) -> Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no check {name}: {report:#}"))
}

async fn check(dir: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut c = wharf_cmd(&["upgrade", "check", "--format", "json", "--data-dir", dir]);
    c.args(extra);
    let out = run(c, None, Duration::from_secs(60)).await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn status_of<'a>(report: &'a serde_json::Value, name: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    (
        c["status"].as_str().unwrap(),
        c["measured"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn checks_fail_for_real_and_a_skip_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let dir = data.to_str().unwrap().to_string();

    // A serving replica, and no backup yet.
    let (code, r) = check(&dir, &[]).await;
    assert_eq!(code, 1, "{r}");
    let (status, measured) = status_of(&r, "replicas");
    assert!(status == "fail" && measured.contains(&server.base), "{r}");
    assert_eq!(status_of(&r, "backup"), ("fail", "no backup is recorded"));
    assert_eq!(status_of(&r, "path").0, "pass");
    assert!(server.signal_and_wait("TERM").success());

    // A backup, then everything passes.
    let out = tmp.path().join("b.tar");
    let mut b = wharf_cmd(&["backup", "--out", out.to_str().unwrap(), "--data-dir", &dir]);
    b.kill_on_drop(true);
    assert!(run(b, None, Duration::from_secs(60)).await.status.success());
    let (code, r) = check(&dir, &[]).await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["failed"], 0);

    // A stale backup by the operator's own limit.
    let db = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    db.execute(
        "UPDATE backups SET finished_at = finished_at - 2 * 3600 * 1000",
        [],
    )
    .unwrap();
    let (code, r) = check(&dir, &["--max-backup-age-hours", "1"]).await;
    assert_eq!(code, 1);
    assert!(
        status_of(&r, "backup")
            .1
            .contains("the last backup is 2 h old (limit 1 h)"),
        "{r}"
    );

    // A background migration left pending: fails, then skipped with a recorded reason.
    db.execute(
        "INSERT INTO repositories (name, created_at) VALUES ('x/y', 0)",
        [],
    )
    .unwrap();
    db.execute(
        "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at, refs_recorded)
         VALUES (1, 'sha256:0000000000000000000000000000000000000000000000000000000000000000',
                 'application/vnd.oci.image.manifest.v1+json', 2, x'7b7d', 0, 0)",
        [],
    )
    .unwrap();
    drop(db);
    let (code, r) = check(&dir, &[]).await;
    assert_eq!(code, 1);
    assert!(
        status_of(&r, "background-migrations")
            .1
            .contains("1 manifests lack references"),
        "{r}"
    );
    let (code, r) = check(
        &dir,
        &[
            "--skip-check",
            "background-migrations",
            "--reason",
            "repaired by hand",
        ],
    )
    .await;
    assert_eq!(code, 0, "{r}");
    assert_eq!(status_of(&r, "background-migrations").0, "skipped");
    let st = run(
        wharf_cmd(&["upgrade", "status", "--data-dir", &dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let st = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        st.contains("skip-check:background-migrations skipped: repaired by hand"),
        "{st}"
    );

    // Bad input.
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "check",
            "--data-dir",
            &dir,
            "--skip-check",
            "nonsense",
            "--reason",
            "x",
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no check is called \"nonsense\""));
}

#[tokio::test]
async fn apply_reports_json_events_for_automation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    http::push_image(&c, &server.base, "team/app", "v1", "events").await;
    assert!(server.signal_and_wait("TERM").success());
    as_release_1_0_0(&data.join("metadata.db"));
    let dir = data.to_str().unwrap();

    // Without --yes there is nobody to confirm: a failed event, and nothing changed.
    let out = run(
        wharf_cmd(&["upgrade", "apply", "--format", "json", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(
        events[0],
        serde_json::json!({"v": 1, "event": "plan", "hops": [
            {"from": "1.0.0", "to": "1.1.0"},
            {"from": "1.1.0", "to": OWN}
        ]})
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "failed");
    assert!(last["error"].as_str().unwrap().contains("--yes"), "{last}");

    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--format",
            "json",
            "--data-dir",
            dir,
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "plan", "{text}");
    let starts: Vec<(&str, &str, bool)> = events
        .iter()
        .filter(|e| e["event"] == "start")
        .map(|e| {
            (
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap(),
                e["resuming"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        starts,
        vec![("1.0.0", "1.1.0", false), ("1.1.0", OWN, false)],
        "{text}"
    );
    let steps: Vec<(u64, &str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| {
            (
                e["n"].as_u64().unwrap(),
                e["step"].as_str().unwrap(),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    let hop = vec![
        (1, "checks", "done"),
        (2, "backup", "done"),
        (3, "expand", "done"),
        (4, "finalise", "done"),
        (5, "background", "done"),
    ];
    assert_eq!(steps, [hop.clone(), hop].concat(), "{text}");
    // Between the hops, the first hop's background migration ran to its end here.
    let background = events
        .iter()
        .find(|e| e["event"] == "step" && e["step"] == "background")
        .unwrap();
    assert!(
        background["detail"]
            .as_str()
            .unwrap()
            .starts_with("metadatastoremigration done (job "),
        "{text}"
    );
    let second_start = events.iter().rposition(|e| e["event"] == "start").unwrap();
    let first_background = events
        .iter()
        .position(|e| e["event"] == "step" && e["step"] == "background")
        .unwrap();
    assert!(first_background < second_start, "{text}");
    // The backup reports its progress, ending with its summary.
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "{text}");
    assert!(progress.iter().all(|p| p["step"] == "backup"), "{text}");
    assert!(progress.iter().any(|p| p["summary"].is_string()), "{text}");
    // Each hop's backup reports its progress before its step is done, and none after.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match (e["event"].as_str(), e["step"].as_str()) {
            (Some("start"), _) => "start",
            (Some("progress"), _) => "progress",
            (Some("step"), Some("backup")) => "backup",
            _ => "other",
        })
        .filter(|k| *k != "other")
        .collect();
    let hops: Vec<&[&str]> = kinds.split(|k| *k == "start").skip(1).collect();
    assert_eq!(hops.len(), 2, "{text}");
    for hop in hops {
        let at = hop.iter().position(|k| *k == "backup").unwrap();
        assert!(
            at > 0 && hop[..at].iter().all(|k| *k == "progress") && at == hop.len() - 1,
            "progress comes before the step is done: {text}"
        );
    }
    assert_eq!(
        events.last().unwrap(),
        &serde_json::json!({"v": 1, "event": "finished", "version": OWN, "changed": true})
    );

    // The same stream read the way the CLI's printer and the UI read it: every line a
    // typed event of version 1, and the text printer has words for each step.
    use wharf_upgrade::events::{Envelope, Event, EVENTS_VERSION};
    let typed: Vec<Event> = text
        .lines()
        .map(|l| {
            let e: Envelope = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            assert_eq!(e.v, EVENTS_VERSION, "{l}");
            e.event
        })
        .collect();
    let hops = match &typed[0] {
        Event::Plan { hops } => hops
            .iter()
            .map(|h| (h.from.as_str(), h.to.as_str()))
            .collect::<Vec<_>>(),
        other => panic!("the first event is the plan: {other:?}"),
    };
    assert_eq!(hops, [("1.0.0", "1.1.0"), ("1.1.0", OWN)]);
    let waits = typed
        .iter()
        .filter(|e| matches!(e, Event::WaitingForMigration { .. }))
        .count();
    let step_texts: Vec<String> = typed
        .iter()
        .filter(|e| matches!(e, Event::Step { .. }))
        .map(|e| e.text().unwrap())
        .collect();
    assert!(
        step_texts[0].starts_with("[1/5] checks: "),
        "{step_texts:#?} ({waits} waits)"
    );
    assert!(matches!(
        typed.last(),
        Some(Event::Finished { changed: Some(true), version, .. }) if version == OWN
    ));
}

/// The highest schema level recorded (expanded or finalised), and whether level 2's
/// tables and column are there.
fn expand_state(db: &std::path::Path) -> (u32, bool, bool) {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut level: u32 = c
        .query_row("SELECT MAX(level) FROM wharf_schema", [], |r| r.get(0))
        .unwrap();
    if let Ok(expanded) = c.query_row(
        "SELECT COALESCE(MAX(level), 0) FROM wharf_schema_expanded",
        [],
        |r| r.get::<_, u32>(0),
    ) {
        level = level.max(expanded);
    }
    let jobs: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'jobs')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let column: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('manifests') WHERE name = 'refs_recorded')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (level, jobs, column)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_in_the_middle_of_expand_leaves_all_or_nothing() {
    const MANIFESTS: u32 = 300_000;
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let mut server = TestServer::start_in(&original, &[], &[]);
    let c = http::client();
    http::push_image(&c, &server.base, "team/app", "v1", "mid-expand").await;
    assert!(server.signal_and_wait("TERM").success());
    let db = original.join("metadata.db");
    as_release_1_0_0(&db);
    // Enough 1.0.0 manifests that the expand step (it indexes them) takes a while.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {MANIFESTS})
                 INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at)
                 SELECT 1, printf('sha256:%064x', i), 'application/vnd.oci.image.manifest.v1+json', 2, x'7b7d', 0 FROM n"
            ),
            [],
        )
        .unwrap();

    // SIGKILL at points spread from the moment the backup step is reported done (the
    // expand step starts) to well after: the delays double until a kill has landed
    // after the step's commit too (how long it takes depends on the machine's load),
    // bounded at 12.8 s.
    let mut outcomes = Vec::new();
    let delays = [0u64, 20, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800];
    for (n, delay_ms) in delays.into_iter().enumerate() {
        if n >= 7 && outcomes.contains(&1) && outcomes.contains(&2) {
            break;
        }
        let dir = tmp.path().join(format!("killed-{delay_ms}"));
        copy_dir(&original, &dir);
        let seen = apply_killed_after_delay(&dir, 2, Duration::from_millis(delay_ms));
        assert!(seen.contains("[2/5] backup"), "{seen}");
        let (level, jobs, column) = expand_state(&dir.join("metadata.db"));
        assert!(
            (level == 2) == jobs && jobs == column,
            "after a kill {delay_ms} ms into expand: level {level}, jobs table {jobs}, refs_recorded {column}: half-applied"
        );
        outcomes.push(level);
        // Again, to the end. The filler manifests go first: they are not manifests the
        // first hop's background migration could read, and it runs before the second hop.
        rusqlite::Connection::open(dir.join("metadata.db"))
            .unwrap()
            .execute("DELETE FROM manifests WHERE size = 2", [])
            .unwrap();
        let out = apply_to_the_end(&dir, Duration::from_secs(120)).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{delay_ms} ms: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(expand_state(&dir.join("metadata.db")), (3, true, true));
        let c = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
        let (pending, done): (u32, u32) = c
            .query_row(
                "SELECT (SELECT COUNT(*) FROM manifests WHERE refs_recorded = 0),
                        (SELECT COUNT(*) FROM jobs WHERE action = 'metadatastoremigration' AND status = 'done')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (pending, done),
            (0, 1),
            "after a kill {delay_ms} ms into expand"
        );
    }
    // The kills straddled the step: some before its commit, some after.
    assert!(
        outcomes.contains(&1) && outcomes.contains(&2),
        "levels at the kills: {outcomes:?}"
    );
}

/// `apply`, killed with SIGKILL `delay` after it reports step `k` done.
fn apply_killed_after_delay(dir: &std::path::Path, k: usize, delay: Duration) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new(support::WHARF)
        .args([
            "upgrade",
            "apply",
            "--yes",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut steps = 0;
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.take(100) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        // Step lines of every hop, counted: "[1/5] checks: …" of the second hop is the 6th.
        let is_step = line.starts_with('[') && line.get(2..5) == Some("/5]");
        steps += usize::from(is_step);
        if is_step && steps == k {
            // The injection point, not a synchronisation: where the kill lands is the point.
            std::thread::sleep(delay);
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    seen
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a");
}

/// The metadata entries of a backup of `dir` (what the registry holds, row by row).
async fn metadata_of(dir: &std::path::Path, out: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let mut b = wharf_cmd(&[
        "backup",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    b.kill_on_drop(true);
    let o = run(b, None, Duration::from_secs(60)).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = wharf_backup::tar::TarReader::new(tokio::fs::File::open(out).await.unwrap());
    let mut entries = Vec::new();
    while let Some(e) = r.next().await.unwrap() {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        if e.name.starts_with("metadata/") {
            let mut lines: Vec<String> = String::from_utf8(data)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            entries.push((e.name, lines));
        }
    }
    entries
}

/// `wharf upgrade apply --yes` on `dir`, run to its end.
async fn apply_to_the_end(dir: &std::path::Path, timeout: Duration) -> std::process::Output {
    run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--data-dir",
            dir.to_str().unwrap(),
        ]),
        None,
        timeout,
    )
    .await
}

/// `apply`, killed with SIGKILL as soon as it reports its `k`th step done (counting the
/// steps of every hop: 1 to 5 in the first, 6 to 10 in the second); returns what it
/// printed.
fn apply_killed_after(dir: &std::path::Path, k: usize) -> String {
    apply_killed_after_delay(dir, k, Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_at_every_step_boundary_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let mut server = TestServer::start_in(&original, &[], &[]);
    let c = http::client();
    let (manifest, _) = http::push_image(&c, &server.base, "team/app", "v1", "resume").await;
    http::push_image(&c, &server.base, "team/app", "v2", "resume too").await;
    assert!(server.signal_and_wait("TERM").success());
    as_release_1_0_0(&original.join("metadata.db"));

    // The reference: an upgrade nobody interrupted.
    let reference = tmp.path().join("reference");
    copy_dir(&original, &reference);
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--skip-backup",
            "--reason",
            "test",
            "--data-dir",
            reference.to_str().unwrap(),
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success());
    let expected = metadata_of(&reference, &tmp.path().join("reference.tar")).await;

    // Kills after each step of both hops (1.0.0 → 1.1.0, then 1.1.0 → this build), but
    // the last.
    for k in 1..=9 {
        let dir = tmp.path().join(format!("killed-after-{k}"));
        copy_dir(&original, &dir);
        let first = apply_killed_after(&dir, k);
        let (hop, n) = ((k - 1) / 5, (k - 1) % 5 + 1);
        assert!(first.contains(&format!("[{n}/5]")), "step {k}: {first}");
        // Again, to the end: the steps done before are not done twice.
        let out = apply_to_the_end(&dir, Duration::from_secs(60)).await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "after a kill at step {k}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The kill lands just after step k is reported, so later steps may have run too;
        // whatever was done is not done again. The rerun starts with the hop killed.
        let steps = ["checks", "backup", "expand", "finalise", "background"];
        assert!(text.contains(&format!("upgraded to {OWN}")), "{text}");
        if n == 5 {
            // The first hop was done: the rerun makes the second, from its start.
            assert!(
                text.contains(&format!("upgrade 1.1.0 → {OWN} (starting)"))
                    && !text.contains("upgrade 1.0.0 → 1.1.0"),
                "{text}"
            );
        }
        let killed_hop = if hop == 0 && n < 5 {
            "upgrade 1.0.0 → 1.1.0 (resuming)".to_string()
        } else {
            format!("upgrade 1.1.0 → {OWN} (")
        };
        let rest = text
            .split_once(&killed_hop)
            .unwrap_or_else(|| panic!("after a kill at step {k}, expected {killed_hop:?}: {text}"))
            .1;
        for (i, step) in steps.iter().enumerate().take(n % 5) {
            let line = format!("[{}/5] {step}: done before", i + 1);
            assert!(
                rest.contains(&line),
                "after a kill at step {k}, expected {line:?}: {text}"
            );
        }
        assert_eq!(
            std::fs::read_dir(dir.join("backups"))
                .map(|d| d.count())
                .unwrap_or(0),
            2,
            "one pre-upgrade backup per hop after a kill at step {k}"
        );
        let got = metadata_of(&dir, &tmp.path().join(format!("after-{k}.tar"))).await;
        assert_eq!(
            got, expected,
            "the registry's content after a kill at step {k}"
        );
        let server = TestServer::start_in(&dir, &[], &[]);
        let r = c
            .get(format!("{}/v2/team/app/manifests/v1", server.base))
            .header("accept", http::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.bytes().await.unwrap(),
            manifest,
            "after a kill at step {k}"
        );
    }
}

/// Data from 1.1.0 (no scanning tables): `upgrade check` warns that stored images have no
/// inventory; `upgrade apply` with `vulndb_url` configured queues the database refresh
/// in its background step.
#[tokio::test]
async fn an_upgrade_to_scanning_warns_and_queues_the_database_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    http::push_image(&c, &server.base, "team/app", "v1", "before scanning").await;
    assert!(server.signal_and_wait("TERM").success());
    as_release_1_1_0(&data.join("metadata.db"));
    let dir = data.to_str().unwrap();

    let (_, report) = check(dir, &[]).await;
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vulnerability-database")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(c["status"], "warn", "{report}");
    assert_eq!(
        c["measured"],
        "the target brings vulnerability scanning (schema level 3): images stored before have no inventory and are scanned only when pushed again or on \"rescan all\"",
        "{report}"
    );

    let config = tmp.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!("data_dir = {dir:?}\nvulndb_url = \"http://127.0.0.1:9/osv\"\n"),
    )
    .unwrap();
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--config",
            config.to_str().unwrap(),
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The job's number depends on what else the data's history queued.
    let line = text
        .lines()
        .find(|l| l.contains("[5/5] background:"))
        .unwrap_or_else(|| panic!("no background step in:\n{text}"));
    assert!(
        line.contains("manifestsummaries queued as job ")
            && line.contains(" for 1 manifests (")
            && line.contains("; vulndb_update queued as job ")
            && line.ends_with(" to refresh the vulnerability database"),
        "{text}"
    );
}

/// Data that release 1.0.0 left (one pushed image and `manifests` more image
/// manifests without references) in `tmp/original`, and a copy of it upgraded for real
/// in `tmp/copy`. Returns the original, the copy's first pre-upgrade backup (of the
/// 1.0.0 data) and how long the copy's background migration took, in seconds.
async fn release_1_0_0_data(
    tmp: &std::path::Path,
    manifests: usize,
) -> (std::path::PathBuf, std::path::PathBuf, f64) {
    let original = tmp.join("original");
    let mut server = TestServer::start_in(&original, &[], &[]);
    let c = http::client();
    http::push_image(&c, &server.base, "team/app", "v1", "rehearsal").await;
    assert!(server.signal_and_wait("TERM").success());
    let db = original.join("metadata.db");
    as_release_1_0_0(&db);
    // 100,000 image manifests of release 1.0.0 (no references recorded), each naming
    // the pushed image's config.
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let (config, size): (String, i64) = conn
            .query_row(
                "SELECT digest, size FROM blobs ORDER BY size LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO manifests (repository_id, digest, media_type, size, payload, created_at)
                     VALUES (1, ?, 'application/vnd.oci.image.manifest.v1+json', ?, ?, 0)",
                )
                .unwrap();
            for i in 0..manifests {
                let payload = format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{size}}},"layers":[],"annotations":{{"n":"{i}"}}}}"#
                );
                insert
                    .execute(rusqlite::params![
                        sha256(payload.as_bytes()),
                        payload.len() as i64,
                        payload.as_bytes()
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    // The real upgrade, on a copy; its pre-upgrade backup is what gets rehearsed.
    let copy = tmp.join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&original)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--data-dir",
            copy.to_str().unwrap(),
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let (finalised, migrated): (i64, i64) = rusqlite::Connection::open(copy.join("metadata.db"))
        .unwrap()
        .query_row(
            "SELECT (SELECT at FROM wharf_upgrade_journal WHERE from_version = '1.0.0' AND step = 'finalise'),
                    (SELECT at FROM wharf_upgrade_journal WHERE from_version = '1.0.0' AND step = 'background')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let real_secs = (migrated - finalised) as f64 / 1000.0;
    let backup = std::fs::read_dir(copy.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pre-upgrade-1.0.0-to-1.1.0-")
        })
        .expect("the first hop's pre-upgrade backup");

    (original, backup, real_secs)
}

/// `wharf upgrade rehearse` on a registry of 100,000 manifests that release 1.0.0 left:
/// the backup that a real upgrade of a copy took is rehearsed on the original; the
/// rehearsal's time for each background migration (1.1.0's and 1.2.0's) is within ±50%
/// of the real one's; the
/// original is not touched and no scratch store is left; `upgrade check` warns before
/// and passes after, and `upgrade plan` shows the forecast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_forecasts_the_real_upgrade_and_leaves_the_data_alone() {
    const MANIFESTS: usize = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let (original, backup, real_secs) = release_1_0_0_data(tmp.path(), MANIFESTS).await;
    let db = original.join("metadata.db");
    let dir = original.to_str().unwrap();
    // Before: the check warns that there is no rehearsal.
    let check = |args: Vec<String>| async move {
        let mut c = wharf_cmd(&["upgrade", "check", "--format", "json"]);
        c.args(args);
        let out = run(c, None, Duration::from_secs(120)).await;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "rehearsal")
            .cloned()
            .expect("a rehearsal check")
    };
    let before = check(vec!["--data-dir".into(), dir.into()]).await;
    assert_eq!(before["status"], "warn", "{before}");
    // Where there is no data, it says so and creates nothing.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(
        wharf_cmd(&["upgrade", "rehearse", "--data-dir", empty.to_str().unwrap()]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        !out.status.success() && secure::output_text(&out).contains("there is no wharf data at"),
        "{}",
        secure::output_text(&out)
    );
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing created"
    );
    let untouched = sha256(&std::fs::read(&db).unwrap());

    let out = run(
        wharf_cmd(&[
            "upgrade",
            "rehearse",
            "--backup",
            backup.to_str().unwrap(),
            "--format",
            "json",
            "--data-dir",
            dir,
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = report["rehearsal"]["steps"].as_array().unwrap();
    let migration = steps
        .iter()
        .find(|s| s["hop"] == "1.0.0 → 1.1.0" && s["step"] == "metadatastoremigration")
        .unwrap_or_else(|| panic!("no background migration measured: {report:#}"));
    assert_eq!(migration["rows"], MANIFESTS as u64 + 1, "{migration}");
    for s in steps {
        assert!(s["peak_mib"].as_u64().unwrap() > 0, "{s}");
    }
    let forecast = report["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["step"] == "metadatastoremigration")
        .unwrap()["secs"]
        .as_f64()
        .unwrap();
    eprintln!("background migration of {MANIFESTS} manifests: forecast {forecast:.2} s, real {real_secs:.2} s");
    assert!(
        forecast >= real_secs * 0.5 && forecast <= real_secs * 1.5,
        "forecast {forecast:.2} s, real {real_secs:.2} s"
    );
    // Level 3's background migration: the local upgrade of the copy queued it, and the
    // registry runs it once started; its job's own times are the real figure.
    let forecast_summaries = report["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["step"] == "manifestsummaries")
        .unwrap_or_else(|| panic!("no forecast for manifestsummaries: {report:#}"))["secs"]
        .as_f64()
        .unwrap();
    let copy = tmp.path().join("copy");
    let server = TestServer::start_in(&copy, &[], &[]);
    let job = || -> (String, Option<i64>) {
        rusqlite::Connection::open(copy.join("metadata.db"))
            .unwrap()
            .query_row(
                "SELECT status, finished_at - started_at FROM jobs
                 WHERE action = 'manifestsummaries' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let real_summaries = loop {
        match job() {
            (status, Some(ms)) if status == "done" => break ms as f64 / 1000.0,
            other => assert!(
                std::time::Instant::now() < deadline,
                "manifestsummaries on the copy: {other:?} after 300 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(server);
    eprintln!("manifestsummaries of {MANIFESTS} manifests: forecast {forecast_summaries:.2} s, real {real_summaries:.2} s");
    assert!(
        forecast_summaries >= real_summaries * 0.5 && forecast_summaries <= real_summaries * 1.5,
        "manifestsummaries: forecast {forecast_summaries:.2} s, real {real_summaries:.2} s"
    );

    // The original is as it was, and no scratch store is left beside it.
    assert_eq!(sha256(&std::fs::read(&db).unwrap()), untouched);
    let left: Vec<String> = std::fs::read_dir(&original)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".wharf-rehearsal-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // In words, as an operator reads it.
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "rehearse",
            "--backup",
            backup.to_str().unwrap(),
            "--data-dir",
            dir,
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success()
            && text.contains("rehearsing 1.0.0 → ")
            && text.contains("1.0.0 → 1.1.0 metadatastoremigration: ")
            && text.contains("manifestsummaries: ")
            && text.contains("1.0.0 → 1.1.0: background migration metadatastoremigration: about ")
            && !text.contains("about about")
            && text.contains(
                "forecast for the real upgrade (100001 manifests now, 100001 in the backup):"
            ),
        "{text}"
    );
    // After: the check passes, and the plan shows the forecast.
    let after = check(vec!["--data-dir".into(), dir.into()]).await;
    assert_eq!(after["status"], "pass", "{after}");
    let out = run(
        wharf_cmd(&["upgrade", "plan", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forecast from the rehearsal of")
            && text.contains("background migration metadatastoremigration: "),
        "{text}"
    );
}

/// On PostgreSQL the rehearsal runs in a database of its own on the same server, which
/// is dropped afterwards; the registry's database is only read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_on_postgres_uses_a_scratch_database_and_drops_it() {
    let Some(pg) = support::pg_database("rehearsal") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, backup, _) = release_1_0_0_data(tmp.path(), 1_000).await;
    // The registry: its metadata in PostgreSQL, at this build's level.
    let data = tmp.path().join("pg-data");
    let mut server = TestServer::start_in(&data, &["--metadata", &pg], &[]);
    assert!(server.signal_and_wait("TERM").success());
    let server_url = std::env::var("WHARF_TEST_POSTGRES_URL").unwrap();
    let scratch_dbs = || {
        support::psql(
            &server_url,
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'wharf_rehearsal_%'",
        )
    };
    let before = scratch_dbs();
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "rehearse",
            "--backup",
            backup.to_str().unwrap(),
            "--metadata",
            &pg,
            "--data-dir",
            data.to_str().unwrap(),
            "--format",
            "json",
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let migration = report["rehearsal"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "metadatastoremigration")
        .cloned()
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(migration["rows"], 1_001, "{migration}");
    assert_eq!(scratch_dbs(), before, "the scratch database is dropped");
    assert!(data.join("upgrade-rehearsal.json").exists());
}

/// A hop's background migration that outlasts `--migration-timeout-secs` stops the
/// upgrade with a message that says what to do, after progress events with the job's
/// figures; a rerun resumes the same hop and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_migration_past_its_timeout_stops_the_upgrade_and_a_rerun_finishes() {
    use wharf_upgrade::events::{Envelope, Event};
    let tmp = tempfile::tempdir().unwrap();
    let (original, _, real_secs) = release_1_0_0_data(tmp.path(), 40_000).await;
    assert!(
        real_secs > 1.0,
        "the migration took {real_secs} s: too short to time out"
    );
    let dir = original.to_str().unwrap();
    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--format",
            "json",
            "--migration-timeout-secs",
            "1",
            "--data-dir",
            dir,
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    let events: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str::<Envelope>(l).unwrap().event)
        .collect();
    let waiting: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::WaitingForMigration { .. }))
        .collect();
    assert!(!waiting.is_empty(), "{text}");
    let Some(Event::Failed { error }) = events.last() else {
        panic!("no failed event last: {text}");
    };
    assert!(
        error.contains("metadatastoremigration")
            && error.contains("did not finish within 1 s")
            && error.contains("rerun `wharf upgrade apply`"),
        "{error}"
    );
    // Not a step further: the data is at 1.1.0, its background step not recorded.
    let peeked = wharf_metastore::schema::peek_sqlite(&original.join("metadata.db"))
        .unwrap()
        .unwrap();
    assert_eq!(peeked.wharf_version, "1.1.0");

    let out = run(
        wharf_cmd(&[
            "upgrade",
            "apply",
            "--yes",
            "--format",
            "json",
            "--data-dir",
            dir,
        ]),
        None,
        Duration::from_secs(600),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let events: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str::<Envelope>(l).unwrap().event)
        .collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::Step { step, status, detail: Some(d), .. }
            if step == "background" && status == "done" && d.starts_with("metadatastoremigration done"))),
        "{text}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::Finished {
                changed: Some(true),
                ..
            })
        ),
        "{text}"
    );
    let peeked = wharf_metastore::schema::peek_sqlite(&original.join("metadata.db"))
        .unwrap()
        .unwrap();
    assert_eq!(peeked.wharf_version, env!("CARGO_PKG_VERSION"));
}

/// Schema level 3's background migration: images that 1.1.0 stored get the summary
/// (size and platforms) that 1.2.0 stores with every push, so a page of tags reads no
/// blobs. The local upgrade queues `manifestsummaries`; the registry, once started,
/// runs it; an image whose configuration is missing from the blob store gets its
/// platforms as unknown rather than failing the job; a push after the upgrade is
/// stored with its summary at once.
#[tokio::test]
async fn an_upgrade_from_1_1_0_fills_in_the_summaries_of_older_images() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    let (image, image_digest) =
        http::push_image(&c, &server.base, "team/app", "v1", "summarised").await;
    let (_, damaged_digest) =
        http::push_image(&c, &server.base, "team/app", "v2", "config lost").await;
    assert!(server.signal_and_wait("TERM").success());
    let db = data.join("metadata.db");
    as_release_1_1_0(&db);
    // The second image's configuration is gone from the blob store (a damaged store).
    let damaged: Value = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let payload: Vec<u8> = conn
            .query_row(
                "SELECT payload FROM manifests WHERE digest = ?",
                [&damaged_digest],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    };
    let config_hex = damaged["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let config_file = data
        .join("blobs")
        .join("sha256")
        .join(&config_hex[..2])
        .join(&config_hex);
    std::fs::remove_file(&config_file).unwrap_or_else(|e| panic!("{}: {e}", config_file.display()));
    let dir = data.to_str().unwrap();

    let out = run(
        wharf_cmd(&["upgrade", "apply", "--yes", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let line = text
        .lines()
        .find(|l| l.contains("[5/5] background:"))
        .unwrap_or_else(|| panic!("no background step in:\n{text}"));
    assert!(
        line.contains("manifestsummaries queued as job ")
            && line.contains(" for 2 manifests (follow it with `wharf jobs logs "),
        "{text}"
    );
    let (status, report) = check(dir, &[]).await;
    let background = named_check(&report, "background-migrations");
    assert_ne!(status, 0, "{report:#}");
    assert_eq!(background["status"], "fail", "{background}");
    assert!(
        background["measured"]
            .as_str()
            .unwrap()
            .contains("2 manifests lack a summary; manifestsummaries: job "),
        "{background}"
    );

    // A summary whose manifest is gone, as when a 1.1.0 replica deletes a manifest
    // during a rolling upgrade (it does not know the table): the job removes it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO manifest_summaries (repository_id, digest, size, platforms) VALUES (1, 'sha256:gone', 1, '')",
            [],
        )
        .unwrap();
    // The registry runs the job; bounded wait on what the store says.
    let server = TestServer::start_in(&data, &[], &[]);
    let summaries = |digest: &str| -> Option<(i64, Option<String>)> {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT size, platforms FROM manifest_summaries WHERE digest = ?",
                [digest],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok()
    };
    let job_status = || -> String {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT status FROM jobs WHERE action = 'manifestsummaries' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while job_status() != "done" {
        assert!(
            std::time::Instant::now() < deadline,
            "manifestsummaries is {:?} after 60 s",
            job_status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let parsed: Value = serde_json::from_slice(&image).unwrap();
    let size =
        parsed["config"]["size"].as_i64().unwrap() + parsed["layers"][0]["size"].as_i64().unwrap();
    assert_eq!(
        summaries(&image_digest),
        Some((size, Some("linux/amd64".into())))
    );
    assert_eq!(summaries(&damaged_digest).map(|s| s.1), Some(None));
    assert_eq!(summaries("sha256:gone"), None, "the orphan is removed");
    let out = run(
        wharf_cmd(&["upgrade", "status", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    let st = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(st.contains("manifestsummaries (job "), "{st}");
    let (status, report) = check(dir, &[]).await;
    let background = named_check(&report, "background-migrations");
    assert_eq!(background["status"], "pass", "{status} {background}");

    // A push now is stored with its summary, no job needed.
    let (_, pushed) = http::push_image(&c, &server.base, "team/app", "v3", "after").await;
    assert_eq!(
        summaries(&pushed).and_then(|s| s.1),
        Some("linux/amd64".into())
    );
    drop(server);
}
