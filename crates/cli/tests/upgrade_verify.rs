//! `wharf upgrade verify` as an operator runs it after an upgrade, against a real
//! `wharf serve` with authentication on: every check passes and the canary is gone
//! afterwards; wrong credentials and data at another version fail, saying why.

mod support;

#[path = "support/secure.rs"]
mod secure;

use std::time::Duration;

use reqwest::Method;
use secure::{admin, bearer, create_token, run, wharf_cmd, Cred};
use serde_json::Value;
use support::TestServer;

const OWN: &str = env!("CARGO_PKG_VERSION");
const CANARY: &str = "wharf-verify/canary";

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.all()))
    }

    fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The text output's line for a check (`  FAIL     api  …`).
    fn line(&self, status: &str, name: &str) -> &str {
        let prefix = format!("  {status:<8} {name:<15} ");
        self.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{}", self.all()))
    }
}

/// `wharf upgrade verify ARGS` with `stdin` and extra environment variables.
async fn verify(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Outcome {
    let mut c = wharf_cmd(&["upgrade", "verify"]);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run(c, stdin, Duration::from_secs(120)).await;
    Outcome {
        code: out.status.code().expect("wharf exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_named<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn measured(report: &Value, name: &str) -> String {
    check_named(report, name)["measured"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An access token for the initial administrator, as `curl … /api/v0/users/admin/tokens`
/// makes one.
async fn admin_token(server: &TestServer) -> String {
    create_token(server, &admin(), "admin", "upgrade verify", None)
        .await
        .1
}

/// GET on the canary repository with a pull token, as a client would look for it.
async fn canary_get(server: &TestServer, path: &str) -> secure::Reply {
    let token = bearer(server, &admin(), &[&format!("repository:{CANARY}:pull")]).await;
    let rb = secure::client()
        .request(Method::GET, server.url(&format!("/v2/{CANARY}/{path}")))
        .header("accept", secure::OCI_MANIFEST);
    secure::send(Cred::Bearer(token).apply(rb)).await
}

#[tokio::test]
async fn verify_passes_on_a_secure_registry_and_leaves_no_canary() {
    let server = TestServer::start_secure();
    let token = admin_token(&server).await;
    let dir = server.data_dir.to_str().unwrap();

    // An access token as the password, JSON for scripts.
    let out = verify(
        &[
            "--url",
            &server.base,
            "--username",
            "admin",
            "--password-stdin",
            "--data-dir",
            dir,
            "--format",
            "json",
        ],
        Some(&format!("{token}\n")),
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    let report = out.json();
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "versions",
            "api",
            "cluster-status",
            "canary",
            "web-ui",
            "content-caches"
        ],
        "{report:#}"
    );
    assert_eq!(report["failed"], 0, "{report:#}");
    for name in ["versions", "api", "canary"] {
        assert_eq!(check_named(&report, name)["status"], "pass", "{report:#}");
    }
    // Low disk on the test machine would be a warning, never a failure.
    let cluster = &check_named(&report, "cluster-status")["status"];
    assert!(cluster == "pass" || cluster == "warn", "{report:#}");
    assert!(
        measured(&report, "cluster-status").starts_with("1 replica(s), all healthy"),
        "{report:#}"
    );
    let web = check_named(&report, "web-ui");
    assert_eq!(web["status"], "pass", "{report:#}");
    assert!(
        web["measured"]
            .as_str()
            .unwrap()
            .contains(&format!("and the system page (version {OWN})")),
        "{report:#}"
    );
    // The web session verify signed in with was ended again.
    let rb = secure::client().get(server.url("/api/v0/audit?limit=100"));
    let audit = secure::send(Cred::Basic("admin".into(), token.clone()).apply(rb)).await;
    let actions: Vec<String> = audit
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["action"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        actions.contains(&"session.start".to_string())
            && actions.contains(&"session.end".to_string()),
        "{}",
        audit.describe()
    );
    let versions = measured(&report, "versions");
    assert_eq!(versions, format!("data {OWN}; 1 live replica(s) on {OWN}"));
    let api = measured(&report, "api");
    assert!(
        api.contains("GET /v2/: 200 as admin with a bearer token")
            && api.contains(&format!("GET /api/v0/meta/version: {OWN} (commit ")),
        "{api}"
    );
    let canary = measured(&report, "canary");
    let tag = report["canary"]["tag"].as_str().unwrap().to_string();
    let digest = report["canary"]["manifest_digest"].as_str().unwrap();
    assert!(
        canary.starts_with(&format!("pushed {CANARY}:{tag} ("))
            && canary.contains("bit for bit")
            && canary.ends_with(&format!("deleted manifest {digest} and 2 blob(s)")),
        "{canary}"
    );
    assert!(report["canary"]["bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(report["canary"]["removed"], true);

    // Nothing of the canary is left: no tag, no manifest, no blob.
    let r = canary_get(&server, &format!("manifests/{tag}")).await;
    secure::expect(&r, 404, Some("MANIFEST_UNKNOWN"), "the canary's tag");
    let r = canary_get(&server, &format!("manifests/{digest}")).await;
    secure::expect(&r, 404, Some("MANIFEST_UNKNOWN"), "the canary's manifest");
    let r = canary_get(&server, "tags/list").await;
    secure::expect(&r, 200, None, "the canary repository's tags");
    assert_eq!(r.json()["tags"], serde_json::json!([]), "{}", r.describe());

    // The password from the environment, text for people; a second run pushes its own tag.
    let out = verify(
        &[
            "--url",
            &server.base,
            "--username",
            "admin",
            "--data-dir",
            dir,
        ],
        None,
        &[("WHARF_PASSWORD", support::ADMIN_PASSWORD)],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("verifying {} against wharf {OWN}", server.base).as_str()),
        "{}",
        out.all()
    );
    out.line("PASS", "versions");
    out.line("PASS", "api");
    let canary = out.line("PASS", "canary");
    assert!(
        canary.contains("bit for bit") && !canary.contains(&tag),
        "{canary}"
    );
    let web = out.line("PASS", "web-ui");
    assert!(
        web.contains("sign-in page, 3 files and the system page")
            && web.contains(&format!("(version {OWN})")),
        "{web}"
    );
    assert_eq!(out.stdout.lines().last(), Some("all checks pass"));
    let r = canary_get(&server, "tags/list").await;
    assert_eq!(r.json()["tags"], serde_json::json!([]), "{}", r.describe());
}

/// Turns a store written by this build back into what release 1.0.0 left: schema level 1
/// (the reverse of level 2's expand migration). As in tests/upgrade.rs.
fn as_release_1_0_0(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TABLE job_logs; DROP TABLE jobs; DROP TABLE workers; DROP TABLE crons; DROP TABLE manifest_refs;
         DROP INDEX manifests_without_refs; ALTER TABLE manifests DROP COLUMN refs_recorded;
         DELETE FROM wharf_schema WHERE level > 1; UPDATE wharf_schema SET wharf_version = '1.0.0';",
    )
    .unwrap();
}

/// Registers a replica at `version` that heartbeats once an hour (so it counts as live).
fn add_replica(db: &std::path::Path, id: &str, address: &str, version: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "INSERT INTO replicas (id, address, version, schema_level, started_at, heartbeat_at, clock,
                               disk_free, disk_total, memory_available, heartbeat_interval)
         VALUES (?1, ?2, ?3, 1, ?4, ?4, ?4, 1000, 2000, 1000, 3600000)",
        rusqlite::params![id, address, version, now],
    )
    .unwrap();
}

#[tokio::test]
async fn verify_fails_on_wrong_credentials_and_on_data_at_another_version() {
    let server = TestServer::start_secure();
    let token = admin_token(&server).await;
    let dir = server.data_dir.to_str().unwrap();

    // A wrong password: the API and the canary fail, saying the credentials were refused.
    let out = verify(
        &[
            "--url",
            &server.base,
            "--username",
            "admin",
            "--data-dir",
            dir,
        ],
        None,
        &[("WHARF_PASSWORD", "not-the-password")],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.all());
    out.line("PASS", "versions");
    let api = out.line("FAIL", "api");
    assert!(
        api.contains("the registry refused the credentials of admin")
            && api.contains("answered 401 UNAUTHORIZED"),
        "{api}"
    );
    assert!(
        api.contains(&format!("GET /api/v0/meta/version: {OWN}")),
        "{api}"
    );
    let canary = out.line("FAIL", "canary");
    assert!(
        canary.contains("not pushed: not signed in: the registry refused the credentials of admin"),
        "{canary}"
    );
    let cluster = out.line("FAIL", "cluster-status");
    assert!(
        cluster.contains("GET /api/v0/meta/cluster_status answered 401"),
        "{cluster}"
    );
    assert!(
        out.stdout
            .contains("fix: check the credentials: --username with its password")
            && out.stdout.contains("fix: sign in as an administrator"),
        "{}",
        out.all()
    );
    assert!(
        out.line("FAIL", "web-ui")
            .contains("signing in to the web UI as admin answered 401"),
        "{}",
        out.all()
    );
    assert_eq!(out.stdout.lines().last(), Some("4 check(s) fail"));

    // No credentials at all on a registry that requires them.
    let out = verify(&["--url", &server.base, "--data-dir", dir], None, &[]).await;
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.line("FAIL", "api")
            .contains("the registry requires authentication (GET /v2/ answered 401)"),
        "{}",
        out.all()
    );

    // The metadata store of a registry whose data is still 1.0.0's, with a replica
    // running 1.0.0: `versions` fails naming both; the rest passes.
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let mut old_server = TestServer::start_in(&old, &[], &[]);
    assert!(old_server.signal_and_wait("TERM").success());
    let db = old.join("metadata.db");
    as_release_1_0_0(&db);
    add_replica(&db, "old-replica", "10.0.0.9:5000", "1.0.0");
    let out = verify(
        &[
            "--url",
            &server.base,
            "--username",
            "admin",
            "--password-stdin",
            "--data-dir",
            old.to_str().unwrap(),
            "--format",
            "json",
        ],
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.all());
    let report = out.json();
    assert_eq!(report["failed"], 1, "{report:#}");
    let versions = check_named(&report, "versions");
    assert_eq!(versions["status"], "fail");
    assert_eq!(
        versions["measured"],
        format!(
            "data 1.0.0, this binary {OWN}; 0 of 1 live replica(s) on {OWN}; not on {OWN}: \
             old-replica at 10.0.0.9:5000 runs 1.0.0"
        ),
        "{report:#}"
    );
    let fix = versions["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("`wharf upgrade apply` with wharf {OWN}"))
            && fix.contains("replace the replicas that run another version"),
        "{fix}"
    );
    for name in ["api", "canary"] {
        assert_eq!(check_named(&report, name)["status"], "pass", "{report:#}");
    }

    // Without the data there is nothing to compare: it says where it looked.
    let missing = tmp.path().join("missing");
    let out = verify(
        &[
            "--url",
            &server.base,
            "--username",
            "admin",
            "--password-stdin",
            "--data-dir",
            missing.to_str().unwrap(),
        ],
        Some(&token),
        &[],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.all());
    let line = out.line("FAIL", "versions");
    assert!(
        line.contains("cannot read the data's version: no registry data at")
            && line.contains("missing"),
        "{line}"
    );
}

#[tokio::test]
async fn verify_refuses_bad_input() {
    let out = verify(
        &["--url", "127.0.0.1:5000", "--data-dir", "/nonexistent"],
        None,
        &[],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("is not an http:// or https:// URL"),
        "{}",
        out.all()
    );
    let out = verify(
        &["--url", "http://127.0.0.1:9", "--username", "admin"],
        None,
        &[],
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr
            .contains("no password for admin: pass --password-stdin or set WHARF_PASSWORD"),
        "{}",
        out.all()
    );
}
