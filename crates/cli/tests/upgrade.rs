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

/// Turns a store written by this build back into what release 1.0.0 left: schema level 1
/// (the reverse of level 2's expand migration).
fn as_release_1_0_0(db: &std::path::Path) {
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
async fn apply_moves_1_0_0_data_step_by_step_and_resumes_after_a_failure() {
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

    // Again: it resumes, and finishes.
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
    assert!(
        text.contains("upgrade 1.0.0 → ") && text.contains("(resuming)"),
        "{text}"
    );
    assert!(text.contains("[1/5] checks: done before"), "{text}");
    assert!(text.contains("[2/5] backup: metadata backup"), "{text}");
    assert!(
        text.contains("[3/5] expand: schema levels applied: [2]"),
        "{text}"
    );
    assert!(
        text.contains("[4/5] background: metadatastoremigration queued as job"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(data.join("backups")).unwrap().count() == 1,
        "one pre-upgrade backup"
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
    assert!(
        st.contains("metadatastoremigration (job 1): waiting — not started"),
        "{st}"
    );
    let out = run(
        wharf_cmd(&["upgrade", "apply", "--yes", "--data-dir", dir]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));

    // The registry serves the upgraded data; its worker runs the migration; then GC works
    // and keeps the image.
    let server = TestServer::start_in(&data, &["--job-heartbeat-secs", "1"], &[]);
    let mut follow = wharf_cmd(&["jobs", "logs", "1", "--follow", "--data-dir", dir]);
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

/// `apply`, killed with SIGKILL as soon as it reports step `k` done; returns what it
/// printed.
fn apply_killed_after(dir: &std::path::Path, k: usize) -> String {
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
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.take(50) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with(&format!("[{k}/5]")) {
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    seen
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

    for k in 1..=4 {
        let dir = tmp.path().join(format!("killed-after-{k}"));
        copy_dir(&original, &dir);
        let first = apply_killed_after(&dir, k);
        assert!(first.contains(&format!("[{k}/5]")), "step {k}: {first}");
        // Again, to the end: the steps done before are not done twice.
        let out = run(
            wharf_cmd(&[
                "upgrade",
                "apply",
                "--yes",
                "--data-dir",
                dir.to_str().unwrap(),
            ]),
            None,
            Duration::from_secs(60),
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "after a kill at step {k}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The kill lands just after step k is reported, so later steps may have run too;
        // whatever was done is not done again.
        let steps = ["checks", "backup", "expand", "background", "finalise"];
        if !text.contains("nothing to do") {
            assert!(text.contains("upgraded to"), "{text}");
            for (n, step) in steps.iter().enumerate().take(k) {
                let line = format!("[{}/5] {step}: done before", n + 1);
                assert!(
                    text.contains(&line),
                    "after a kill at step {k}, expected {line:?}: {text}"
                );
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.join("backups"))
                .map(|d| d.count())
                .unwrap_or(0),
            1,
            "one pre-upgrade backup after a kill at step {k}"
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
