//! A bench for rolling upgrades of replica containers (crates/cli/tests/rolling.rs):
//!
//! - [`RollingCluster`]: three replica containers of one image (`--network host`, each
//!   on its own loopback port) on the test PostgreSQL and S3 server, labelled the way
//!   the docker driver finds them (`wharf.replica=<this cluster>`, `wharf.url=…`),
//!   with nginx on the host in front of them; the `wharf upgrade` commands against it,
//!   their JSON events streamed to a hook that can SIGKILL the command;
//! - [`Load`]: writers pushing images (chunked uploads) and readers pulling them back
//!   through nginx, every request's outcome and latency recorded, every acknowledged
//!   push kept to pull back at the end.
//!
//! Everything is removed on drop, also when the test fails: the containers (by their
//! names and by the cluster's unique label), nginx (SIGTERM to the master it started),
//! the database, the temporary directories. Every wait is bounded.
//!
//! Needs a multi-threaded tokio runtime: blocking calls (the docker CLI, the hooks)
//! run in `block_in_place`.

#![allow(dead_code)]

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::oci_layout::{sha256, Rng};
use crate::secure::wharf_cmd;
use crate::support::{self, ADMIN_PASSWORD};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The repository the load pushes to and pulls from.
pub const REPO: &str = "rolling/app";
/// The label the docker driver finds a cluster's replicas by, and the one naming the
/// URL at which each answers.
pub const REPLICA_LABEL: &str = "wharf.replica";
pub const URL_LABEL: &str = "wharf.url";
/// Bounds every retry loop of the simulated clients.
const MAX_ATTEMPTS: usize = 8;

/// nginx's passive health check per replica: one failure (a refused connection) takes
/// a replica out of the rotation for 2 s, then nginx tries it again. This is what
/// docs/cluster.md's configuration does too (with 5 s), and what any balancer with
/// health checks does in some form: a replica that comes back is only used again
/// after a while. A rolling upgrade that takes the next replica down sooner than that
/// would leave the balancer with no replica it considers alive ("no live upstreams",
/// 502) although every replica is up: a replica is replaced in about 0.7 s here. So
/// the upgrade waits `--settle-secs` after each replica is ready (as Kubernetes'
/// `minReadySeconds` does), longer than `fail_timeout`.
pub const NGINX_SERVER_PARAMS: &str = "max_fails=1 fail_timeout=2s";
/// What the upgrade waits after each replica is ready (more than `fail_timeout`).
pub const SETTLE_SECS: &str = "3";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs blocking work without stalling the runtime's other tasks (the load).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs `program args` to completion within `timeout` (killed after it); returns
/// whether it succeeded and its stdout and stderr.
fn run_bounded(program: &str, args: &[&str], timeout: Duration) -> (bool, String, String) {
    blocking(|| {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {program}: {e}"));
        // Drained while it runs: a full pipe must not stall it.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = support::wait_with_timeout(&mut child, timeout);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        match status {
            Some(s) => (s.success(), out, err),
            None => (
                false,
                out,
                format!("{err}\n{program} {args:?} did not finish within {timeout:?} (killed)"),
            ),
        }
    })
}

/// `docker ARGS`, bounded to 120 s: (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    run_bounded("docker", args, Duration::from_secs(120))
}

/// `docker ARGS` that must succeed; returns its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let (ok, out, err) = docker(args);
    assert!(ok, "docker {args:?} failed: {out}{err}");
    out
}

// ---------------------------------------------------------------------------------
// prerequisites

/// What the rolling tests need from the environment (scripts/test.sh provides it).
pub struct Prereqs {
    pub pg_url: String,
    pub s3: String,
    /// Release 1.1.0's image (WHARF_TEST_IMAGE_1_1_0): the release before this build's,
    /// the one a rolling upgrade to it starts from.
    pub old_image: String,
    /// This build's image (WHARF_TEST_IMAGE_DEBUG).
    pub new_image: String,
    /// Release 1.0.0's image (WHARF_TEST_IMAGE_1_0_0): where a multi-hop upgrade
    /// starts.
    pub image_1_0_0: String,
}

fn skip(reason: &str) -> Option<Prereqs> {
    assert!(
        !ci(),
        "{reason}: required under CI=true (scripts/test.sh provides it)"
    );
    eprintln!("SKIPPED: {reason} (run the suite with scripts/test.sh)");
    None
}

/// The environment, or `None` after printing SKIPPED (outside CI; under CI=true
/// anything missing fails the test).
pub fn prereqs() -> Option<Prereqs> {
    for tool in ["docker", "nginx", "psql"] {
        if !support::require_tool(tool) {
            return None;
        }
    }
    let (ok, _, err) = run_bounded(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        Duration::from_secs(30),
    );
    if !ok {
        return skip(&format!(
            "the Docker Engine is not reachable ({})",
            err.trim()
        ));
    }
    let mut vars = Vec::new();
    for name in [
        "WHARF_TEST_POSTGRES_URL",
        "WHARF_TEST_S3_ENDPOINT",
        "WHARF_TEST_IMAGE_1_1_0",
        "WHARF_TEST_IMAGE_DEBUG",
        "WHARF_TEST_IMAGE_1_0_0",
    ] {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => vars.push(v),
            _ => return skip(&format!("no {name}")),
        }
    }
    let image_1_0_0 = vars.pop().unwrap();
    let new_image = vars.pop().unwrap();
    let old_image = vars.pop().unwrap();
    for image in [&old_image, &new_image, &image_1_0_0] {
        // Named but absent is a broken setup, never a skip.
        let (ok, _, err) = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
        assert!(ok, "the test image {image} does not exist: {err}");
    }
    let s3 = vars.pop().unwrap();
    let pg_url = vars.pop().unwrap();
    Some(Prereqs {
        pg_url,
        s3,
        old_image,
        new_image,
        image_1_0_0,
    })
}

