//! Black-box tests with real clients against a real `wharf serve`:
//!
//! - skopeo copies OCI images, Docker schema 2 images and multi-arch indexes in and
//!   out, and every digest survives the round trip byte for byte;
//! - the Docker Engine pushes an image it built (and one it imported), pulls it back
//!   after deleting it locally, and runs it;
//! - oras-py pushes artifacts whose `subject` is an image, and the referrers API
//!   lists them, with and without an `artifactType` filter.
//!
//! Every test starts its own registry, bounds every external command with a timeout,
//! and removes what it created (temp dirs, Docker images and containers) on drop, so
//! also when it fails.

mod support;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use oci_layout::*;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::TestServer;
use tokio::process::Command;

const SKOPEO_TIMEOUT: Duration = Duration::from_secs(180);
const DOCKER_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------
// running commands

fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    let mut s = std.get_program().to_string_lossy().into_owned();
    for a in std.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, killing it if it outlives `timeout`.
async fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("could not run `{what}`: {e}"),
        Err(_) => panic!("`{what}` did not finish within {timeout:?} (killed)"),
    }
}

/// Runs a command that must succeed; returns its stdout.
async fn run_ok(cmd: Command, timeout: Duration) -> String {
    let what = describe(&cmd);
    let out = run(cmd, timeout).await;
    assert!(
        out.status.success(),
        "`{what}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn skopeo(args: &[&str]) -> String {
    let mut cmd = Command::new("skopeo");
    // The host's signature policy is not what these tests are about.
    cmd.arg("--insecure-policy").args(args);
    run_ok(cmd, SKOPEO_TIMEOUT).await
}

fn docker_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    cmd
}

async fn docker(args: &[&str]) -> String {
    run_ok(docker_cmd(args), DOCKER_TIMEOUT).await
}

/// Missing external pieces skip a test, except under CI=true where they fail it.
fn missing(what: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true (scripts/install-test-deps.sh)");
    }
    eprintln!("SKIPPED: {what} is not available");
    false
}

async fn docker_daemon_ready() -> bool {
    let out = run(
        docker_cmd(&["version", "--format", "{{.Server.Version}}"]),
        Duration::from_secs(60),
    )
    .await;
    out.status.success() || missing("a running Docker daemon")
}

/// A dozen hex digits unique to this run, for image, repository and container names.
fn unique_id() -> String {
    Rng::seeded().hex(12)
}

// ---------------------------------------------------------------------------------
// talking HTTP to the registry

struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn fetch(method: Method, url: &str, accept: &[&str]) -> Fetched {
    let mut req = reqwest::Client::new().request(method, url);
    if !accept.is_empty() {
        req = req.header(ACCEPT, accept.join(", "));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("request to {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("response body");
    Fetched {
        status,
        headers,
        body,
    }
}

async fn get(url: &str, accept: &[&str]) -> Fetched {
    fetch(Method::GET, url, accept).await
}

/// Asserts the registry serves `blob` byte for byte from `repo`.
async fn assert_blob_served(server: &TestServer, repo: &str, digest: &str, bytes: &[u8]) {
    let r = get(&server.url(&format!("/v2/{repo}/blobs/{digest}")), &[]).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "GET blob {digest} from {repo}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "Docker-Content-Digest of blob {digest}"
    );
    assert!(
        r.body.as_ref() == bytes,
        "blob {digest} from {repo} differs from what was pushed"
    );
}

/// Pushes a blob with the two-step (POST, PUT) upload every client supports.
async fn push_blob_http(server: &TestServer, repo: &str, blob: &Blob) {
    let client = reqwest::Client::new();
    let r = client
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST upload");
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "POST /v2/{repo}/blobs/uploads/"
    );
    let location = r
        .headers()
        .get(LOCATION)
        .expect("upload Location")
        .to_str()
        .unwrap()
        .to_string();
    let location = if location.starts_with('/') {
        server.url(&location)
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{location}{sep}digest={}", blob.digest))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .await
        .expect("PUT upload");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "finishing the upload of {}",
        blob.digest
    );
}

