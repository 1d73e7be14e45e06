//! `wharf serve` as an operator meets it: configuration layering, logs, signals,
//! crashes and concurrent clients.

#[path = "support/http.rs"]
mod http;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::*;
use reqwest::StatusCode;
use support::{serve_command, sha256, TestServer, WHARF};

/// A request body fed by the test: each `send` returns once the client has taken the
/// previous chunk, so the test knows how far the upload has got without sleeping.
fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

const MIB: usize = 1 << 20;

#[test]
fn serve_help_documents_every_setting() {
    let out = Command::new(WHARF)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--config",
        "WHARF_CONFIG",
        "--listen",
        "WHARF_LISTEN",
        "127.0.0.1:5000",
        "--data-dir",
        "WHARF_DATA_DIR",
        "wharf-data",
        "--log-format",
        "json",
        "--log-level",
        "--max-manifest-bytes",
        "--upload-expiry-secs",
        "--shutdown-timeout-secs",
        "SIGTERM",
        "flags win over the environment",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn defaults_keep_data_in_wharf_data_under_the_working_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the port is overridden: the default 5000 may be taken on a shared machine.
    let mut cmd = serve_command();
    cmd.current_dir(tmp.path())
        .env("WHARF_LISTEN", "127.0.0.1:0");
    let s = TestServer::launch(cmd, &tmp.path().join("wharf-data"));
    assert!(
        s.addr.starts_with("127.0.0.1:"),
        "listens on loopback by default: {}",
        s.addr
    );
    assert!(tmp.path().join("wharf-data/metadata.db").exists());
    assert!(tmp.path().join("wharf-data/blobs").is_dir());
}

#[tokio::test]
async fn flags_win_over_environment_which_wins_over_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (file_dir, env_dir) = (tmp.path().join("from-file"), tmp.path().join("from-env"));
    let config = tmp.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"{}\"\nmax_manifest_bytes = 1000\n",
            file_dir.display()
        ),
    )
    .unwrap();
    let mut cmd = serve_command();
    cmd.arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0");
    cmd.env("WHARF_LISTEN", "127.0.0.1:2")
        .env("WHARF_DATA_DIR", &env_dir)
        .env("WHARF_INSECURE_NO_AUTH", "true");
    let s = TestServer::launch(cmd, &env_dir);
    // The flag beat both the environment (port 2) and the file (port 1).
    assert!(
        !s.addr.ends_with(":1") && !s.addr.ends_with(":2"),
        "{}",
        s.addr
    );
    // The environment beat the file for the data directory.
    assert!(env_dir.join("metadata.db").exists() && !file_dir.exists());
    // The file still supplies what nothing else set.
    let c = client();
    push_blob(&c, &s.base, "cfg", b"{}").await;
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(b"{}", &[])).unwrap();
    m["annotations"] = serde_json::json!({"pad": "x".repeat(1500)});
    let r = put_manifest(
        &c,
        &s.base,
        "cfg",
        "v1",
        OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    )
    .await;
    assert_eq!(r.status().as_u16(), 413);
}

#[test]
fn a_typo_in_the_config_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("wharf.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = serve_command()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("lisen"),
        "{err}"
    );
}

#[test]
fn a_bad_listen_address_is_a_clear_error() {
    let out = serve_command()
        .args(["--listen", "not-an-address"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

/// A first start on a busy port: it fails before it creates anything, so the retry on
/// another port is the real first start and shows the one-time admin password.
#[test]
fn a_busy_port_fails_before_the_store_and_the_admin_password_exist() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let out = serve_command()
        .arg("--listen")
        .arg(&busy_addr)
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "serve on a busy port succeeded");
    assert!(
        stderr.contains(&format!("cannot listen on {busy_addr}"))
            && stderr.contains("--listen")
            && stderr.contains("WHARF_LISTEN"),
        "the error does not say how to pick another address: {stderr}"
    );
    assert!(
        !stdout.contains("Password"),
        "a password was printed by a start that failed: {stdout}"
    );
    assert!(
        !data_dir.join("metadata.db").exists(),
        "a failed start created the store"
    );

    // The retry elsewhere is the first start: it creates the administrator and says so.
    let mut cmd = serve_command();
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut seen = Vec::new();
    // Bounded: serve prints the password lines, then the listening line.
    for line in lines.by_ref().take(3) {
        let line = line.unwrap();
        let done = line.contains(" listening on ");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("Created the initial administrator. User: admin  Password: ")),
        "the retry did not show the generated password: {seen:?}"
    );
    drop(busy);
}