// ---------------------------------------------------------------------------------
// nginx

/// nginx on the host in front of the replicas, configured so that replacing a replica
/// loses no request.
pub struct Nginx {
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::free_port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a} {NGINX_SERVER_PARAMS};\n"))
            .collect();
        // `user` only matters when the master runs as root (then workers may read the
        // temp directory); otherwise nginx ignores it with a warning.
        let conf = format!(
            r#"user root;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format upstreams '$msec $status $request_method $uri up=$upstream_addr '
                       'ups=$upstream_status rt=$request_time';
  access_log {dir}/access.log upstreams;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  # Passive health checks: see NGINX_SERVER_PARAMS in crates/cli/tests/support/rolling.rs.
  upstream wharf {{
{servers}    # No `keepalive`: every request opens its own connection to a replica. A
    # draining replica closes the connections it holds idle, and nginx could send a
    # request down one of those just as it closes.
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
      proxy_pass http://wharf;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      # Uploads and downloads stream through.
      proxy_request_buffering off;
      proxy_buffering off;
      # A replica that is gone refuses at once; one that hangs is skipped after 1 s.
      proxy_connect_timeout 1s;
      # Retry on another replica when a replica failed to take or answer the request,
      # also for POST and PATCH (non_idempotent): a draining wharf replica finishes
      # every request it accepted and then closes its listener, so a request nginx
      # could not deliver (connection refused, or reset before a response) was never
      # processed, and it may go to another replica. (nginx retries only while it has
      # sent nothing to the client, and no streamed request body once it has started
      # sending one.) `timeout` covers the connect timeout; a read timeout (60 s)
      # would re-send a request a replica may have processed, which registry requests
      # tolerate: a repeated PATCH is refused by its Content-Range, nothing is lost.
      proxy_next_upstream error timeout non_idempotent;
      proxy_read_timeout 60s;
      add_header X-Upstream $upstream_addr always;
    }}
  }}
}}
"#,
            dir = dir.path().display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.read_log("error.log"));
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// nginx's complaints about the replicas (refused connections, resets, …).
    pub fn error_log(&self) -> Vec<String> {
        self.read_log("error.log")
            .lines()
            .filter(|l| l.contains("upstream"))
            .map(str::to_string)
            .collect()
    }

    /// nginx's complaints about the replicas by kind ("connect() failed (111:
    /// Connection refused) while connecting to upstream": count).
    pub fn upstream_error_kinds(&self) -> std::collections::BTreeMap<String, usize> {
        let mut kinds = std::collections::BTreeMap::new();
        for line in self.error_log() {
            // "… [error] 12#12: *345 MESSAGE, client: …"
            let message = line.split_once(": *").map_or(line.as_str(), |(_, rest)| {
                rest.split_once(' ').map_or(rest, |(_, m)| m)
            });
            let message = message.split(", client:").next().unwrap_or(message);
            *kinds.entry(message.to_string()).or_insert(0) += 1;
        }
        kinds
    }

    /// Access-log lines of requests nginx had to send to more than one replica.
    pub fn retried(&self) -> Vec<String> {
        self.read_log("access.log")
            .lines()
            .filter(|l| l.split(" up=").nth(1).is_some_and(|u| u.contains(", ")))
            .map(str::to_string)
            .collect()
    }

    /// How many requests nginx logged.
    pub fn requests_logged(&self) -> usize {
        self.read_log("access.log").lines().count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if support::wait_with_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// the cluster

pub struct ReplicaSpec {
    /// The container's name.
    pub name: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`, also its `wharf.url` label.
    pub url: String,
}

/// Three replica containers behind nginx, on their own database and S3 prefix.
pub struct RollingCluster {
    /// Unique per cluster; the value of the `wharf.replica` label.
    pub id: String,
    pub replicas: Vec<ReplicaSpec>,
    /// `postgres://…/wharf_rolling_…`
    pub pg: String,
    pub blobs: String,
    pub s3: String,
    pub old_image: String,
    pub new_image: String,
    nginx: Option<Nginx>,
    admin_pg: String,
    db: String,
    tmp: tempfile::TempDir,
}

impl RollingCluster {
    /// Starts three replicas of `image` (the first alone: it creates the schema, the
    /// admin and the token key), waits until each is ready and reports `version`,
    /// then nginx in front of them.
    pub async fn start(test: &str, p: &Prereqs, image: &str, version: &str) -> RollingCluster {
        let suffix = format!("{}-{}", std::process::id(), Rng::seeded().hex(6));
        let db = format!("wharf_rolling_{}", suffix.replace('-', "_"));
        let (base, _) = p.pg_url.rsplit_once('/').unwrap();
        let pg = format!("{base}/{db}");
        let mut cluster = RollingCluster {
            id: format!("rolling-{test}-{suffix}"),
            replicas: (1..=3)
                .map(|i| {
                    let addr = format!("127.0.0.1:{}", crate::support::free_port());
                    ReplicaSpec {
                        name: format!("wharf-rolling-{test}-{suffix}-{i}"),
                        url: format!("http://{addr}"),
                        addr,
                    }
                })
                .collect(),
            pg,
            blobs: format!("s3://wharf-test/rolling-{suffix}"),
            s3: p.s3.clone(),
            old_image: p.old_image.clone(),
            new_image: p.new_image.clone(),
            nginx: None,
            admin_pg: p.pg_url.clone(),
            db,
            tmp: tempfile::tempdir().unwrap(),
        };
        let (ok, out, err) = run_bounded(
            "psql",
            &[&p.pg_url, "-qc", &format!("CREATE DATABASE {}", cluster.db)],
            Duration::from_secs(60),
        );
        assert!(ok, "CREATE DATABASE {}: {out}{err}", cluster.db);
        cluster.run_replica(0, image);
        cluster
            .wait_ready(0, version, Duration::from_secs(60))
            .await;
        for i in 1..3 {
            cluster.run_replica(i, image);
        }
        for i in 1..3 {
            cluster
                .wait_ready(i, version, Duration::from_secs(60))
                .await;
        }
        let upstreams: Vec<String> = cluster.replicas.iter().map(|r| r.addr.clone()).collect();
        cluster.nginx = Some(blocking(|| Nginx::start(&upstreams)));
        // Through nginx: the registry asks for credentials.
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http.get(format!("{}/v2/", cluster.base())).send().await;
            if matches!(&r, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not reach the replicas: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster
    }

    /// The `wharf.replica=ID` filter the docker driver is given.
    pub fn label(&self) -> String {
        format!("{REPLICA_LABEL}={}", self.id)
    }

    /// nginx's address: `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.nginx().base.clone()
    }

    pub fn nginx(&self) -> &Nginx {
        self.nginx.as_ref().expect("nginx runs")
    }

    /// `docker run` of replica `i` from `image`, configured the way release 1.1.0
    /// accepts (environment variables; the later settings it ignores).
    fn run_replica(&self, i: usize, image: &str) {
        let r = &self.replicas[i];
        let env = [
            format!("WHARF_LISTEN={}", r.addr),
            format!("WHARF_METADATA={}", self.pg),
            format!("WHARF_BLOBS={}", self.blobs),
            format!("WHARF_S3_ENDPOINT={}", self.s3),
            "AWS_ACCESS_KEY_ID=test".to_string(),
            "AWS_SECRET_ACCESS_KEY=test".to_string(),
            format!("WHARF_ADMIN_PASSWORD={ADMIN_PASSWORD}"),
            "WHARF_HEARTBEAT_INTERVAL_SECS=1".to_string(),
            "WHARF_SHUTDOWN_TIMEOUT_SECS=30".to_string(),
            // Since 1.1.0: a replica takes a background migration's job at once (there
            // is none from 1.1.0 to this build; kept for the next one that has one).
            "WHARF_JOB_HEARTBEAT_SECS=1".to_string(),
        ];
        let labels = [self.label(), format!("{URL_LABEL}={}", r.url)];
        let mut args: Vec<&str> = vec![
            "run",
            "--detach",
            "--pull",
            "never",
            "--name",
            &r.name,
            "--network",
            "host",
        ];
        for l in &labels {
            args.extend(["--label", l]);
        }
        for e in &env {
            args.extend(["--env", e]);
        }
        args.push(image);
        docker_ok(&args);
    }

    /// Waits until replica `i` answers `/readyz` with 200 and reports `version`.
    pub async fn wait_ready(&self, i: usize, version: &str, timeout: Duration) {
        let r = &self.replicas[i];
        let http = client();
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let ready = http.get(format!("{}/readyz", r.url)).send().await;
            if matches!(&ready, Ok(a) if a.status() == StatusCode::OK) {
                let v = http
                    .get(format!("{}/api/v0/meta/version", r.url))
                    .send()
                    .await;
                if let Ok(v) = v {
                    let v: Value = v.json().await.unwrap_or_default();
                    if v["version"] == version {
                        return;
                    }
                    last = format!("ready, version {}", v["version"]);
                }
            } else {
                last = format!("{ready:?}");
            }
            if !self.running(&r.name) {
                panic!(
                    "replica {} is not running:\n{}",
                    r.name,
                    self.logs(&r.name, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "replica {} not ready with {version} within {timeout:?} (last: {last}):\n{}",
                r.name,
                self.logs(&r.name, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `docker inspect NAME` (the first element), or `None` when there is no such
    /// container.
    pub fn inspect(&self, name: &str) -> Option<Value> {
        let (ok, out, _) = docker(&["inspect", "--type", "container", name]);
        if !ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out).unwrap();
        v.get(0).cloned()
    }

    pub fn running(&self, name: &str) -> bool {
        self.inspect(name)
            .is_some_and(|c| c["State"]["Running"] == true)
    }

    /// The image a container was created from (its configuration's name, e.g.
    /// `wharf:test-debug-123`).
    pub fn image_of(&self, name: &str) -> Option<String> {
        self.inspect(name)
            .and_then(|c| c["Config"]["Image"].as_str().map(str::to_string))
    }

    /// The last `lines` lines of a container's output.
    pub fn logs(&self, name: &str, lines: usize) -> String {
        let (_, out, err) = docker(&["logs", "--tail", &lines.to_string(), name]);
        format!("--- docker logs {name}\n{out}{err}")
    }

    /// `docker stop` (SIGTERM, SIGKILL after `grace`): the replica drains.
    pub fn stop_container(&self, name: &str, grace: Duration) {
        docker_ok(&["stop", "--time", &grace.as_secs().to_string(), name]);
    }

    pub fn kill_container(&self, name: &str) {
        docker_ok(&["kill", name]);
    }

    pub fn start_container(&self, name: &str) {
        docker_ok(&["start", name]);
    }

    /// Index of a replica by container name.
    pub fn index_of(&self, name: &str) -> usize {
        self.replicas
            .iter()
            .position(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not one of this cluster's replicas"))
    }

    // -----------------------------------------------------------------------------
    // the upgrade commands

    /// `wharf upgrade SUBCOMMAND ARGS` on this cluster's stores: the metadata store,
    /// the blob store (the checks probe it; credentials in the environment), a data
    /// directory of its own (for the pre-upgrade backup), and the admin's password in
    /// WHARF_PASSWORD for the commands that sign in.
    pub fn upgrade_cmd(&self, args: &[&str]) -> tokio::process::Command {
        let data_dir = self.tmp.path().join("upgrade-data");
        let mut cmd = wharf_cmd(&["upgrade"]);
        cmd.args(args)
            .args(["--metadata", &self.pg, "--blobs", &self.blobs])
            .args(["--s3-endpoint", &self.s3])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("WHARF_PASSWORD", ADMIN_PASSWORD)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("WHARF_LOG_LEVEL", "warn");
        cmd
    }

    /// The arguments of `upgrade apply` with the docker driver to this build's image.
    pub fn apply_args(&self) -> Vec<String> {
        [
            "apply",
            "--driver",
            "docker",
            "--image",
            &self.new_image,
            "--label",
            &self.label(),
            "--yes",
            "--format",
            "json",
            "--url",
            &self.base(),
            "--username",
            "admin",
            // Longer than nginx's fail_timeout (NGINX_SERVER_PARAMS).
            "--settle-secs",
            SETTLE_SECS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `wharf upgrade apply --driver docker …` (plus `extra`), streaming its
    /// events to `hook`.
    pub async fn apply(&self, extra: &[&str], hook: impl FnMut(&Value) -> Hook) -> CommandRun {
        let mut args = self.apply_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_streaming(self.upgrade_cmd(&args), Duration::from_secs(600), hook).await
    }

    /// Runs `wharf upgrade rollback --driver docker …` (plus `extra`).
    pub async fn rollback(&self, extra: &[&str], hook: impl FnMut(&Value) -> Hook) -> CommandRun {
        let label = self.label();
        let mut args = vec![
            "rollback",
            "--driver",
            "docker",
            "--label",
            &label,
            "--yes",
            "--format",
            "json",
            "--settle-secs",
            SETTLE_SECS,
        ];
        args.extend(extra);
        run_streaming(self.upgrade_cmd(&args), Duration::from_secs(600), hook).await
    }

    /// `wharf upgrade status --format json`.
    pub async fn status(&self) -> Value {
        let out = crate::secure::run(
            self.upgrade_cmd(&["status", "--format", "json"]),
            None,
            Duration::from_secs(60),
        )
        .await;
        assert!(
            out.status.success(),
            "upgrade status failed: {}",
            crate::secure::output_text(&out)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "upgrade status printed no JSON ({e}): {}",
                crate::secure::output_text(&out)
            )
        })
    }

    /// Polls `upgrade status` (at most `timeout`) until the data is at `version` and,
    /// with `background_done`, the upgrade's `background` step is done and every
    /// background migration it queued or found has completed (the replicas run them).
    /// Returns the last status.
    pub async fn wait_status(
        &self,
        version: &str,
        background_done: bool,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status().await;
            let background =
                background_detail(&st, None).is_some_and(|d| background_finished(&st, &d));
            if st["data_version"] == version && (background || !background_done) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "within {timeout:?}: data not at {version}{}: {st:#}",
                if background_done {
                    " with the background step done and the migrations it queued finished"
                } else {
                    ""
                }
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the cluster's database has table `name` (psql).
    pub fn has_table(&self, name: &str) -> bool {
        self.psql(&format!("SELECT to_regclass('{name}') IS NOT NULL")) == "t"
    }

    /// One query on the cluster's database; its rows, `|` between columns.
    pub fn psql(&self, sql: &str) -> String {
        let (ok, out, err) = run_bounded("psql", &[&self.pg, "-tAc", sql], Duration::from_secs(60));
        assert!(ok, "psql {sql}: {out}{err}");
        out.trim().to_string()
    }

    /// `wharf upgrade verify --url NGINX --username admin` (password from
    /// WHARF_PASSWORD): (exit 0, output).
    pub async fn verify(&self) -> (bool, String) {
        let base = self.base();
        let out = crate::secure::run(
            self.upgrade_cmd(&["verify", "--url", &base, "--username", "admin"]),
            None,
            Duration::from_secs(180),
        )
        .await;
        (out.status.success(), crate::secure::output_text(&out))
    }

    /// Every replica container runs `image`, carries its labels, and answers ready
    /// with `version` at its URL.
    pub async fn assert_all_on(&self, image: &str, version: &str) {
        for (i, r) in self.replicas.iter().enumerate() {
            let c = self
                .inspect(&r.name)
                .unwrap_or_else(|| panic!("replica container {} is gone", r.name));
            assert_eq!(c["Config"]["Image"], image, "{} runs another image", r.name);
            assert_eq!(c["State"]["Running"], true, "{} is not running", r.name);
            let labels = &c["Config"]["Labels"];
            assert_eq!(labels[REPLICA_LABEL], self.id.as_str(), "{}", r.name);
            assert_eq!(labels[URL_LABEL], r.url.as_str(), "{}", r.name);
            self.wait_ready(i, version, Duration::from_secs(30)).await;
        }
    }

    /// Everything a failure message needs: each container's state and last lines,
    /// nginx's complaints.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for r in &self.replicas {
            let state = self.inspect(&r.name).map_or("gone".to_string(), |c| {
                format!(
                    "{} {} (exit {})",
                    c["Config"]["Image"], c["State"]["Status"], c["State"]["ExitCode"]
                )
            });
            s.push_str(&format!("{} at {}: {state}\n", r.name, r.url));
            s.push_str(&self.logs(&r.name, 25));
        }
        if let Some(n) = &self.nginx {
            let errors = n.error_log();
            s.push_str(&format!(
                "--- nginx: {} upstream errors, last ones:\n",
                errors.len()
            ));
            for l in errors.iter().rev().take(10).rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for RollingCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        // By name (the driver recreates them under the same names), and anything
        // else carrying this cluster's unique label.
        let mut names: Vec<String> = self.replicas.iter().map(|r| r.name.clone()).collect();
        let label = format!("label={}", self.label());
        let (_, ids, _) = docker(&["ps", "--all", "--quiet", "--filter", &label]);
        names.extend(ids.split_whitespace().map(str::to_string));
        for n in &names {
            let _ = docker(&["rm", "--force", n]);
        }
        self.nginx = None;
        let _ = run_bounded(
            "psql",
            &[
                &self.admin_pg,
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
            ],
            Duration::from_secs(60),
        );
    }
}

/// The detail of the last `background` step done in the journal of an `upgrade
/// status` (of the upgrade from `from`, when given): "no background migration needed",
/// or "metadatastoremigration queued as job …", "manifestsummaries queued as job …".
pub fn background_detail(st: &Value, from: Option<&str>) -> Option<String> {
    st["journal"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| {
            e["step"] == "background"
                && e["status"] == "done"
                && from.is_none_or(|f| e["from_version"] == f)
        })
        .and_then(|e| e["detail"].as_str().map(str::to_string))
}

/// Whether what a `background` step's `detail` says it queued (background migrations
/// as "ACTION queued as job N …", each part of the detail split by "; ") has finished,
/// by the jobs `upgrade status` lists. Parts that name no background migration (the
/// vulnerability database's refresh, "no background migration needed", "… done") ask
/// for nothing.
pub fn background_finished(st: &Value, detail: &str) -> bool {
    let jobs = st["background_migrations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    detail.split("; ").all(|part| {
        let Some((action, rest)) = part.split_once(" queued as job ") else {
            return true;
        };
        if !wharf_metastore::schema::BACKGROUND
            .iter()
            .any(|(_, a)| *a == action)
        {
            return true;
        }
        let id: u64 = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no job number in {part:?}"));
        jobs.iter()
            .any(|j| j["action"] == action && j["job"] == id && j["status"] == "done")
    })
}

pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------
// running the upgrade commands

/// What a hook tells the runner after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Continue,
    /// SIGKILL the command now.
    Kill,
}

/// A finished (or killed) command: its exit status, every JSON event it printed.
#[derive(Debug)]
pub struct CommandRun {
    pub status: ExitStatus,
    /// The hook had it killed.
    pub killed: bool,
    /// The event after which it was killed.
    pub killed_at: Option<Value>,
    pub events: Vec<Value>,
    /// When each event came, since the command started.
    pub times: Vec<Duration>,
    /// Stdout lines that are not JSON.
    pub other_stdout: Vec<String>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CommandRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// It printed `{"event":"finished"}`.
    pub fn finished(&self) -> bool {
        self.events.iter().any(|e| e["event"] == "finished")
    }

    /// The `error` of its `{"event":"failed"}`.
    pub fn failure(&self) -> Option<String> {
        self.events
            .iter()
            .find(|e| e["event"] == "failed")
            .map(|e| e["error"].as_str().map_or(e.to_string(), str::to_string))
    }

    /// `(replica, phase)` of each replica event, in order.
    pub fn replica_phases(&self) -> Vec<(String, String)> {
        self.events.iter().filter_map(replica_phase).collect()
    }

    /// Everything it printed, for assertions on messages.
    pub fn all_output(&self) -> String {
        let mut s: String = self
            .events
            .iter()
            .zip(&self.times)
            .map(|(e, t)| format!("{:7.2} s {e}\n", t.as_secs_f64()))
            .collect();
        for l in &self.other_stdout {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&self.stderr);
        s
    }

    pub fn describe(&self) -> String {
        format!(
            "exit: {} (killed by the test: {}) after {:.1} s\n--- stdout\n{}",
            self.status,
            self.killed,
            self.elapsed.as_secs_f64(),
            self.all_output()
        )
    }

    /// Asserts it ran to the end: exit 0 and a `finished` event.
    pub fn assert_finished(&self, what: &str) {
        assert!(
            self.success() && self.finished() && !self.killed,
            "{what} did not finish: {}",
            self.describe()
        );
    }
}

/// `(replica, phase)` of a `{"event":"replica",…}` event.
pub fn replica_phase(e: &Value) -> Option<(String, String)> {
    if e["event"] != "replica" {
        return None;
    }
    Some((
        e["replica"].as_str()?.to_string(),
        e["phase"].as_str()?.to_string(),
    ))
}

/// Runs `cmd`, reading its stdout line by line as it comes: each JSON line is an
/// event, passed to `hook` (in `block_in_place`: it may run docker commands); when the
/// hook answers [`Hook::Kill`] the command gets SIGKILL (by its own PID) at once.
/// Bounded by `timeout` (then killed and the test fails).
pub async fn run_streaming(
    mut cmd: tokio::process::Command,
    timeout: Duration,
    mut hook: impl FnMut(&Value) -> Hook,
) -> CommandRun {
    let what = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {what}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });
    let mut lines = BufReader::new(stdout).lines();
    let deadline = tokio::time::Instant::now() + timeout;
    let (mut events, mut times, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let (mut killed, mut killed_at) = (false, None);
    let mut timed_out = false;
    loop {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => match serde_json::from_str::<Value>(&line) {
                Ok(event) if event.is_object() => {
                    let h = if killed {
                        Hook::Continue
                    } else {
                        blocking(|| hook(&event))
                    };
                    if h == Hook::Kill {
                        let _ = child.start_kill();
                        killed = true;
                        killed_at = Some(event.clone());
                    }
                    events.push(event);
                    times.push(start.elapsed());
                }
                _ => other.push(line),
            },
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => {
                timed_out = true;
                let _ = child.start_kill();
                break;
            }
        }
    }
    let status = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(s) => s.expect("wait for the command"),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.expect("wait for the command")
        }
    };
    let stderr = tokio::time::timeout(Duration::from_secs(10), stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let run = CommandRun {
        status,
        killed,
        killed_at,
        events,
        times,
        other_stdout: other,
        stderr,
        elapsed: start.elapsed(),
    };
    assert!(
        !timed_out,
        "{what} did not finish within {timeout:?} (killed): {}",
        run.describe()
    );
    run
}

// ---------------------------------------------------------------------------------
// the load

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub writers: usize,
    pub readers: usize,
    /// Size of each image's layer, pushed in three chunks.
    pub layer_bytes: usize,
    /// Between two images (writers) or two pulls (readers): leaves the machine some
    /// air (the replicas, PostgreSQL and the S3 server share it).
    pub pause: Duration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            writers: 3,
            readers: 2,
            layer_bytes: 96 * 1024,
            pause: Duration::from_millis(20),
        }
    }
}

