//! Scan on push and pull policies as a registry's users meet them: a real `wharf serve`
//! with authentication on, the real advisory database of the scanner's fixtures
//! imported by the `vulndb_import` job, a vulnerable image (requests 2.25.1, from the
//! scan fixtures' pip install when they are built) pushed and pulled with skopeo, and
//! the policy API with curl-like requests. Then two replicas on PostgreSQL: a policy
//! changed through one is enforced by the other within the documented bound.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_layout::{gzip, tar, write_layout, Blob, TarEntry, OCI_CONFIG, OCI_LAYER_GZIP};
use reqwest::Method;
use secure::{admin, client, create_user, expect, request, run, send, Cred, Reply};
use serde_json::{json, Value};
use support::{serve_command, TestServer};

const SKOPEO_TIMEOUT: Duration = Duration::from_secs(120);
/// The vulnerable release: packages.json expects exactly this advisory for it.
const PACKAGE: (&str, &str) = ("requests", "2.25.1");
const ADVISORY: &str = "PYSEC-2023-74";
const CVE: &str = "CVE-2023-32681";
/// `wharf_registry::POLICY_CACHE_TTL`, as docs/scanning.md states it.
const POLICY_BOUND: Duration = Duration::from_secs(5);
const METADATA_PATH: &str =
    "usr/local/lib/python3.11/site-packages/requests-2.25.1.dist-info/METADATA";

fn vulndb_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

/// The METADATA pip wrote for requests 2.25.1 in the scan fixtures
/// (`scripts/build-scan-fixtures.sh`); without them (they are still being built), the
/// first lines of that same file, which are all the scanner reads.
fn requests_metadata() -> Vec<u8> {
    let dir = match std::env::var_os("WHARF_SCAN_FIXTURES") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/wharf-scan-fixtures"),
    };
    let manifest: Option<Value> = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(m) = manifest {
        let entry = m["packages"].as_array().and_then(|ps| {
            ps.iter().find(|p| {
                p["part"] == "pypi" && p["name"] == PACKAGE.0 && p["version"] == PACKAGE.1
            })
        });
        if let Some(path) = entry.and_then(|e| e["path"].as_str()) {
            let file = dir.join(path).join("requests-2.25.1.dist-info/METADATA");
            if let Ok(bytes) = std::fs::read(&file) {
                return bytes;
            }
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the scan fixtures are required under CI=true (scripts/build-scan-fixtures.sh)");
    }
    eprintln!("NOTE: no scan fixtures; the image holds requests 2.25.1's METADATA head only");
    b"Metadata-Version: 2.1\nName: requests\nVersion: 2.25.1\nSummary: Python HTTP for Humans.\n"
        .to_vec()
}

/// An OCI image whose one layer holds `files`, with a nonce so each is its own image.
struct Image {
    config: Blob,
    layer: Blob,
    manifest: Blob,
}

impl Image {
    fn new(files: &[(&str, &[u8])], nonce: &str) -> Image {
        Image::for_arch(files, nonce, "amd64")
    }

    fn for_arch(files: &[(&str, &[u8])], nonce: &str, arch: &str) -> Image {
        let mut entries = Vec::new();
        for &(path, data) in files {
            entries.push(TarEntry::File {
                path,
                mode: 0o644,
                data,
            });
        }
        let tarball = tar(&entries);
        let layer = Blob::new(OCI_LAYER_GZIP, gzip(&tarball));
        let config = Blob::json(
            OCI_CONFIG,
            &json!({
                "architecture": arch, "os": "linux",
                "config": {"Labels": {"org.wharf.test.nonce": nonce}},
                "rootfs": {"type": "layers", "diff_ids": [oci_layout::sha256(&tarball)]},
            }),
        );
        let manifest = Blob::json(
            oci_layout::OCI_MANIFEST,
            &json!({
                "schemaVersion": 2, "mediaType": oci_layout::OCI_MANIFEST,
                "config": config.descriptor(), "layers": [layer.descriptor()],
            }),
        );
        Image {
            config,
            layer,
            manifest,
        }
    }

