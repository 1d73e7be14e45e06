//! `wharf upgrade apply --driver external`: an orchestrator (here, the test) replaces
//! the replicas; wharf waits until each address reports the new version, says who is
//! left, then verifies and finalises. Two replicas of the real release 1.1.0 (the
//! previous minor release) on
//! PostgreSQL and a shared blob directory, replaced one at a time by this build.

mod support;

#[path = "support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
// support/http.rs uses it through the crate root.
use support::sha256;
use support::{TestServer, WHARF};

const OWN: &str = env!("CARGO_PKG_VERSION");

fn release_1_1_0() -> Option<String> {
    match std::env::var("WHARF_TEST_RELEASE_1_1_0") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "WHARF_TEST_RELEASE_1_1_0 is required under CI=true (scripts/test.sh builds it)"
            );
            eprintln!(
                "SKIPPED: no WHARF_TEST_RELEASE_1_1_0 (scripts/build-release.sh 1.1.0 builds it)"
            );
            None
        }
    }
}

/// A replica of `binary` on `port`, sharing the store.
fn replica(
    binary: &str,
    port: u16,
    pg: &str,
    blobs: &std::path::Path,
    data: &std::path::Path,
) -> TestServer {
    let mut cmd = Command::new(binary);
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("WHARF_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metadata",
        pg,
        "--insecure-no-auth",
    ])
    .arg("--blobs")
    .arg(blobs)
    .arg("--data-dir")
    .arg(data)
    .args(["--heartbeat-interval-secs", "1"])
    .env("WHARF_LOG_LEVEL", "warn")
    .stderr(Stdio::inherit());
    TestServer::launch(cmd, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_driver_waits_for_the_orchestrator_to_replace_each_replica() {
    let (Some(old), Some(pg)) = (release_1_1_0(), support::pg_database("ext_waits")) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("blobs");
    let ports = [support::free_port(), support::free_port()];
    let mut replicas: Vec<TestServer> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| replica(&old, *p, &pg, &blobs, &tmp.path().join(format!("r{i}"))))
        .collect();
    let c = http::client();
    let (manifest, _) = http::push_image(&c, &replicas[0].base, "ext/app", "v1", "external").await;

    let mut apply = Command::new(WHARF)
        .args([
            "upgrade",
            "apply",
            "--driver",
            "external",
            "--metadata",
            &pg,
            "--yes",
        ])
        .args([
            "--format",
            "json",
            "--settle-secs",
            "0",
            "--replica-timeout-secs",
            "60",
        ])
        .arg("--blobs")
        .arg(&blobs)
        .arg("--data-dir")
        .arg(tmp.path().join("upgrade"))
        .env_remove("WHARF_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = apply.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(10_000)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });

    // The orchestrator: each time wharf waits for a replica, replace that replica.
    let mut events = Vec::new();
    let mut replaced = [false; 2];
    let mut waits_seen = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(120)) {
        events.push(e.clone());
        if e["event"] == "replica" && e["phase"] == "waiting" {
            waits_seen.push(e["detail"].as_str().unwrap_or("").to_string());
            let i = ports
                .iter()
                .position(|p| {
                    e["replica"]
                        .as_str()
                        .unwrap_or("")
                        .ends_with(&format!(":{p}"))
                })
                .unwrap_or_else(|| panic!("waiting for an unknown replica: {e}"));
            if !replaced[i] {
                assert!(replicas[i].signal_and_wait("TERM").success());
                replicas[i] = replica(
                    WHARF,
                    ports[i],
                    &pg,
                    &blobs,
                    &tmp.path().join(format!("n{i}")),
                );
                replaced[i] = true;
            }
        }
        if e["event"] == "finished" || e["event"] == "failed" {
            break;
        }
    }
    let status =
        support::wait_with_timeout(&mut apply, Duration::from_secs(30)).expect("apply ends");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    assert!(status.success(), "{text}");
    assert_eq!(replaced, [true, true], "{text}");
    // While waiting, it said who is still on another version.
    assert!(
        waits_seen[0].contains("waiting for the orchestrator") && waits_seen[0].contains("(1.1.0)"),
        "{waits_seen:?}"
    );
    let ready: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "replica" && e["phase"] == "ready")
        .collect();
    assert_eq!(ready.len(), 2, "{text}");
    assert!(
        events
            .iter()
            .any(|e| e["step"] == "finalise" && e["status"] == "done"),
        "{text}"
    );
    // From 1.1.0, the only level to finalise is this build's (3), whose background
    // migration (`manifestsummaries`) is queued for the new replicas to run.
    let finalised = format!(
        "schema levels finalised: [{}]",
        wharf_metastore::schema::SCHEMA_LEVEL
    );
    assert!(
        events.iter().any(|e| e["step"] == "finalise"
            && e["detail"].as_str().is_some_and(|d| d.contains(&finalised))),
        "no `{finalised}`: {text}"
    );
    assert!(
        events.iter().any(|e| e["step"] == "background"
            && e["status"] == "done"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("manifestsummaries queued as job "))),
        "{text}"
    );

    // The cluster is at this version once the new replicas have run the background
    // migration, and the image pulls back from both of them.
    let status = || {
        let out = Command::new(WHARF)
            .args(["upgrade", "status", "--format", "json", "--metadata", &pg])
            .arg("--data-dir")
            .arg(tmp.path().join("upgrade"))
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let st = loop {
        let st = status();
        let done = st["background_migrations"].as_array().is_some_and(|b| {
            b.iter()
                .any(|j| j["action"] == "manifestsummaries" && j["status"] == "done")
        });
        if done {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "manifestsummaries not done within 120 s: {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(st["data_version"], OWN, "{st:#}");
    assert_eq!(
        st["schema_level"],
        wharf_metastore::schema::SCHEMA_LEVEL,
        "{st:#}"
    );
    for r in &replicas {
        let got = c
            .get(format!("{}/v2/ext/app/manifests/v1", r.base))
            .header("accept", http::OCI_MANIFEST)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got, manifest, "from {}", r.base);
    }
}