/// PUTs a manifest; returns the response headers.
async fn put_manifest_http(
    server: &TestServer,
    repo: &str,
    reference: &str,
    manifest: &Blob,
) -> HeaderMap {
    let r = reqwest::Client::new()
        .put(server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(CONTENT_TYPE, &manifest.media_type)
        .body(manifest.bytes.clone())
        .send()
        .await
        .expect("PUT manifest");
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "PUT /v2/{repo}/manifests/{reference}: {body}"
    );
    headers
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------------------------
// skopeo

/// Asserts an OCI layout written by skopeo holds `tag` -> `manifest`, with every
/// blob in `content` byte-identical.
fn assert_layout_holds(layout: &Layout, tag: &str, manifest: &Blob, content: &[&Blob]) {
    let d = layout.descriptor(tag);
    assert_eq!(
        d["digest"],
        manifest.digest.as_str(),
        "digest of {tag} in the pulled layout"
    );
    assert_eq!(
        d["mediaType"],
        manifest.media_type.as_str(),
        "media type of {tag} in the pulled layout"
    );
    assert_eq!(
        d["size"],
        manifest.size(),
        "size of {tag} in the pulled layout"
    );
    assert!(
        layout.blob(&manifest.digest) == manifest.bytes,
        "pulled manifest {} differs",
        manifest.digest
    );
    for b in content {
        assert!(
            layout.blob(&b.digest) == b.bytes,
            "pulled blob {} ({}) differs",
            b.digest,
            b.media_type
        );
    }
}

#[tokio::test]
async fn skopeo_round_trips_an_oci_image_byte_for_byte() {
    if !support::require_tool("skopeo") {
        return;
    }
    let server = TestServer::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng::seeded();
    // Three real tar+gzip layers; the first is bigger than any single read buffer.
    let image = random_image(&mut rng, "amd64", &[1_500_000, 200_000, 3_000]);
    let src = tmp.path().join("src");
    write_layout(&src, &image.content(), &[("v1", &image.manifest)]);

    let repo = "some/deep/repo";
    let remote = format!("docker://{}/{repo}:v1", server.addr);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &remote,
    ])
    .await;

    // What the registry now serves is exactly what was pushed.
    let m = get(
        &server.url(&format!("/v2/{repo}/manifests/v1")),
        &[OCI_MANIFEST],
    )
    .await;
    assert_eq!(
        m.status,
        StatusCode::OK,
        "GET manifest: {}",
        String::from_utf8_lossy(&m.body)
    );
    assert_eq!(m.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        m.header("docker-content-digest"),
        Some(image.manifest.digest.as_str())
    );
    assert!(
        m.body.as_ref() == image.manifest.bytes,
        "the registry altered the manifest"
    );
    for b in image.content() {
        assert_blob_served(&server, repo, &b.digest, &b.bytes).await;
    }
    let tags = get(&server.url(&format!("/v2/{repo}/tags/list")), &[])
        .await
        .json();
    assert_eq!(tags, json!({ "name": repo, "tags": ["v1"] }));

    // And back into a fresh layout: same manifest digest, same blobs.
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:v1", back.display()),
    ])
    .await;
    let layout = Layout::open(&back);
    assert_layout_holds(&layout, "v1", &image.manifest, &image.content());
    assert_eq!(
        layout.descriptor("v1")["digest"].as_str(),
        m.header("docker-content-digest"),
        "the pulled digest is the registry's Docker-Content-Digest"
    );
}

/// skopeo's `dir:` transport stores the manifest as-is in `manifest.json` and blobs
/// under their hex digest.
fn dir_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let candidates = [dir.join(hex), dir.join(format!("{hex}.tar"))];
    candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_else(|| panic!("blob {digest} is missing from {}", dir.display()))
}