    fn digest(&self) -> &str {
        &self.manifest.digest
    }

    /// An OCI layout directory holding it as `v1`, for skopeo.
    fn layout(&self, dir: &Path) -> String {
        write_layout(dir, &[&self.config, &self.layer], &[("v1", &self.manifest)]);
        format!("oci:{}:v1", dir.display())
    }
}

async fn skopeo(args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args);
    run(cmd, None, SKOPEO_TIMEOUT).await
}

fn creds() -> String {
    format!("admin:{}", support::ADMIN_PASSWORD)
}

async fn skopeo_push(server: &TestServer, src: &str, repo_tag: &str) {
    let out = skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(),
        src,
        &format!("docker://{}/{repo_tag}", server.addr),
    ])
    .await;
    assert!(
        out.status.success(),
        "skopeo push of {repo_tag}: {}",
        secure::output_text(&out)
    );
}

/// `skopeo copy docker://… oci:…` as `admin`: the output (exit status and stderr).
async fn skopeo_pull(server: &TestServer, repo_tag: &str, dest: &Path) -> std::process::Output {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/{repo_tag}", server.addr),
        &format!("oci:{}:pulled", dest.display()),
    ])
    .await
}

async fn api(server: &TestServer, method: Method, path: &str, body: Option<&Value>) -> Reply {
    request(server, method, &format!("/api/v0{path}"), &admin(), body).await
}

