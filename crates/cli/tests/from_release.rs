//! The real thing: a registry filled by release 1.0.0 (built from the project's history
//! by scripts/build-release.sh) with skopeo, several repositories, tags and a deleted
//! tag; upgraded with this build; every image pulls back byte-identical, the background
//! migration completes, and garbage collection then works.

mod support;

#[path = "support/oci_layout.rs"]
mod oci_layout;

#[path = "support/secure.rs"]
mod secure;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oci_layout::{random_image, write_layout, Image, Layout, Rng};
use secure::{run, wharf_cmd};
use support::TestServer;

const LIMIT: Duration = Duration::from_secs(180);

fn old_release() -> Option<String> {
    match std::env::var("WHARF_TEST_RELEASE_1_0_0") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "WHARF_TEST_RELEASE_1_0_0 is required under CI=true (scripts/test.sh builds it)"
            );
            eprintln!(
                "SKIPPED: no WHARF_TEST_RELEASE_1_0_0 (scripts/build-release.sh 1.0.0 builds it)"
            );
            None
        }
    }
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn push(image: &Image, tmp: &Path, addr: &str, repo_tag: &str) {
    let src = tmp.join(format!("src-{}", repo_tag.replace(['/', ':'], "-")));
    write_layout(&src, &image.content(), &[("t", &image.manifest)]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", src.display()),
        &format!("docker://{addr}/{repo_tag}"),
    ]);
}

fn pull_and_compare(image: &Image, tmp: &Path, addr: &str, repo_tag: &str) {
    let back = tmp.join(format!("back-{}", repo_tag.replace(['/', ':'], "-")));
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{addr}/{repo_tag}"),
        &format!("oci:{}:t", back.display()),
    ]);
    let layout = Layout::open(&back);
    assert_eq!(
        layout.descriptor("t")["digest"],
        image.manifest.digest.as_str(),
        "{repo_tag}"
    );
    assert!(
        layout.blob(&image.manifest.digest) == image.manifest.bytes,
        "{repo_tag}: manifest differs"
    );
    for b in image.content() {
        assert!(
            layout.blob(&b.digest) == b.bytes,
            "{repo_tag}: blob {} differs",
            b.digest
        );
    }
}

async fn output(cmd: tokio::process::Command) -> (bool, String) {
    let out = run(cmd, None, LIMIT).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_filled_by_release_1_0_0_upgrades_and_keeps_every_image() {
    let Some(old) = old_release() else { return };
    if !support::require_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.to_str().unwrap();

    // Release 1.0.0 fills the registry.
    let mut cmd = Command::new(&old);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--data-dir",
        dir,
    ]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WHARF_")) {
        cmd.env_remove(k);
    }
    cmd.env("WHARF_LOG_LEVEL", "warn");
    let mut v100 = TestServer::launch(cmd, &data);
    let version: serde_json::Value = reqwest::get(v100.url("/api/v0/meta/version"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            version["version"].as_str(),
            version["schema_level"].as_i64()
        ),
        (Some("1.0.0"), Some(1))
    );
    let mut rng = Rng::seeded();
    let app1 = random_image(&mut rng, "amd64", &[300_000, 4_000]);
    let app2 = random_image(&mut rng, "amd64", &[100_000]);
    let tool = random_image(&mut rng, "arm64", &[50_000, 60_000]);
    let dropped = random_image(&mut rng, "amd64", &[70_000]);
    push(&app1, tmp.path(), &v100.addr, "team/app:v1");
    push(&app2, tmp.path(), &v100.addr, "team/app:v2");
    push(&tool, tmp.path(), &v100.addr, "tools/deep/tool:latest");
    push(&dropped, tmp.path(), &v100.addr, "team/app:old");
    // A deleted tag: its manifest stays, untagged.
    let r = reqwest::Client::new()
        .delete(v100.url("/v2/team/app/manifests/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(v100.signal_and_wait("TERM").success());

    // This build refuses the data until it is upgraded; the upgrade goes through 1.1.0,
    // step by step, and runs 1.1.0's background migration before the second hop.
    let (ok, out) = output(wharf_cmd(&["upgrade", "plan", "--data-dir", dir])).await;
    assert!(
        ok && out.contains("upgrade 1.0.0 →") && out.contains("allowed in 2 hops"),
        "{out}"
    );
    let (ok, out) = output(wharf_cmd(&["upgrade", "apply", "--yes", "--data-dir", dir])).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("[3/5] expand: schema levels applied: [2]"),
        "{out}"
    );
    assert!(
        out.contains("[5/5] background: metadatastoremigration done (job 1)"),
        "{out}"
    );
    assert!(
        out.contains("[3/5] expand: schema levels applied: [3]"),
        "{out}"
    );

    let new = TestServer::start_in(&data, &["--job-heartbeat-secs", "1"], &[]);
    let mut follow = wharf_cmd(&["jobs", "logs", "1", "--data-dir", dir]);
    follow.kill_on_drop(true);
    let (ok, log) = output(follow).await;
    assert!(
        ok && log.contains("done: references recorded for 4 manifests"),
        "{log}"
    );

    // Every tagged image pulls back byte-identical with skopeo.
    pull_and_compare(&app1, tmp.path(), &new.addr, "team/app:v1");
    pull_and_compare(&app2, tmp.path(), &new.addr, "team/app:v2");
    pull_and_compare(&tool, tmp.path(), &new.addr, "tools/deep/tool:latest");

    // GC now works: the untagged image goes, the tagged ones stay whole.
    let (ok, out) = output(wharf_cmd(&[
        "gc",
        "--grace-secs",
        "0",
        "--delete-untagged",
        "--data-dir",
        dir,
    ]))
    .await;
    assert!(ok, "{out}");
    let blobs = dropped.content().len();
    assert!(
        out.contains(&format!("freed 1 manifests, {blobs} links, {blobs} blobs")),
        "{out}"
    );
    let gone = reqwest::get(new.url(&format!(
        "/v2/team/app/manifests/{}",
        dropped.manifest.digest
    )))
    .await
    .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    // The tagged images' blobs survived GC intact.
    for (repo, image) in [("team/app", &app1), ("tools/deep/tool", &tool)] {
        for b in image.content() {
            let r = reqwest::get(new.url(&format!("/v2/{repo}/blobs/{}", b.digest)))
                .await
                .unwrap();
            assert!(
                r.bytes().await.unwrap() == b.bytes,
                "{} survived GC intact",
                b.digest
            );
        }
    }
}