#[tokio::test]
async fn json_logs_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.jsonl");
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .env("WHARF_LOG_LEVEL", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let mut s = TestServer::launch(cmd, &tmp.path().join("d"));
    assert!(s.signal_and_wait("TERM").success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "wharf is serving" && l["level"] == "INFO"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_upload_finish_then_exits_0() {
    let mut s = TestServer::start();
    let c = client();
    let loc = header(
        &c.post(s.url("/v2/drain/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let (tx, body) = channel_body();
    let patch = tokio::spawn(c.patch(s.url(&loc)).body(body).send());
    let chunk = Bytes::from(vec![7u8; MIB]);
    // 32 MiB taken by the client is more than socket buffers hold: the server's handler
    // is reading this request when the signal arrives.
    for _ in 0..32 {
        tx.send(chunk.clone()).await.unwrap();
    }
    let pid = s.pid();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    for _ in 0..32 {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let r = patch.await.unwrap().expect("in-flight request completes");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", 64 * MIB - 1));
    let status = support::wait_with_timeout(&mut s.child, Duration::from_secs(30))
        .expect("exits after draining");
    assert!(status.success(), "{status:?}");
    // The recorded progress survives the restart.
    let s2 = TestServer::start_in(&s.data_dir.clone(), &[], &[]);
    let r = c.get(s2.url(&loc)).send().await.unwrap();
    assert_eq!(header(&r, "range"), format!("0-{}", 64 * MIB - 1));
}

#[tokio::test]
async fn sigint_exits_0() {
    let mut s = TestServer::start();
    assert_eq!(
        client().get(s.url("/v2/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(s.signal_and_wait("INT").success());
}

#[tokio::test]
async fn sigkill_mid_upload_never_exposes_a_partial_blob() {
    let mut s = TestServer::start();
    let c = client();
    let content: Vec<u8> = (0..64 * MIB).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&content);
    let (tx, body) = channel_body();
    let put = tokio::spawn(
        c.post(s.url(&format!("/v2/crash/blobs/uploads/?digest={digest}")))
            .body(body)
            .send(),
    );
    for chunk in content.chunks(MIB).take(32) {
        tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    s.signal_and_wait("KILL");
    drop(tx);
    assert!(
        put.await.unwrap().is_err(),
        "the client sees the connection die"
    );
    let s2 = TestServer::start_in(&s.data_dir.clone(), &[], &[]);
    let r = c
        .head(s2.url(&format!("/v2/crash/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let blob_file = s2
        .data_dir
        .join("blobs/sha256")
        .join(&digest[7..9])
        .join(&digest[7..]);
    assert!(
        !blob_file.exists(),
        "no blob file for a push that never finished"
    );
    // The same push, done again, succeeds.
    let r = c
        .post(s2.url(&format!("/v2/crash/blobs/uploads/?digest={digest}")))
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn acknowledged_pushes_survive_sigkill() {
    let mut s = TestServer::start();
    let c = client();
    let (m, d) = push_image(&c, &s.base, "durable/app", "v1", "durable").await;
    s.signal_and_wait("KILL");
    let s2 = TestServer::start_in(&s.data_dir.clone(), &[], &[]);
    let r = c
        .get(s2.url("/v2/durable/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), m);
    let layer = b"layer bytes for durable";
    let r = c
        .get(s2.url(&format!("/v2/durable/app/blobs/{}", sha256(layer))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &layer[..]);
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_and_tag_are_safe() {
    let s = TestServer::start();
    let c = client();
    let layer: Vec<u8> = (0..4 * MIB).map(|i| (i * 31 % 256) as u8).collect();
    let config = b"{\"os\":\"linux\"}".to_vec();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (c, base, layer, config) = (c.clone(), s.base.clone(), layer.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            push_blob(&c, &base, "race/app", &layer).await;
            push_blob(&c, &base, "race/app", &config).await;
            let mut m: serde_json::Value =
                serde_json::from_slice(&image_manifest(&config, &[&layer])).unwrap();
            m["annotations"] = serde_json::json!({"writer": i.to_string()});
            let m = serde_json::to_vec(&m).unwrap();
            let r = put_manifest(&c, &base, "race/app", "latest", OCI_MANIFEST, &m).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            sha256(&m)
        }));
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    let r = c
        .get(s.url("/v2/race/app/manifests/latest"))
        .send()
        .await
        .unwrap();
    let winner = header(&r, "docker-content-digest");
    assert!(
        written.contains(&winner),
        "the tag points at one of the pushed manifests"
    );
    assert_eq!(
        sha256(&r.bytes().await.unwrap()),
        winner,
        "and its bytes match its digest"
    );
    let r = c
        .get(s.url(&format!("/v2/race/app/blobs/{}", sha256(&layer))))
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == layer);
    let stored = walk_files(&s.data_dir.join("blobs")).len();
    assert_eq!(stored, 2, "one file per distinct blob");
    assert!(
        walk_files(&s.data_dir.join("uploads")).is_empty(),
        "no upload left behind"
    );
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let mut s = TestServer::start_in(&data, &[], &[]);
        s.signal_and_wait("TERM");
    }
    let conn = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    conn.execute("INSERT INTO wharf_schema (level, name, applied_at, wharf_version) VALUES (42, 'future', 0, '9.9.9')", []).unwrap();
    drop(conn);
    let out = serve_command()
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("level 42") && err.contains("newer"), "{err}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn plain_http_is_refused_on_a_public_address() {
    let tmp = tempfile::tempdir().unwrap();
    let out = serve_command()
        .args(["--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(tmp.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing plain HTTP") && err.contains("tls_cert"),
        "{err}"
    );
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn serves_tls_with_a_given_certificate() {
    if !support::require_tool("openssl") || !support::require_tool("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made a certificate");
    let data = tmp.path().join("data");
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&data);
    cmd.env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
    let s = TestServer::launch(cmd, &data);
    let url = format!("https://{}/v2/", s.addr);
    // Trusted: the challenge comes back over TLS and names an https realm.
    let (ok, out) = curl(&["-i", "--cacert", cert.to_str().unwrap(), &url]);
    assert!(
        ok && out.contains("401") && out.contains("realm=\"https://"),
        "{out}"
    );
    let creds = format!("admin:{}", support::ADMIN_PASSWORD);
    let (ok, out) = curl(&["--cacert", cert.to_str().unwrap(), "-u", &creds, &url]);
    assert!(ok && out.trim() == "{}", "{out}");
    // Untrusted certificate: the client refuses; plain HTTP on the TLS port fails.
    assert!(!curl(&[&url]).0);
    assert!(!curl(&[&format!("http://{}/v2/", s.addr)]).0);
}

#[test]
fn serves_tls_with_a_self_signed_certificate_that_survives_restarts() {
    if !support::require_tool("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = || {
        let mut cmd = serve_command();
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--tls-self-signed",
            "--insecure-no-auth",
        ])
        .arg("--data-dir")
        .arg(&data);
        TestServer::launch(cmd, &data)
    };
    let mut s = start();
    let cert = data.join("tls/self-signed.crt");
    let first = std::fs::read(&cert).expect("certificate written");
    let (ok, out) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://{}/v2/", s.addr),
    ]);
    assert!(ok && out.trim() == "{}", "{out}");
    assert!(s.signal_and_wait("TERM").success());
    let s = start();
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        first,
        "the same certificate after a restart"
    );
    let (ok, _) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!(
            "https://localhost:{}/v2/",
            s.addr.rsplit(':').next().unwrap()
        ),
    ]);
    assert!(ok, "valid for localhost too");
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log.jsonl");
    let data = tmp.path().join("d");
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&data)
        .env("WHARF_LOG_LEVEL", "trace")
        .env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD)
        .stderr(std::fs::File::create(&log).unwrap());
    let mut s = TestServer::launch(cmd, &data);
    let c = client();
    let admin = |r: reqwest::RequestBuilder| r.basic_auth("admin", Some(support::ADMIN_PASSWORD));
    let created: serde_json::Value = admin(c.post(s.url("/api/v0/users/admin/tokens")))
        .json(&serde_json::json!({"label": "log test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("admin", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let issued: serde_json::Value = c
        .get(s.url(
            "/auth/token?service=wharf&scope=repository:admin/app:pull,push&offline_token=true",
        ))
        .basic_auth("admin", Some(support::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = issued["token"].as_str().unwrap().to_string();
    let refresh = issued["refresh_token"]
        .as_str()
        .expect("a refresh token was asked for")
        .to_string();
    let r = c
        .get(s.url("/v2/admin/app/tags/list"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "authorised; the repository is just empty"
    );
    // A failed login is logged, without the secret tried.
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("admin", Some("wrong-password-xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(s.signal_and_wait("TERM").success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("failed login"),
        "the failed login is in the log"
    );
    for secret in [
        support::ADMIN_PASSWORD,
        token.as_str(),
        bearer.as_str(),
        refresh.as_str(),
        "wrong-password-xyz",
    ] {
        assert!(
            !text.contains(secret),
            "a secret leaked into the log: {secret}"
        );
    }
}

#[tokio::test]
async fn two_replicas_on_postgres_and_a_shared_directory() {
    let Some(pg) = support::pg_database("serve_dir") else {
        return;
    };
    two_replicas(&pg, &[]).await;
}

#[tokio::test]
async fn two_replicas_on_postgres_and_s3() {
    let Some(pg) = support::pg_database("serve_s3") else {
        return;
    };
    let Ok(endpoint) = std::env::var("WHARF_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "WHARF_TEST_S3_ENDPOINT is required under CI=true"
        );
        eprintln!("SKIPPED: no WHARF_TEST_S3_ENDPOINT (run the suite with scripts/test.sh)");
        return;
    };
    let blobs = format!("s3://wharf-test/serve-{}", std::process::id());
    two_replicas(&pg, &["--blobs", &blobs, "--s3-endpoint", &endpoint]).await;
}

/// Two `serve` processes sharing the metadata store at `pg` and the blob store that
/// `extra` names (default: one shared directory): what one stores, the other serves.
async fn two_replicas(pg: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("blobs");
    let start = || {
        let mut cmd = serve_command();
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--metadata",
            pg,
        ])
        .arg("--data-dir")
        .arg(&data);
        cmd.args(extra)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        TestServer::launch(cmd, &data)
    };
    let (a, b) = (start(), start());
    let c = client();
    let (m, d) = push_image(&c, &a.base, "pg/app", "v1", "postgres").await;
    // The second process sees at once what the first stored.
    let r = c
        .get(b.url("/v2/pg/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), m);
    let tags: serde_json::Value = c
        .get(b.url("/v2/pg/app/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert!(
        !data.join("metadata.db").exists(),
        "no SQLite file when PostgreSQL holds the metadata"
    );
    // One upload's chunks through both processes: the session lives in the shared
    // stores, and the digest is checked over all of the data.
    let loc = header(
        &c.post(a.url("/v2/pg/app/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = c
        .patch(a.url(&loc))
        .header("content-range", "0-3")
        .body("0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c
        .patch(b.url(&loc))
        .header("content-range", "4-7")
        .body("4567")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "range")),
        (202, "0-7".to_string())
    );
    let wrong = sha256(b"01234567-not");
    let r = c
        .put(a.url(&format!("{loc}?digest={wrong}")))
        .body("89")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "a digest over only part of the data is refused"
    );
    let loc = header(
        &c.post(b.url("/v2/pg/app/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        "location",
    );
    c.patch(b.url(&loc))
        .header("content-range", "0-3")
        .body("0123")
        .send()
        .await
        .unwrap();
    c.patch(a.url(&loc))
        .header("content-range", "4-7")
        .body("4567")
        .send()
        .await
        .unwrap();
    let digest = sha256(b"0123456789");
    let r = c
        .put(b.url(&format!("{loc}?digest={digest}")))
        .body("89")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .get(a.url(&format!("/v2/pg/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), &b"0123456789"[..]);
    let local_blobs = data.join("blobs/sha256").exists();
    assert_eq!(
        local_blobs,
        extra.is_empty(),
        "blobs are where --blobs says, and only there"
    );
}

#[tokio::test]
async fn cluster_status_lists_replicas_and_reports_a_dead_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let start = || {
        let mut cmd = serve_command();
        cmd.args(["--listen", "127.0.0.1:0", "--heartbeat-interval-secs", "1"])
            .arg("--data-dir")
            .arg(&data);
        cmd.env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
        TestServer::launch(cmd, &data)
    };
    let (mut a, mut b) = (start(), start());
    let c = client();
    let status = |s: &TestServer| {
        let req = c
            .get(s.url("/api/v0/meta/cluster_status"))
            .basic_auth("admin", Some(support::ADMIN_PASSWORD));
        async move {
            req.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let st = status(&a).await;
    assert_eq!(st["replicas"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(st["issues"], serde_json::json!([]), "{st}");
    assert!(st["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["healthy"] == true && r["version"] == env!("CARGO_PKG_VERSION")));
    let r = c
        .get(a.url("/api/v0/meta/cluster_status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "administrators only");

    // A replica killed without a chance to deregister is reported dead once silent for
    // three heartbeat intervals (bounded wait: at most 15 s).
    b.signal_and_wait("KILL");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let st = loop {
        let st = status(&a).await;
        if st["issues"].as_array().is_some_and(|i| !i.is_empty())
            || std::time::Instant::now() > deadline
        {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let issue = &st["issues"][0];
    assert_eq!(issue["critical"], true, "{st}");
    assert!(
        issue["description"]
            .as_str()
            .unwrap()
            .contains("has not reported"),
        "{st}"
    );
    // The CLI says the same and exits non-zero on a critical issue.
    let out = Command::new(WHARF)
        .args(["cluster", "status", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("CRITICAL") && text.contains("PROBLEM"),
        "{text}"
    );
    // A replica that stops cleanly deregisters.
    assert!(a.signal_and_wait("TERM").success());
    let out = Command::new(WHARF)
        .args(["cluster", "status", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["replicas"].as_array().unwrap().len(),
        1,
        "only the killed one is left: {v}"
    );
}