async fn manifest(server: &TestServer, method: Method, repo: &str, reference: &str) -> Reply {
    let rb = client()
        .request(
            method,
            server.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .header("accept", oci_layout::OCI_MANIFEST);
    send(admin().apply(rb)).await
}

async fn scan_jobs(server: &TestServer) -> Vec<Value> {
    let r = api(server, Method::GET, "/jobs?action=scan&limit=1000", None).await;
    expect(&r, 200, None, "listing scan jobs");
    r.json()["jobs"].as_array().cloned().unwrap_or_default()
}

/// Polls a job until it is over (bounded); returns it.
async fn wait_for_job(server: &TestServer, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = api(server, Method::GET, &format!("/jobs/{id}"), None).await;
        expect(&r, 200, None, "reading a job");
        let job = r.json();
        if ["done", "error", "cancelled", "worker_dead"]
            .contains(&job["status"].as_str().unwrap_or(""))
        {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} is not over: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job_log(server: &TestServer, id: i64) -> String {
    let r = api(server, Method::GET, &format!("/jobs/{id}/logs"), None).await;
    expect(&r, 200, None, "reading a job's log");
    r.text()
}

async fn set_policy(server: &TestServer, repo: &str, policy: Value) {
    let r = api(
        server,
        Method::PUT,
        &format!("/repositories/{repo}/_scan_policy"),
        Some(&policy),
    )
    .await;
    expect(
        &r,
        204,
        None,
        &format!("setting {repo}'s policy to {policy}"),
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_on_push_and_pull_policies_on_a_vulnerable_image() {
    if !support::require_tool("skopeo") {
        return;
    }
    let server = TestServer::start_secure();
    let tmp = tempfile::tempdir().unwrap();

    // The real advisory database, imported by the job as an operator would queue it.
    let r = api(
        &server,
        Method::POST,
        "/jobs",
        Some(&json!({"action": "vulndb_import", "params": {"path": vulndb_fixtures()}})),
    )
    .await;
    expect(&r, 202, None, "queueing the import");
    let job = wait_for_job(&server, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");

    // Push: one scan job, which finds the advisory.
    let metadata = requests_metadata();
    let image = Image::new(&[(METADATA_PATH, &metadata[..])], "vulnerable");
    let src = image.layout(&tmp.path().join("src"));
    skopeo_push(&server, &src, "team/app:v1").await;
    let jobs = scan_jobs(&server).await;
    assert_eq!(jobs.len(), 1, "one push, one scan job: {jobs:#?}");
    assert_eq!(
        jobs[0]["params"],
        json!({"repository": "team/app", "digest": image.digest()})
    );
    let job = wait_for_job(&server, jobs[0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["status"], "done", "{job}");
    let log = job_log(&server, jobs[0]["id"].as_i64().unwrap()).await;
    assert!(
        log.contains("1 packages") && log.contains("1 findings"),
        "{log}"
    );

    // The same image again, under another tag and in another repository: no new job.
    skopeo_push(&server, &src, "team/app:v2").await;
    skopeo_push(&server, &src, "team/other:v1").await;
    let jobs = scan_jobs(&server).await;
    assert_eq!(jobs.len(), 1, "already scanned: {jobs:#?}");

    // The default policy refuses nothing.
    let pulled = tmp.path().join("pulled");
    let out = skopeo_pull(&server, "team/app:v1", &pulled).await;
    assert!(out.status.success(), "{}", secure::output_text(&out));

    // A threshold above the finding's severity (PYSEC-2023-74 has none: `unknown`).
    set_policy(&server, "team/app", json!({"block_severity": "critical"})).await;
    let out = skopeo_pull(&server, "team/app:v1", &tmp.path().join("p1")).await;
    assert!(out.status.success(), "{}", secure::output_text(&out));

    // `unknown` blocks it: skopeo is refused, and says why.
    set_policy(&server, "team/app", json!({"block_severity": "unknown"})).await;
    let out = skopeo_pull(&server, "team/app:v1", &tmp.path().join("p2")).await;
    assert!(!out.status.success(), "{}", secure::output_text(&out));
    let err = stderr(&out);
    println!("--- skopeo refused:\n{err}");
    assert!(err.contains("denied"), "{err}");
    assert!(err.contains(ADVISORY) && err.contains(CVE), "{err}");
    assert!(err.contains("requests 2.25.1, fixed in 2.31.0"), "{err}");
    // By digest, GET and HEAD alike; the same image elsewhere is not affected.
    let r = manifest(&server, Method::GET, "team/app", image.digest()).await;
    expect(&r, 403, Some("DENIED"), "GET by digest");
    println!("--- GET by digest: {}", r.text());
    let body = r.json();
    assert_eq!(
        body["errors"][0]["message"], body["errors"][0]["detail"],
        "{body}"
    );
    let message = body["errors"][0]["message"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        "pull refused by the repository's vulnerability policy (block severity >= unknown): \
         1 vulnerability: PYSEC-2023-74 (aka CVE-2023-32681) (unknown) in requests 2.25.1, \
         fixed in 2.31.0"
    );
    let r = manifest(&server, Method::HEAD, "team/app", "v2").await;
    assert_eq!(r.status, 403, "{}", r.describe());
    let r = manifest(&server, Method::GET, "team/other", "v1").await;
    expect(
        &r,
        200,
        None,
        "the same image in a repository without a policy",
    );

    // Each refusal is audited: who, which image, why.
    let r = api(&server, Method::GET, "/audit?limit=20", None).await;
    let entries = r.json();
    let denied: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "pull.denied")
        .collect();
    assert!(denied.len() >= 3, "{entries:#}");
    assert_eq!(denied[0]["actor"], "admin");
    assert_eq!(denied[0]["target"], format!("team/app@{}", image.digest()));
    assert!(
        denied[0]["details"].as_str().unwrap().contains(CVE),
        "{entries:#}"
    );
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "scan_policy.set" && e["target"] == "team/app"),
        "{entries:#}"
    );

    // Allowlisted by its CVE id: the pull goes through.
    let r = api(
        &server,
        Method::PUT,
        &format!("/repositories/team/app/_scan_allowlist/{CVE}"),
        Some(&json!({"expires_at": null, "reason": "not reachable: no proxies in use"})),
    )
    .await;
    expect(&r, 204, None, "allowlisting");
    let out = skopeo_pull(&server, "team/app:v1", &tmp.path().join("p3")).await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let r = api(
        &server,
        Method::GET,
        "/repositories/team/app/_scan_allowlist",
        None,
    )
    .await;
    expect(&r, 200, None, "reading the allowlist");
    assert_eq!(r.json()[0]["vuln_id"], CVE, "{}", r.text());
    assert_eq!(r.json()[0]["expired"], false, "{}", r.text());

    // An entry that expires: through until then, refused after.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = api(
        &server,
        Method::PUT,
        &format!("/repositories/team/app/_scan_allowlist/{CVE}"),
        Some(&json!({"expires_at": now + 2, "reason": "until the rebuild"})),
    )
    .await;
    expect(&r, 204, None, "an allowlist entry that expires");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = manifest(&server, Method::GET, "team/app", "v1").await;
        if r.status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still allowed after expiry: {}",
            r.describe()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = skopeo_pull(&server, "team/app:v1", &tmp.path().join("p4")).await;
    assert!(!out.status.success(), "{}", secure::output_text(&out));
    let r = api(
        &server,
        Method::GET,
        "/repositories/team/app/_scan_allowlist",
        None,
    )
    .await;
    assert_eq!(r.json()[0]["expired"], true, "{}", r.text());
    let r = api(
        &server,
        Method::DELETE,
        &format!("/repositories/team/app/_scan_allowlist/{CVE}"),
        None,
    )
    .await;
    expect(&r, 204, None, "removing the entry");

    // Unscanned images: not scanned on push here, refused or allowed as configured.
    set_policy(
        &server,
        "team/fresh",
        json!({"scan_on_push": false, "unscanned": "refuse"}),
    )
    .await;
    let fresh = Image::new(&[(METADATA_PATH, &metadata[..])], "unscanned");
    skopeo_push(
        &server,
        &fresh.layout(&tmp.path().join("fresh")),
        "team/fresh:v1",
    )
    .await;
    assert_eq!(scan_jobs(&server).await.len(), 1, "scan_on_push is off");
    let out = skopeo_pull(&server, "team/fresh:v1", &tmp.path().join("p5")).await;
    assert!(!out.status.success(), "{}", secure::output_text(&out));
    assert!(
        stderr(&out).contains("unscanned images are refused): the image has not been scanned yet"),
        "{}",
        stderr(&out)
    );
    set_policy(
        &server,
        "team/fresh",
        json!({"scan_on_push": false, "unscanned": "allow"}),
    )
    .await;
    let out = skopeo_pull(&server, "team/fresh:v1", &tmp.path().join("p6")).await;
    assert!(out.status.success(), "{}", secure::output_text(&out));

    // The registry's default applies where a repository has none.
    let r = api(
        &server,
        Method::PUT,
        "/scan_policy",
        Some(&json!({"block_severity": "unknown"})),
    )
    .await;
    expect(&r, 204, None, "setting the default");
    let r = manifest(&server, Method::GET, "team/other", "v1").await;
    expect(&r, 403, Some("DENIED"), "under the registry's default");
    assert!(
        r.text()
            .contains("the registry's default vulnerability policy"),
        "{}",
        r.text()
    );
    let r = api(
        &server,
        Method::GET,
        "/repositories/team/other/_scan_policy",
        None,
    )
    .await;
    assert_eq!(r.json()["source"], "registry", "{}", r.text());
    assert_eq!(r.json()["block_severity"], "unknown", "{}", r.text());
    let r = api(
        &server,
        Method::PUT,
        "/scan_policy",
        Some(&json!({"block_severity": null})),
    )
    .await;
    expect(&r, 204, None, "resetting the default");
    let r = manifest(&server, Method::GET, "team/other", "v1").await;
    expect(&r, 200, None, "the default no longer blocks");

    // A multi-platform image, pushed with `skopeo copy --all`: a clean amd64 image and
    // the vulnerable one for arm64. Each platform queues its own scan as it is pushed;
    // the index, whose platforms are then covered, queues none.
    let clean = Image::for_arch(&[("etc/motd", b"nothing installed\n")], "clean", "amd64");
    let vulnerable = Image::for_arch(&[(METADATA_PATH, &metadata[..])], "arm64", "arm64");
    let index = Blob::json(
        oci_layout::OCI_INDEX,
        &json!({
            "schemaVersion": 2, "mediaType": oci_layout::OCI_INDEX,
            "manifests": [
                {"mediaType": oci_layout::OCI_MANIFEST, "digest": clean.digest(),
                 "size": clean.manifest.size(), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": oci_layout::OCI_MANIFEST, "digest": vulnerable.digest(),
                 "size": vulnerable.manifest.size(), "platform": {"os": "linux", "architecture": "arm64"}},
            ],
        }),
    );
    let multi = tmp.path().join("multi");
    write_layout(
        &multi,
        &[
            &clean.config,
            &clean.layer,
            &clean.manifest,
            &vulnerable.config,
            &vulnerable.layer,
            &vulnerable.manifest,
        ],
        &[("v1", &index)],
    );
    let out = skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds(),
        &format!("oci:{}:v1", multi.display()),
        &format!("docker://{}/team/multi:v1", server.addr),
    ])
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let jobs = scan_jobs(&server).await;
    let digests: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j["params"]["digest"].as_str())
        .collect();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    assert!(digests.contains(&clean.digest()) && digests.contains(&vulnerable.digest()));
    assert!(!digests.contains(&index.digest.as_str()), "{jobs:#?}");
    for job in &jobs[..2] {
        let done = wait_for_job(&server, job["id"].as_i64().unwrap()).await;
        assert_eq!(done["status"], "done", "{done}");
    }
    set_policy(&server, "team/multi", json!({"block_severity": "unknown"})).await;
    // The index is served; the clean platform pulls, the vulnerable one is refused.
    let rb = client()
        .get(server.url("/v2/team/multi/manifests/v1"))
        .header("accept", oci_layout::OCI_INDEX);
    expect(&send(admin().apply(rb)).await, 200, None, "the index");
    let out = skopeo(&[
        "--override-arch",
        "amd64",
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/team/multi:v1", server.addr),
        &format!("oci:{}:amd64", tmp.path().join("m1").display()),
    ])
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    let out = skopeo(&[
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/team/multi:v1", server.addr),
        &format!("oci:{}:arm64", tmp.path().join("m2").display()),
    ])
    .await;
    assert!(!out.status.success(), "{}", secure::output_text(&out));
    assert!(stderr(&out).contains(ADVISORY), "{}", stderr(&out));
    let out = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &creds(),
        &format!("docker://{}/team/multi:v1", server.addr),
        &format!("oci:{}:all", tmp.path().join("m3").display()),
    ])
    .await;
    assert!(!out.status.success(), "{}", secure::output_text(&out));
    assert!(stderr(&out).contains(ADVISORY), "{}", stderr(&out));

    // Bad input is refused clearly; only administrators manage policies.
    let r = api(
        &server,
        Method::PUT,
        "/repositories/team/app/_scan_policy",
        Some(&json!({"block_severity": "severe"})),
    )
    .await;
    expect(&r, 400, None, "an unknown severity");
    assert!(
        r.text().contains("unknown variant `severe`"),
        "{}",
        r.text()
    );
    let r = api(
        &server,
        Method::PUT,
        "/repositories/team/app/_scan_allowlist/CVE-2023-1",
        Some(&json!({"expires_at": now - 10, "reason": "x"})),
    )
    .await;
    expect(&r, 400, None, "an expiry in the past");
    assert!(r.text().contains("is not in the future"), "{}", r.text());
    let r = api(
        &server,
        Method::PUT,
        "/repositories/team/app/_scan_allowlist/CVE-2023-1",
        Some(&json!({"expires_at": null, "reason": " "})),
    )
    .await;
    expect(&r, 400, None, "no reason");
    let r = api(
        &server,
        Method::PUT,
        "/repositories/team/app/_scan_allowlist/CVE%202023",
        Some(&json!({"expires_at": null, "reason": "x"})),
    )
    .await;
    expect(&r, 400, None, "a bad id");
    create_user(&server, "mallory", "mallory-password").await;
    let mallory = Cred::basic("mallory", "mallory-password");
    let r = request(
        &server,
        Method::PUT,
        "/api/v0/repositories/team/app/_scan_policy",
        &mallory,
        Some(&json!({"block_severity": null})),
    )
    .await;
    expect(&r, 403, Some("DENIED"), "a non-administrator");
    let r = request(&server, Method::GET, "/api/v0/scan_policy", &mallory, None).await;
    expect(&r, 403, Some("DENIED"), "a non-administrator");
}