/// One request that did not get the answer it expects.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Since the load started.
    pub after: Duration,
    pub what: String,
    /// The status and body, or the transport error.
    pub detail: String,
    /// The replica(s) nginx sent it to (its `X-Upstream` header), when it answered.
    pub upstream: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {:.3} s: {}: {} (upstream: {})",
            self.after.as_secs_f64(),
            self.what,
            self.detail,
            self.upstream.as_deref().unwrap_or("-")
        )
    }
}

pub struct PushedImage {
    pub tag: String,
    pub manifest: Vec<u8>,
    /// (digest, bytes): the config, then the layer.
    pub blobs: Vec<(String, Vec<u8>)>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An error with its causes: reqwest's own message hides them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

struct LoadState {
    started: Instant,
    acknowledged: Mutex<Vec<Arc<PushedImage>>>,
    requests: AtomicUsize,
    served: AtomicUsize,
    failures: Mutex<Vec<Failure>>,
    longest: Mutex<(Duration, String)>,
    pulls: AtomicUsize,
}

impl LoadState {
    fn fail(&self, what: &str, detail: String, upstream: Option<String>) {
        let f = Failure {
            after: self.started.elapsed(),
            what: what.to_string(),
            detail,
            upstream,
        };
        eprintln!("load: request failed {f}");
        self.failures.lock().unwrap().push(f);
    }