#[tokio::test]
async fn skopeo_round_trips_a_docker_schema2_image() {
    if !support::require_tool("skopeo") {
        return;
    }
    let server = TestServer::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng::seeded();
    let image = random_image(&mut rng, "amd64", &[700_000, 50_000, 1_000]);
    let src = tmp.path().join("src");
    write_layout(&src, &image.content(), &[("v2", &image.manifest)]);

    let repo = "v2s2/app";
    let remote = format!("docker://{}/{repo}:v2", server.addr);
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:v2", src.display()),
        &remote,
    ])
    .await;

    // The registry stores a Docker schema 2 manifest naming the same layer blobs.
    let url = server.url(&format!("/v2/{repo}/manifests/v2"));
    let m = get(&url, &[DOCKER_MANIFEST]).await;
    assert_eq!(
        m.status,
        StatusCode::OK,
        "GET manifest: {}",
        String::from_utf8_lossy(&m.body)
    );
    assert_eq!(m.header("content-type"), Some(DOCKER_MANIFEST));
    let digest = sha256(&m.body);
    assert_eq!(m.header("docker-content-digest"), Some(digest.as_str()));
    let doc = m.json();
    assert_eq!(doc["schemaVersion"], 2);
    assert_eq!(doc["mediaType"], DOCKER_MANIFEST);
    assert_eq!(doc["config"]["mediaType"], DOCKER_CONFIG);
    let layers = doc["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), image.layers.len());
    for (got, want) in layers.iter().zip(&image.layers) {
        assert_eq!(got["mediaType"], DOCKER_LAYER_GZIP);
        assert_eq!(
            got["digest"],
            want.digest.as_str(),
            "a layer changed digest in the conversion"
        );
        assert_eq!(got["size"], want.size());
        assert_blob_served(&server, repo, &want.digest, &want.bytes).await;
    }
    let config_digest = doc["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string();
    let config = get(
        &server.url(&format!("/v2/{repo}/blobs/{config_digest}")),
        &[],
    )
    .await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(sha256(&config.body), config_digest);
    assert_eq!(config.json()["rootfs"]["diff_ids"], json!(image.diff_ids));

    // Stored as pushed: a client that sends no Accept gets schema 2 too.
    let plain = get(&url, &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(plain.header("docker-content-digest"), Some(digest.as_str()));

    let head = fetch(Method::HEAD, &url, &[DOCKER_MANIFEST]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(m.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // Out with `dir:` (which keeps the manifest verbatim, where `oci:` would convert it
    // back): the same schema 2 manifest and blobs.
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &format!("dir:{}", back.display()),
    ])
    .await;
    let pulled = std::fs::read(back.join("manifest.json")).expect("manifest.json");
    assert!(
        pulled == m.body.as_ref(),
        "the pulled manifest differs from the one the registry serves"
    );
    assert_eq!(sha256(&pulled), digest);
    assert!(
        dir_blob(&back, &config_digest) == config.body.as_ref(),
        "pulled config differs"
    );
    for l in &image.layers {
        assert!(
            dir_blob(&back, &l.digest) == l.bytes,
            "pulled layer {} differs",
            l.digest
        );
    }

    // And in again under another name: the digest does not move.
    let again = format!("docker://{}/v2s2/copy:v2", server.addr);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("dir:{}", back.display()),
        &again,
    ])
    .await;
    let m2 = get(
        &server.url("/v2/v2s2/copy/manifests/v2"),
        &[DOCKER_MANIFEST],
    )
    .await;
    assert_eq!(m2.status, StatusCode::OK);
    assert_eq!(m2.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(m2.header("docker-content-digest"), Some(digest.as_str()));
}

#[tokio::test]
async fn skopeo_round_trips_a_multi_arch_index() {
    if !support::require_tool("skopeo") {
        return;
    }
    let server = TestServer::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng::seeded();
    let amd64 = random_image(&mut rng, "amd64", &[300_000, 2_000]);
    let arm64 = random_image(&mut rng, "arm64", &[250_000, 4_000]);
    let index = index_of(&[("amd64", &amd64), ("arm64", &arm64)]);
    let mut blobs = amd64.blobs();
    blobs.extend(arm64.blobs());
    let src = tmp.path().join("src");
    write_layout(&src, &blobs, &[("multi", &index)]);

    let repo = "multi/arch";
    let remote = format!("docker://{}/{repo}:multi", server.addr);
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", src.display()),
        &remote,
    ])
    .await;

    // The index is served verbatim, as an OCI index.
    let url = server.url(&format!("/v2/{repo}/manifests/multi"));
    let m = get(&url, &[OCI_INDEX, OCI_MANIFEST]).await;
    assert_eq!(
        m.status,
        StatusCode::OK,
        "GET index: {}",
        String::from_utf8_lossy(&m.body)
    );
    assert_eq!(m.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        m.header("docker-content-digest"),
        Some(index.digest.as_str())
    );
    assert!(
        m.body.as_ref() == index.bytes,
        "the registry altered the index"
    );
    let by_digest = get(
        &server.url(&format!("/v2/{repo}/manifests/{}", index.digest)),
        &[OCI_INDEX],
    )
    .await;
    assert_eq!(by_digest.status, StatusCode::OK);
    assert_eq!(by_digest.header("content-type"), Some(OCI_INDEX));
    assert!(by_digest.body == m.body);

    // Both platform manifests, by digest, and all their blobs.
    for img in [&amd64, &arm64] {
        let child = get(
            &server.url(&format!("/v2/{repo}/manifests/{}", img.manifest.digest)),
            &[OCI_MANIFEST],
        )
        .await;
        assert_eq!(
            child.status,
            StatusCode::OK,
            "GET child {}",
            img.manifest.digest
        );
        assert_eq!(child.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            child.header("docker-content-digest"),
            Some(img.manifest.digest.as_str())
        );
        assert!(child.body.as_ref() == img.manifest.bytes);
        for b in img.content() {
            assert_blob_served(&server, repo, &b.digest, &b.bytes).await;
        }
    }

    // Back out with --all: the same index digest and both children, blob for blob.
    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:multi", back.display()),
    ])
    .await;
    let layout = Layout::open(&back);
    assert_layout_holds(
        &layout,
        "multi",
        &index,
        &[&amd64.manifest, &arm64.manifest],
    );
    for img in [&amd64, &arm64] {
        for b in img.content() {
            assert!(
                layout.blob(&b.digest) == b.bytes,
                "pulled blob {} differs",
                b.digest
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Docker

/// Removes the containers and images a test created, whatever happened to it.
#[derive(Default)]
struct DockerCleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl DockerCleanup {
    fn docker(args: &[&str]) {
        let child = std::process::Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if support::wait_with_timeout(&mut child, Duration::from_secs(60)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            Self::docker(&["rm", "--force", c]);
        }
        for i in &self.images {
            Self::docker(&["rmi", "--force", i]);
        }
    }
}

/// The `sha256:…` digest `docker push` reports (`TAG: digest: sha256:… size: N`).
fn pushed_digest(output: &str) -> String {
    output
        .split_whitespace()
        .find(|w| w.starts_with("sha256:") && w.len() == 71)
        .unwrap_or_else(|| panic!("no digest in the docker push output:\n{output}"))
        .to_string()
}

/// Pushes `image` (a `host:port/repo:tag` name), checks the registry has it under the
/// digest Docker reports, deletes it locally, pulls it back, and returns the digest.
async fn push_remove_pull(server: &TestServer, image: &str, repo: &str, tag: &str) -> String {
    let out = docker(&["push", image]).await;
    let digest = pushed_digest(&out);
    let head = fetch(
        Method::HEAD,
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        &[
            DOCKER_MANIFEST,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            OCI_INDEX,
        ],
    )
    .await;
    assert_eq!(
        head.status,
        StatusCode::OK,
        "HEAD {repo}:{tag} after docker push"
    );
    assert_eq!(
        head.header("docker-content-digest"),
        Some(digest.as_str()),
        "docker push reported {digest}"
    );
    // Docker 20.10 pushes schema 2; engines with the containerd image store push OCI.
    let pushed_types = [
        DOCKER_MANIFEST,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        OCI_INDEX,
    ];
    let content_type = head.header("content-type").unwrap_or_default();
    assert!(
        pushed_types.contains(&content_type),
        "Content-Type of the pushed manifest: {content_type:?}"
    );

    docker(&["rmi", image]).await;
    let gone = run(docker_cmd(&["image", "inspect", image]), DOCKER_TIMEOUT).await;
    assert!(
        !gone.status.success(),
        "{image} is still present locally after docker rmi"
    );

    let out = docker(&["pull", image]).await;
    assert!(
        out.contains(&digest),
        "docker pull did not report {digest}:\n{out}"
    );
    let repo_digests = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        image,
    ])
    .await;
    let want = format!("{}/{repo}@{digest}", server.addr);
    assert!(
        repo_digests.contains(&want),
        "RepoDigests of the pulled image: {repo_digests}, expected {want}"
    );
    digest
}

#[tokio::test]
async fn docker_pushes_pulls_and_runs_a_built_image() {
    if !support::require_tool("docker") {
        return;
    }
    if !docker_daemon_ready().await {
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() && !missing("/bin/busybox (Debian package busybox-static)") {
        return;
    }
    let server = TestServer::start();
    let id = unique_id();
    let local = format!("wharf-test-build-{id}:latest");
    let repo = format!("wharf-test/build-{id}");
    let remote = format!("{}/{repo}:v1", server.addr);
    let container = format!("wharf-test-build-{id}");
    let _cleanup = DockerCleanup {
        containers: vec![container.clone()],
        images: vec![local.clone(), remote.clone()],
    };
    let message = format!("hello from a wharf-pulled image {id}");

    let ctx = tempfile::tempdir().expect("temp dir");
    std::fs::copy(busybox, ctx.path().join("busybox")).expect("copy busybox");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"echo\", \"{message}\"]\n"),
    )
    .unwrap();
    // The classic builder: needs no buildx plugin and no base image (FROM scratch).
    let mut build = docker_cmd(&["build", "--no-cache", "--force-rm", "-t", &local]);
    build.arg(ctx.path()).env("DOCKER_BUILDKIT", "0");
    run_ok(build, DOCKER_TIMEOUT).await;
    docker(&["tag", &local, &remote]).await;
    docker(&["rmi", &local]).await;

    push_remove_pull(&server, &remote, &repo, "v1").await;

    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        &container,
        &remote,
    ])
    .await;
    assert_eq!(out.trim(), message);
}