/// A quick comparison, printed (not asserted): manifest PUTs of new images with scan on
/// push on and off.
#[tokio::test]
async fn push_latency_with_and_without_scan_on_push() {
    let server = TestServer::start_secure();
    let cred = admin();
    set_policy(&server, "lat/off", json!({"scan_on_push": false})).await;
    set_policy(&server, "lat/on", json!({"scan_on_push": true})).await;
    let mut figures = Vec::new();
    for repo in ["lat/off", "lat/on", "lat/off", "lat/on"] {
        let mut total = Duration::ZERO;
        const N: usize = 30;
        for i in 0..N {
            let img = secure::tiny_image(&format!("{repo}-{i}-{}", figures.len()));
            secure::try_push_blob(&server.base, &cred, repo, &img.config)
                .await
                .unwrap();
            secure::try_push_blob(&server.base, &cred, repo, &img.layer)
                .await
                .unwrap();
            let put = client()
                .put(server.url(&format!("/v2/{repo}/manifests/t{i}")))
                .header("content-type", secure::OCI_MANIFEST)
                .body(img.manifest.clone());
            let started = Instant::now();
            let r = send(cred.apply(put)).await;
            total += started.elapsed();
            assert_eq!(r.status, 201, "{}", r.describe());
        }
        figures.push(format!("{repo}: {:?} per manifest PUT", total / N as u32));
    }
    let jobs = scan_jobs(&server).await;
    assert_eq!(jobs.len(), 60, "one job per image pushed with scan on push");
    println!("push latency (SQLite): {figures:?}");
}