    /// Sends a request and reads the whole answer, timing it; anything but one of
    /// `expected` is a failure, recorded with what nginx said about the upstream.
    async fn exchange(
        &self,
        what: &str,
        rb: RequestBuilder,
        expected: &[StatusCode],
    ) -> Option<Answer> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        let result = async {
            let r = rb.send().await?;
            let status = r.status();
            let headers = r.headers().clone();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                headers,
                body,
            })
        }
        .await;
        let latency = t.elapsed();
        {
            let mut longest = self.longest.lock().unwrap();
            if latency > longest.0 {
                *longest = (latency, what.to_string());
            }
        }
        match result {
            Ok(a) if expected.contains(&a.status) => {
                self.served.fetch_add(1, Ordering::SeqCst);
                Some(a)
            }
            Ok(a) => {
                let mut body = String::from_utf8_lossy(&a.body).into_owned();
                if body.len() > 300 {
                    body.truncate(300);
                    body.push('…');
                }
                self.fail(
                    what,
                    format!("{} {}", a.status, body.trim()),
                    header(&a.headers, "x-upstream"),
                );
                None
            }
            Err(e) => {
                self.fail(what, error_chain(&e), None);
                None
            }
        }
    }

    /// A bearer token for the test repository, as a client gets one before it pushes.
    async fn token(&self, http: &Client, base: &str) -> Option<String> {
        let rb = http
            .get(format!("{base}/auth/token"))
            .query(&[
                ("service", "wharf"),
                ("scope", &format!("repository:{REPO}:pull,push")),
            ])
            .basic_auth("admin", Some(ADMIN_PASSWORD));
        let a = self.exchange("token GET", rb, &[StatusCode::OK]).await?;
        let v: Value = serde_json::from_slice(&a.body).ok()?;
        v["token"].as_str().map(str::to_string)
    }
}