#[tokio::test]
async fn docker_pushes_pulls_and_runs_an_imported_tarball() {
    if !support::require_tool("docker") {
        return;
    }
    if !docker_daemon_ready().await {
        return;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() && !missing("/bin/busybox (Debian package busybox-static)") {
        return;
    }
    let server = TestServer::start();
    let id = unique_id();
    let repo = format!("wharf-test/import-{id}");
    let remote = format!("{}/{repo}:v1", server.addr);
    let container = format!("wharf-test-import-{id}");
    let container2 = format!("wharf-test-import-{id}-sh");
    let _cleanup = DockerCleanup {
        containers: vec![container.clone(), container2.clone()],
        images: vec![remote.clone()],
    };
    let message = format!("imported by wharf test {id}");

    let busybox_bytes = std::fs::read(busybox).expect("read busybox");
    let marker = format!("{message}\n");
    let rootfs = tar(&[
        TarEntry::Dir {
            path: "bin/",
            mode: 0o755,
        },
        TarEntry::File {
            path: "bin/busybox",
            mode: 0o755,
            data: &busybox_bytes,
        },
        TarEntry::Symlink {
            path: "bin/sh",
            target: "busybox",
        },
        TarEntry::Dir {
            path: "etc/",
            mode: 0o755,
        },
        TarEntry::File {
            path: "etc/wharf-message",
            mode: 0o644,
            data: marker.as_bytes(),
        },
    ]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let tarball: PathBuf = tmp.path().join("rootfs.tar");
    std::fs::write(&tarball, rootfs).unwrap();
    docker(&[
        "import",
        "--change",
        r#"CMD ["/bin/busybox", "cat", "/etc/wharf-message"]"#,
        tarball.to_str().unwrap(),
        &remote,
    ])
    .await;

    push_remove_pull(&server, &remote, &repo, "v1").await;

    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        &container,
        &remote,
    ])
    .await;
    assert_eq!(out.trim(), message);
    // The symlink survived too.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        &container2,
        &remote,
        "/bin/sh",
        "-c",
        "echo $((6*7))",
    ])
    .await;
    assert_eq!(out.trim(), "42");
}