fn start_replica(pg: &str, data_dir: &Path) -> TestServer {
    let mut cmd = serve_command();
    cmd.args(["--listen", "127.0.0.1:0", "--metadata", pg])
        .arg("--data-dir")
        .arg(data_dir)
        .env("WHARF_ADMIN_PASSWORD", support::ADMIN_PASSWORD);
    TestServer::launch(cmd, data_dir)
}

/// Polls `repo:tag` on `server` until its status is `want`; how long it took.
async fn until_status(server: &TestServer, repo: &str, tag: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let r = manifest(server, Method::GET, repo, tag).await;
        if r.status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < POLICY_BOUND + Duration::from_secs(10),
            "{} still answers {} after {:?}",
            server.addr,
            r.describe(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_reaches_every_replica_within_the_bound() {
    if !support::require_tool("psql") {
        return;
    }
    let Some(pg) = support::pg_database("scan_policy") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = start_replica(&pg, &tmp.path().join("a"));
    let b = start_replica(&pg, &tmp.path().join("b"));
    let repo = "cluster/policy";
    set_policy(&a, repo, json!({"scan_on_push": false})).await;
    secure::push(&a, &admin(), repo, "v1", "replicated").await;
    // Both replicas have read (and cached) the policy that allows it.
    for r in [&a, &b] {
        expect(
            &manifest(r, Method::GET, repo, "v1").await,
            200,
            None,
            "before",
        );
    }

    // Changed through A: A refuses at once, B within the bound.
    set_policy(
        &a,
        repo,
        json!({"scan_on_push": false, "unscanned": "refuse"}),
    )
    .await;
    let on_a = until_status(&a, repo, "v1", 403).await;
    let on_b = until_status(&b, repo, "v1", 403).await;
    println!("refused by A after {on_a:?}, by B after {on_b:?}");
    assert!(on_a < Duration::from_secs(1), "{on_a:?}");
    assert!(on_b <= POLICY_BOUND + Duration::from_secs(1), "{on_b:?}");

    // And back through B.
    set_policy(
        &b,
        repo,
        json!({"scan_on_push": false, "unscanned": "allow"}),
    )
    .await;
    let on_a = until_status(&a, repo, "v1", 200).await;
    println!("allowed again by A after {on_a:?}");
    assert!(on_a <= POLICY_BOUND + Duration::from_secs(1), "{on_a:?}");

    // Scan on push through either replica queues one job for one image.
    set_policy(&a, "cluster/scanned", json!({})).await;
    let digest = secure::push(&a, &admin(), "cluster/scanned", "v1", "twice").await;
    secure::push(&b, &admin(), "cluster/scanned", "v2", "twice").await;
    secure::push(&b, &admin(), "cluster/elsewhere", "v1", "twice").await;
    let jobs: Vec<Value> = scan_jobs(&a)
        .await
        .into_iter()
        .filter(|j| j["params"]["digest"] == digest)
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
}

/// A store without the scanning tables (what `wharf upgrade rollback` leaves of schema
/// level 3, while this build may still run): pulls are served, pushes go on, nothing
/// is refused or scanned, and the policy API says why it cannot answer.
#[tokio::test]
async fn without_the_scanning_tables_pushes_and_pulls_go_on() {
    if !support::require_tool("sqlite3") {
        return;
    }
    let server = TestServer::start_secure();
    let repo = "old/app";
    set_policy(
        &server,
        repo,
        json!({"scan_on_push": false, "unscanned": "refuse"}),
    )
    .await;
    secure::push(&server, &admin(), repo, "v1", "before the rollback").await;
    let r = manifest(&server, Method::GET, repo, "v1").await;
    expect(&r, 403, Some("DENIED"), "unscanned, refused");

    // A repository that scans on push, its policy read just before the tables go.
    set_policy(&server, "old/scanned", json!({})).await;
    secure::push(&server, &admin(), "old/scanned", "v1", "scanned before").await;

    // Level 3's undo, run under the running replica.
    let undo = include_str!("../../metastore/src/sql/sqlite/0003_scanning.undo.sql");
    let mut cmd = tokio::process::Command::new("sqlite3");
    cmd.arg(server.data_dir.join("metadata.db"));
    let out = run(
        cmd,
        Some(&format!(".timeout 10000\n{undo}")),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{}", secure::output_text(&out));
    // Pushed while this replica still holds that policy: stored, without its scan.
    secure::push(&server, &admin(), "old/scanned", "v2", "scanned after").await;

    // Within the cache's bound the policy is gone with its table: the pull is served.
    let took = until_status(&server, repo, "v1", 200).await;
    assert!(took <= POLICY_BOUND + Duration::from_secs(1), "{took:?}");
    secure::push(&server, &admin(), repo, "v2", "after the rollback").await;
    let r = manifest(&server, Method::HEAD, repo, "v2").await;
    expect(&r, 200, None, "a push after the rollback");
    let r = api(
        &server,
        Method::GET,
        &format!("/repositories/{repo}/_scan_policy"),
        None,
    )
    .await;
    assert!(
        r.text().contains("no vulnerability scanning tables"),
        "{}",
        r.describe()
    );
}