fn location(a: &Answer) -> String {
    header(&a.headers, "location").unwrap_or_default()
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

async fn backoff(attempt: usize) {
    tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
}

/// Uploads `data` in three chunks (POST, PATCH ×3, PUT) unless the registry already
/// has it; a failed chunk resumes from the range the registry reports. `false` when
/// it gave up (after [`MAX_ATTEMPTS`]).
async fn ensure_blob(
    state: &LoadState,
    http: &Client,
    token: &str,
    base: &str,
    data: &[u8],
) -> bool {
    let digest = sha256(data);
    let chunk = data.len().div_ceil(3);
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt).await;
        }
        let head = http
            .head(format!("{base}/v2/{REPO}/blobs/{digest}"))
            .bearer_auth(token);
        match state
            .exchange("blob HEAD", head, &[StatusCode::OK, StatusCode::NOT_FOUND])
            .await
        {
            Some(a) if a.status == StatusCode::OK => return true,
            Some(_) => {}
            None => continue,
        }
        let post = http
            .post(format!("{base}/v2/{REPO}/blobs/uploads/"))
            .bearer_auth(token);
        let Some(a) = state
            .exchange("upload POST", post, &[StatusCode::ACCEPTED])
            .await
        else {
            continue;
        };
        let mut loc = location(&a);
        let mut offset = 0;
        let mut stalls = 0;
        while offset < data.len() && stalls < MAX_ATTEMPTS {
            let end = (offset + chunk).min(data.len());
            let patch = http
                .patch(format!("{base}{loc}"))
                .bearer_auth(token)
                .header("content-range", format!("{offset}-{}", end - 1))
                .body(data[offset..end].to_vec());
            if let Some(a) = state
                .exchange("chunk PATCH", patch, &[StatusCode::ACCEPTED])
                .await
            {
                loc = location(&a);
                offset = end;
                continue;
            }
            stalls += 1;
            backoff(stalls).await;
            // Resume from what the registry holds (any replica can tell).
            let get = http.get(format!("{base}{loc}")).bearer_auth(token);
            if let Some(s) = state
                .exchange("upload status GET", get, &[StatusCode::NO_CONTENT])
                .await
            {
                let range = header(&s.headers, "range");
                offset = range
                    .as_deref()
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(_, last)| last.parse::<usize>().ok())
                    .unwrap_or(0);
                // "0-0" is how the protocol reports an empty upload (a one-byte one
                // looks the same, but the chunks are larger).
                if offset > 0 {
                    offset += 1;
                }
                loc = location(&s);
            }
        }
        if offset < data.len() {
            continue;
        }
        let put = http
            .put(format!("{base}{}", with_digest(&loc, &digest)))
            .bearer_auth(token);
        if state
            .exchange("upload PUT", put, &[StatusCode::CREATED])
            .await
            .is_some()
        {
            return true;
        }
        // The next round's HEAD tells whether a lost answer hid a success.
    }
    state.fail(
        "blob push",
        format!("{digest}: gave up after {MAX_ATTEMPTS} attempts"),
        None,
    );
    false
}