// ---------------------------------------------------------------------------------
// oras-py and the referrers API

fn venv_python() -> String {
    let venv = std::env::var("WHARF_TEST_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/wharf-test-venv")
    });
    format!("{venv}/bin/python")
}

const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.client, oras.oci

registry, repo, subject_digest, subject_size, subject_media_type = sys.argv[1:6]
client = oras.client.OrasClient(hostname=registry, insecure=True)
subject = oras.oci.Subject(mediaType=subject_media_type, digest=subject_digest, size=int(subject_size))
results = {}
for tag, layer, config, kind in [
    ("sbom", "sbom.json:application/spdx+json",
     "sbom-config.json:application/vnd.wharf.test.sbom.config.v1+json", "sbom"),
    ("sig", "sig.txt:application/vnd.wharf.test.signature.v1",
     "sig-config.json:application/vnd.wharf.test.sig.config.v1+json", "signature"),
]:
    resp = client.push(
        target=f"{registry}/{repo}:{tag}",
        files=[layer],
        manifest_config=config,
        manifest_annotations={"org.wharf.test.kind": kind},
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    results[tag] = {"status": resp.status_code, "headers": {k.lower(): v for k, v in resp.headers.items()}}
print("WHARF-RESULT " + json.dumps(results))
"#;

const SBOM_TYPE: &str = "application/vnd.wharf.test.sbom.config.v1+json";
const SIG_TYPE: &str = "application/vnd.wharf.test.sig.config.v1+json";
const ATTESTATION_TYPE: &str = "application/vnd.wharf.test.attestation.v1+json";

#[tokio::test]
async fn oras_artifacts_with_a_subject_are_listed_by_the_referrers_api() {
    let python = venv_python();
    if !support::require_tool(&python) {
        return;
    }
    let mut probe = Command::new(&python);
    probe.args(["-c", "import oras.client, oras.oci"]);
    if !run(probe, Duration::from_secs(60)).await.status.success()
        && !missing("the oras Python package in the venv")
    {
        return;
    }
    let server = TestServer::start();
    let repo = "wharf-test/referrers";
    let mut rng = Rng::seeded();

    // The subject: an ordinary image.
    let image = random_image(&mut rng, "amd64", &[20_000]);
    for b in image.content() {
        push_blob_http(&server, repo, b).await;
    }
    let h = put_manifest_http(&server, repo, "base", &image.manifest).await;
    assert_eq!(
        header(&h, "docker-content-digest"),
        Some(image.manifest.digest.as_str())
    );
    assert_eq!(
        header(&h, "oci-subject"),
        None,
        "a manifest without a subject got an OCI-Subject header"
    );
    let subject = &image.manifest.digest;

    // Two artifacts pushed by oras-py, which sets `subject` but not `artifactType`:
    // their artifact type is their config's media type.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::write(dir.join("push.py"), ORAS_SCRIPT).unwrap();
    std::fs::write(
        dir.join("sbom.json"),
        format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{}"}}"#, rng.hex(8)),
    )
    .unwrap();
    std::fs::write(dir.join("sbom-config.json"), "{}").unwrap();
    std::fs::write(dir.join("sig.txt"), format!("signature {}\n", rng.hex(32))).unwrap();
    std::fs::write(dir.join("sig-config.json"), r#"{"signed":true}"#).unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(dir.join("push.py"))
        .args([
            server.addr.as_str(),
            repo,
            subject.as_str(),
            &image.manifest.size().to_string(),
            OCI_MANIFEST,
        ])
        .current_dir(dir);
    let out = run_ok(cmd, Duration::from_secs(120)).await;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("WHARF-RESULT "))
        .unwrap_or_else(|| panic!("the oras script printed no result:\n{out}"));
    let results: Value = serde_json::from_str(line).expect("result JSON");
    let mut pushed = Vec::new();
    for (tag, artifact_type, kind) in [("sbom", SBOM_TYPE, "sbom"), ("sig", SIG_TYPE, "signature")]
    {
        let r = &results[tag];
        assert_eq!(r["status"], 201, "manifest PUT of {tag}: {r}");
        assert_eq!(
            r["headers"]["oci-subject"],
            subject.as_str(),
            "OCI-Subject header on the PUT of {tag}: {r}"
        );
        let digest = r["headers"]["docker-content-digest"]
            .as_str()
            .expect("Docker-Content-Digest")
            .to_string();
        pushed.push((digest, artifact_type.to_string(), Some(kind)));
    }

    // A third one with an explicit `artifactType` and the empty config (the OCI 1.1
    // way), pushed with plain HTTP because oras-py cannot set that field.
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let payload = Blob::new(
        "application/vnd.in-toto+json",
        format!(r#"{{"nonce":"{}"}}"#, rng.hex(16)).into_bytes(),
    );
    push_blob_http(&server, repo, &empty).await;
    push_blob_http(&server, repo, &payload).await;
    let attestation = Blob::json(
        OCI_MANIFEST,
        &json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ATTESTATION_TYPE,
            "config": empty.descriptor(),
            "layers": [payload.descriptor()],
            "subject": image.manifest.descriptor(),
        }),
    );
    let h = put_manifest_http(&server, repo, &attestation.digest, &attestation).await;
    assert_eq!(
        header(&h, "oci-subject"),
        Some(subject.as_str()),
        "OCI-Subject on a PUT by digest"
    );
    pushed.push((
        attestation.digest.clone(),
        ATTESTATION_TYPE.to_string(),
        None,
    ));

    // Every referrer is listed, with its media type, size, artifact type and annotations.
    let url = server.url(&format!("/v2/{repo}/referrers/{subject}"));
    let all = get(&url, &[OCI_INDEX]).await;
    assert_eq!(
        all.status,
        StatusCode::OK,
        "GET referrers: {}",
        String::from_utf8_lossy(&all.body)
    );
    assert_eq!(all.header("content-type"), Some(OCI_INDEX));
    assert_eq!(
        all.header("oci-filters-applied"),
        None,
        "no filter was asked for"
    );
    let index = all.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), pushed.len(), "referrers: {index}");
    for (digest, artifact_type, kind) in &pushed {
        let e = entries
            .iter()
            .find(|e| e["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("{digest} is not among the referrers: {index}"));
        let m = get(
            &server.url(&format!("/v2/{repo}/manifests/{digest}")),
            &[OCI_MANIFEST],
        )
        .await;
        assert_eq!(m.status, StatusCode::OK);
        assert_eq!(m.json()["subject"]["digest"], subject.as_str());
        assert_eq!(e["mediaType"], OCI_MANIFEST);
        assert_eq!(e["size"], m.body.len());
        assert_eq!(
            e["artifactType"],
            artifact_type.as_str(),
            "artifactType of {digest}"
        );
        if let Some(kind) = kind {
            assert_eq!(
                e["annotations"]["org.wharf.test.kind"], *kind,
                "annotations of {digest}"
            );
        }
    }

    // Filtered by artifact type: only that one, and the registry says it filtered.
    for (digest, artifact_type, _) in &pushed {
        // A literal `+` in a query string means a space: encode it, as clients do.
        let query = artifact_type.replace('+', "%2B");
        let f = get(&format!("{url}?artifactType={query}"), &[OCI_INDEX]).await;
        assert_eq!(f.status, StatusCode::OK);
        assert_eq!(f.header("oci-filters-applied"), Some("artifactType"));
        let list = f.json()["manifests"]
            .as_array()
            .cloned()
            .expect("manifests");
        assert_eq!(list.len(), 1, "filtered by {artifact_type}: {list:?}");
        assert_eq!(list[0]["digest"], digest.as_str());
        assert_eq!(list[0]["artifactType"], artifact_type.as_str());
    }
    let none = get(
        &format!("{url}?artifactType=application/x-nothing-of-this-type"),
        &[OCI_INDEX],
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(none.json()["manifests"], json!([]));

    // A digest nothing refers to: an empty list, never a 404 (distribution spec 1.1).
    let lonely = sha256(b"nothing refers to this");
    let r = get(
        &server.url(&format!("/v2/{repo}/referrers/{lonely}")),
        &[OCI_INDEX],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "referrers of an unknown digest: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.json()["manifests"], json!([]));
}
