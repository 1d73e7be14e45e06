//! The job system as an operator uses it: the management API with an access token
//! (curl, as the upgrade guide shows it), the `wharf jobs` command, workers and
//! schedules, on a real `wharf serve`.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use secure::{admin, create_token, create_user, request, run_ok, wharf_cmd};
use serde_json::{json, Value};
use support::{serve_command, TestServer};

fn start_secure(extra: &[&str]) -> (TestServer, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--job-heartbeat-secs", "1"])
        .args(extra)
        .arg("--data-dir")
        .arg(&data)
        .env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
    (TestServer::launch(cmd, &data), tmp)
}

/// `curl -s -u USER:SECRET [-X METHOD] URL [-d BODY]`; returns status and JSON body.
fn curl(user: &str, secret: &str, method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-w",
        "\n%{http_code}",
        "-u",
        &format!("{user}:{secret}"),
        "-X",
        method,
        url,
    ]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Polls a job through the API until it is over (bounded).
fn wait_for_job(base: &str, token: &str, id: i64) -> Value {
    for _ in 0..300 {
        let (code, job) = curl(
            "admin",
            token,
            "GET",
            &format!("{base}/api/v0/jobs/{id}"),
            None,
        );
        assert_eq!(code, 200, "{job}");
        if ["done", "error", "cancelled", "worker_dead"].contains(&job["status"].as_str().unwrap())
        {
            return job;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {id} did not finish in 30 s");
}

#[tokio::test]
async fn jobs_through_the_api_with_an_access_token() {
    if !support::require_tool("curl") {
        return;
    }
    let (server, _tmp) = start_secure(&[]);
    let (_, token, _) = create_token(&server, &admin(), "admin", "jobs", None).await;
    let base = server.base.clone();
    // An upload nobody finishes.
    let r = request(
        &server,
        Method::POST,
        "/v2/admin/app/blobs/uploads/",
        &admin(),
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 202, "{}", r.describe());
    let upload = r.header("location").unwrap().to_string();

    // The guide's call, with this registry's action names.
    let (code, job) = curl(
        "admin",
        &token,
        "POST",
        &format!("{base}/api/v0/jobs"),
        Some(r#"{"action": "purge_uploads", "params": {"older_than_secs": 0}}"#),
    );
    assert_eq!(code, 202, "{job}");
    assert_eq!(job["status"], "waiting");
    assert_eq!(job["max_attempts"], 3);
    let id = job["id"].as_i64().unwrap();
    let done = wait_for_job(&base, &token, id);
    assert_eq!(
        (done["status"].as_str(), done["attempts"].as_i64()),
        (Some("done"), Some(1)),
        "{done}"
    );
    let (code, logs) = curl(
        "admin",
        &token,
        "GET",
        &format!("{base}/api/v0/jobs/{id}/logs"),
        None,
    );
    assert_eq!(code, 200);
    let lines: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        lines[0].starts_with("attempt 1 of 3 started on worker-"),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("done: 1 abandoned sessions"),
        "{lines:?}"
    );
    // The upload is gone.
    let r = request(&server, Method::GET, &upload, &admin(), None).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.describe());

    // Listing, filtering, the worker, and what is refused.
    let (_, list) = curl(
        "admin",
        &token,
        "GET",
        &format!("{base}/api/v0/jobs?action=purge_uploads&status=done"),
        None,
    );
    assert_eq!(list["jobs"][0]["id"], id);
    let (_, workers) = curl(
        "admin",
        &token,
        "GET",
        &format!("{base}/api/v0/workers"),
        None,
    );
    let w = &workers["workers"][0];
    assert_eq!(
        (w["alive"].as_bool(), w["address"].as_str()),
        (Some(true), Some(base.as_str())),
        "{workers}"
    );
    let (code, err) = curl(
        "admin",
        &token,
        "POST",
        &format!("{base}/api/v0/jobs"),
        Some(r#"{"action": "format_disk"}"#),
    );
    assert_eq!(code, 400);
    assert!(
        err["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("purge_uploads"),
        "{err}"
    );
    create_user(&server, "bob", "bob-password-123").await;
    let (code, _) = curl(
        "bob",
        "bob-password-123",
        "POST",
        &format!("{base}/api/v0/jobs"),
        Some(r#"{"action": "purge_uploads"}"#),
    );
    assert_eq!(code, 403, "only administrators queue jobs");
    let (code, _) = curl(
        "admin",
        "wrong",
        "GET",
        &format!("{base}/api/v0/jobs"),
        None,
    );
    assert_eq!(code, 401);
    let (code, _) = curl(
        "admin",
        &token,
        "GET",
        &format!("{base}/api/v0/jobs/999999"),
        None,
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn schedules_through_the_api() {
    let (server, _tmp) = start_secure(&[]);
    let cred = admin();
    let body = json!({"action": "purge_uploads", "schedule": "0 3 * * *", "run_for_minutes": 30});
    let r = request(
        &server,
        Method::PUT,
        "/api/v0/crons/nightly-purge",
        &cred,
        Some(&body),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.describe());
    let next = r.json()["next_run_at_ms"].as_i64().unwrap();
    let now = wharf_metastore::now_ms();
    assert!(
        next > now && next <= now + 24 * 3600 * 1000,
        "next run within a day: {next}"
    );
    let r = request(&server, Method::GET, "/api/v0/crons", &cred, None).await;
    assert_eq!(r.json()["crons"][0]["run_for_minutes"], 30);
    let bad = json!({"action": "purge_uploads", "schedule": "at three"});
    let r = request(&server, Method::PUT, "/api/v0/crons/x", &cred, Some(&bad)).await;
    assert_eq!(r.status.as_u16(), 400);
    assert!(r.text().contains("not a cron expression"), "{}", r.text());
    let r = request(
        &server,
        Method::DELETE,
        "/api/v0/crons/nightly-purge",
        &cred,
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 204);
    let r = request(
        &server,
        Method::DELETE,
        "/api/v0/crons/nightly-purge",
        &cred,
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test]
async fn wharf_jobs_run_wait_list_show_and_logs() {
    let (server, _tmp) = start_secure(&[]);
    let data = ["--data-dir", server.data_dir.to_str().unwrap()];
    let out = run_ok(
        {
            let mut c = wharf_cmd(&["jobs", "run", "purge_uploads", "--wait"]);
            c.args(data);
            c
        },
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        out.contains("queued job") && out.contains("done: 0 abandoned sessions"),
        "{out}"
    );
    let list = run_ok(
        {
            let mut c = wharf_cmd(&["jobs", "list"]);
            c.args(data);
            c
        },
        None,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        list.lines().nth(1).unwrap().contains("purge_uploads") && list.contains("done"),
        "{list}"
    );
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let show = run_ok(
        {
            let mut c = wharf_cmd(&["jobs", "show", &id]);
            c.args(data);
            c
        },
        None,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        show.contains("purge_uploads — done") && show.contains("attempts:  1 of 3"),
        "{show}"
    );
    let logs = run_ok(
        {
            let mut c = wharf_cmd(&["jobs", "logs", &id]);
            c.args(data);
            c
        },
        None,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        logs.contains("[attempt 1] attempt 1 of 3 started"),
        "{logs}"
    );
    let out = secure::run_fails(
        {
            let mut c = wharf_cmd(&["jobs", "run", "nonsense"]);
            c.args(data);
            c
        },
        None,
        Duration::from_secs(30),
    )
    .await;
    assert!(out.contains("unknown action"), "{out}");
}