/// Pushes image `tag` (a config and a layer of random bytes behind a unique prefix);
/// the image once the registry acknowledged its manifest.
async fn push_image(
    state: &LoadState,
    http: &Client,
    token: &str,
    base: &str,
    tag: &str,
    rng: &mut Rng,
    layer_bytes: usize,
) -> Option<PushedImage> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#).into_bytes();
    let mut layer = format!("layer {tag}\n").into_bytes();
    layer.extend(rng.bytes(layer_bytes));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    for blob in [&config, &layer] {
        if !ensure_blob(state, http, token, base, blob).await {
            return None;
        }
    }
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt).await;
        }
        let put = http
            .put(format!("{base}/v2/{REPO}/manifests/{tag}"))
            .bearer_auth(token)
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone());
        if state
            .exchange("manifest PUT", put, &[StatusCode::CREATED])
            .await
            .is_some()
        {
            return Some(PushedImage {
                tag: tag.to_string(),
                manifest,
                blobs: vec![(sha256(&config), config), (sha256(&layer), layer)],
            });
        }
    }
    state.fail(
        "image push",
        format!("{tag}: manifest not accepted after {MAX_ATTEMPTS} attempts"),
        None,
    );
    None
}

async fn writer(
    state: Arc<LoadState>,
    stop: Arc<AtomicBool>,
    base: String,
    w: usize,
    config: LoadConfig,
) {
    let http = client();
    let mut rng = Rng::seeded();
    // Bounded; the test stops the load long before.
    for n in 0..100_000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // A client signs in for each push, as `docker push` does.
        let Some(token) = state.token(&http, &base).await else {
            backoff(3).await;
            continue;
        };
        let tag = format!("w{w}-{n}");
        if let Some(image) = push_image(
            &state,
            &http,
            &token,
            &base,
            &tag,
            &mut rng,
            config.layer_bytes,
        )
        .await
        {
            state.acknowledged.lock().unwrap().push(Arc::new(image));
        }
        tokio::time::sleep(config.pause).await;
    }
}

