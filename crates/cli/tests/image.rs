//! The container image as an operator uses it: a replica started with `docker run`,
//! signed into with `docker login`, pushed to and pulled from (the image pushes
//! itself), then stopped with `docker stop`, which must drain and exit 0.
//! `scripts/test.sh` builds the image (scripts/build-image.sh) and names it in
//! `WHARF_TEST_IMAGE`; under CI=true the test requires it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `docker ARGS` (with `config` as DOCKER_CONFIG) to completion within 120 s.
fn docker(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_CONFIG", config)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let status = support::wait_with_timeout(&mut child, Duration::from_secs(120));
    let Some(status) = status else {
        let _ = child.kill();
        panic!("docker {args:?} did not finish within 120 s");
    };
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (status.success(), text)
}

/// Removes the container and the pulled image whatever happens.
struct Cleanup {
    config: tempfile::TempDir,
    container: String,
    pushed: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(self.config.path(), &["rm", "-f", &self.container], None);
        let _ = docker(self.config.path(), &["rmi", "-f", &self.pushed], None);
    }
}

#[test]
fn the_image_serves_pushes_pulls_and_stops_cleanly() {
    let Ok(image) = std::env::var("WHARF_TEST_IMAGE") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "WHARF_TEST_IMAGE is required under CI=true (scripts/test.sh builds the image)"
        );
        eprintln!("SKIPPED: no WHARF_TEST_IMAGE (scripts/build-image.sh builds one)");
        return;
    };
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let name = format!("wharf-image-test-{}", std::process::id());
    let guard = Cleanup {
        config: tempfile::tempdir().unwrap(),
        container: name.clone(),
        pushed: format!("{addr}/admin/wharf:test-{}", std::process::id()),
    };
    let cfg = guard.config.path();
    let listen = format!("WHARF_LISTEN={addr}");
    let (ok, out) = docker(
        cfg,
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "-e",
            &listen,
            "-e",
            "WHARF_ADMIN_PASSWORD=image-test-pw",
            &image,
        ],
        None,
    );
    assert!(ok, "{out}");
    // Ready when it answers (bounded: 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = docker(
        cfg,
        &["login", &addr, "-u", "admin", "--password-stdin"],
        Some("image-test-pw\n"),
    );
    assert!(ok && out.contains("Login Succeeded"), "{out}");
    // The image pushes itself into the registry it runs.
    assert!(docker(cfg, &["tag", &image, &guard.pushed], None).0);
    let (ok, out) = docker(cfg, &["push", &guard.pushed], None);
    assert!(ok && out.contains("digest: sha256:"), "{out}");
    assert!(docker(cfg, &["rmi", &guard.pushed], None).0);
    let (ok, out) = docker(cfg, &["pull", &guard.pushed], None);
    assert!(ok, "{out}");
    let (ok, out) = docker(cfg, &["run", "--rm", &guard.pushed, "version"], None);
    assert!(
        ok && out.contains(env!("CARGO_PKG_VERSION")),
        "the pulled image runs: {out}"
    );
    // docker stop sends SIGTERM: the replica drains and exits 0.
    assert!(docker(cfg, &["stop", "-t", "30", &name], None).0);
    let (_, code) = docker(
        cfg,
        &["inspect", &name, "--format", "{{.State.ExitCode}}"],
        None,
    );
    assert_eq!(code.trim(), "0", "exit code after docker stop");
    let (_, logs) = docker(cfg, &["logs", &name], None);
    assert!(logs.contains("stopped cleanly"), "{logs}");
}