async fn reader(state: Arc<LoadState>, stop: Arc<AtomicBool>, base: String, config: LoadConfig) {
    let http = client();
    let mut rng = Rng::seeded();
    let mut token: Option<(String, Instant)> = None;
    for _ in 0..1_000_000 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // A fresh token every 20 s (they live 300 s).
        if token
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() > Duration::from_secs(20))
        {
            match state.token(&http, &base).await {
                Some(t) => token = Some((t, Instant::now())),
                None => {
                    backoff(3).await;
                    continue;
                }
            }
        }
        let t = token.as_ref().unwrap().0.clone();
        let image = {
            let pushed = state.acknowledged.lock().unwrap();
            (!pushed.is_empty()).then(|| pushed[rng.next_u64() as usize % pushed.len()].clone())
        };
        let Some(image) = image else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let get = http
            .get(format!("{base}/v2/{REPO}/manifests/{}", image.tag))
            .bearer_auth(&t)
            .header("accept", OCI_MANIFEST);
        let mut whole = false;
        if let Some(a) = state.exchange("manifest GET", get, &[StatusCode::OK]).await {
            if a.body != image.manifest {
                state.fail(
                    "manifest GET",
                    format!("{}: other bytes than pushed", image.tag),
                    header(&a.headers, "x-upstream"),
                );
            } else {
                let (digest, bytes) = &image.blobs[1];
                let get = http
                    .get(format!("{base}/v2/{REPO}/blobs/{digest}"))
                    .bearer_auth(&t);
                if let Some(a) = state.exchange("blob GET", get, &[StatusCode::OK]).await {
                    if &a.body[..] != bytes.as_slice() {
                        state.fail(
                            "blob GET",
                            format!("{digest}: other bytes than pushed"),
                            header(&a.headers, "x-upstream"),
                        );
                    } else {
                        whole = true;
                    }
                }
            }
        }
        if whole {
            state.pulls.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(config.pause).await;
    }
}

/// Writers and readers through nginx, until [`Load::stop`].
pub struct Load {
    state: Arc<LoadState>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    base: String,
}

/// What the load saw.
pub struct LoadReport {
    pub elapsed: Duration,
    pub requests: usize,
    pub served: usize,
    pub failures: Vec<Failure>,
    pub longest: Duration,
    pub longest_what: String,
    pub acknowledged: Vec<Arc<PushedImage>>,
    pub pulls: usize,
}

impl LoadReport {
    pub fn summary(&self) -> String {
        format!(
            "{} requests in {:.1} s: {} served, {} failed; longest {} ms ({}); {} images pushed, {} pulled back and compared",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.served,
            self.failures.len(),
            self.longest.as_millis(),
            self.longest_what,
            self.acknowledged.len(),
            self.pulls
        )
    }

    pub fn failures_text(&self) -> String {
        self.failures.iter().map(|f| format!("  {f}\n")).collect()
    }

    pub fn assert_no_failures(&self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{context}: {} failed request(s) ({}):\n{}",
            self.failures.len(),
            self.summary(),
            self.failures_text()
        );
    }
}

impl Load {
    pub fn start(base: &str, config: LoadConfig) -> Load {
        let state = Arc::new(LoadState {
            started: Instant::now(),
            acknowledged: Mutex::new(Vec::new()),
            requests: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            failures: Mutex::new(Vec::new()),
            longest: Mutex::new((Duration::ZERO, String::new())),
            pulls: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..config.writers {
            tasks.push(tokio::spawn(writer(
                state.clone(),
                stop.clone(),
                base.to_string(),
                w,
                config.clone(),
            )));
        }
        for _ in 0..config.readers {
            tasks.push(tokio::spawn(reader(
                state.clone(),
                stop.clone(),
                base.to_string(),
                config.clone(),
            )));
        }
        Load {
            state,
            stop,
            tasks,
            base: base.to_string(),
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.state.acknowledged.lock().unwrap().len()
    }

    pub fn failures(&self) -> usize {
        self.state.failures.lock().unwrap().len()
    }

    /// The failures so far.
    pub fn failure_list(&self) -> Vec<Failure> {
        self.state.failures.lock().unwrap().clone()
    }

    /// The images acknowledged so far.
    pub fn acknowledged_images(&self) -> Vec<Arc<PushedImage>> {
        self.state.acknowledged.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Waits (at most `timeout`) until `n` more images are acknowledged than now.
    pub async fn wait_for_pushes(&self, n: usize, timeout: Duration) {
        let target = self.acknowledged() + n;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            assert!(
                Instant::now() < deadline,
                "the load pushed {} of {n} images in {timeout:?} ({} failures)",
                n + self.acknowledged() - target,
                self.failures()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lets it run for `d` (progress assured: at least one more push).
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
        self.wait_for_pushes(1, Duration::from_secs(60)).await;
    }

    /// Stops the clients (each finishes the image or pull it is at, bounded) and
    /// reports.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(Duration::from_secs(180), t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(e)) => panic!("a load task failed: {e}"),
                Err(_) => panic!("a load task did not stop within 180 s"),
            }
        }
        let (longest, longest_what) = self.state.longest.lock().unwrap().clone();
        LoadReport {
            elapsed: self.state.started.elapsed(),
            requests: self.state.requests.load(Ordering::SeqCst),
            served: self.state.served.load(Ordering::SeqCst),
            failures: self.state.failures.lock().unwrap().clone(),
            longest,
            longest_what,
            acknowledged: self.state.acknowledged.lock().unwrap().clone(),
            pulls: self.state.pulls.load(Ordering::SeqCst),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Pulls every image back through `base` and compares manifest and blobs byte for
/// byte; returns what differs or fails (empty: all identical).
pub async fn pull_back_all(base: &str, images: &[Arc<PushedImage>]) -> Vec<String> {
    let http = client();
    let token = {
        let r = http
            .get(format!("{base}/auth/token"))
            .query(&[
                ("service", "wharf"),
                ("scope", &format!("repository:{REPO}:pull")),
            ])
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .expect("token request");
        assert_eq!(r.status(), StatusCode::OK, "token request");
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let mut problems = Vec::new();
    for image in images {
        let r = http
            .get(format!("{base}/v2/{REPO}/manifests/{}", image.tag))
            .bearer_auth(&token)
            .header("accept", OCI_MANIFEST)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                Ok(b) if b == image.manifest => {}
                Ok(_) => problems.push(format!("{}: the manifest differs", image.tag)),
                Err(e) => {
                    problems.push(format!("{}: manifest body: {}", image.tag, error_chain(&e)))
                }
            },
            Ok(r) => problems.push(format!(
                "{}: manifest GET answered {}",
                image.tag,
                r.status()
            )),
            Err(e) => problems.push(format!("{}: manifest GET: {}", image.tag, error_chain(&e))),
        }
        for (digest, bytes) in &image.blobs {
            let r = http
                .get(format!("{base}/v2/{REPO}/blobs/{digest}"))
                .bearer_auth(&token)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == StatusCode::OK => match r.bytes().await {
                    Ok(b) if &b[..] == bytes.as_slice() => {}
                    Ok(_) => problems.push(format!("{}: blob {digest} differs", image.tag)),
                    Err(e) => {
                        problems.push(format!("{}: blob {digest}: {}", image.tag, error_chain(&e)))
                    }
                },
                Ok(r) => problems.push(format!(
                    "{}: blob {digest} answered {}",
                    image.tag,
                    r.status()
                )),
                Err(e) => {
                    problems.push(format!("{}: blob {digest}: {}", image.tag, error_chain(&e)))
                }
            }
        }
    }
    problems
}
