//! Conflicting requests on one upload session, sent at the same time through three
//! replicas sharing PostgreSQL and a blob directory: the final PUT twice, a PATCH
//! beside each. Whatever order they land in, a committed blob's bytes never change and
//! the session accepts nothing after its commit. Checked on every blob file afterwards.

mod support;

use std::time::Duration;

use reqwest::{Client, StatusCode};
use support::{serve_command, sha256, S3Server, TestServer};

/// Sessions raced; each races four requests.
const ROUNDS: usize = 40;

fn replica(
    pg: &str,
    blobs: &[&str],
    s3: Option<&S3Server>,
    data_dir: &std::path::Path,
) -> TestServer {
    let mut cmd = serve_command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--metadata",
        pg,
        "--insecure-no-auth",
    ])
    .args(blobs)
    .arg("--data-dir")
    .arg(data_dir);
    if let Some(s3) = s3 {
        s3.configure(&mut cmd);
    }
    TestServer::launch(cmd, data_dir)
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The path of an upload's Location, to send to any replica.
fn path_of(location: &str) -> String {
    match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => location.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_patch_and_put_on_a_shared_directory_never_change_a_committed_blob() {
    let Some(pg_url) = support::env_or_skip("WHARF_TEST_POSTGRES_URL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("shared-blobs");
    let blobs_arg = blobs.to_str().unwrap().to_string();
    race(&pg_url, &["--blobs", &blobs_arg], None, tmp.path()).await;
    // Every blob file holds exactly the bytes its name says.
    let mut checked = 0;
    for prefix in std::fs::read_dir(blobs.join("blobs").join("sha256")).unwrap() {
        for file in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(
                sha256(&data),
                format!("sha256:{name}"),
                "{} does not hold its digest's bytes",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no blob was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_patch_and_put_on_s3_never_change_a_committed_blob() {
    race_on_s3(S3Server::moto()).await;
}

/// The same on Garage, a real S3-compatible store (moto is a mock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_patch_and_put_on_garage_never_change_a_committed_blob() {
    race_on_s3(S3Server::garage()).await;
}

async fn race_on_s3(s3: Option<S3Server>) {
    let (Some(pg_url), Some(s3)) = (support::env_or_skip("WHARF_TEST_POSTGRES_URL"), s3) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bucket = format!("s3://wharf-test/races-{}", std::process::id());
    race(&pg_url, &["--blobs", &bucket], Some(&s3), tmp.path()).await;
}

/// Races the requests through three replicas on `blobs`; returns once every committed
/// blob has been read back whole through each replica.
async fn race(pg_url: &str, blobs: &[&str], s3: Option<&S3Server>, tmp: &std::path::Path) {
    let pg = support::create_database(pg_url, "upload_races");
    let replicas: Vec<TestServer> = (0..3)
        .map(|i| replica(&pg, blobs, s3, &tmp.join(format!("r{i}"))))
        .collect();
    let base = |i: usize| replicas[i % 3].base.clone();
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let repo = "race/app";
    let (mut committed, mut patched_first, mut after_commit_refused) = (0, 0, 0);
    for round in 0..ROUNDS {
        let first = support::pseudo_random(round as u64, 64 << 10);
        let digest = sha256(&first);
        let r = http
            .post(format!("{}/v2/{repo}/blobs/uploads/", base(round)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let at = path_of(r.headers()["location"].to_str().unwrap());
        let r = http
            .patch(format!("{}{at}", base(round)))
            .header("content-range", format!("0-{}", first.len() - 1))
            .body(first.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let at = path_of(r.headers()["location"].to_str().unwrap());
        let more = support::pseudo_random(round as u64 + 1000, 1 << 20);
        let range = format!("{}-{}", first.len(), first.len() + more.len() - 1);
        let put = |i: usize| {
            http.put(format!("{}{}", base(round + i), with_digest(&at, &digest)))
                .send()
        };
        let patch = |i: usize| {
            http.patch(format!("{}{at}", base(round + i)))
                .header("content-range", range.clone())
                .body(more.clone())
                .send()
        };
        let (p1, c1, p2, c2) = tokio::join!(patch(1), put(2), patch(0), put(1));
        let status = |r: reqwest::Result<reqwest::Response>| r.map(|r| r.status()).unwrap();
        let (p1, c1, p2, c2) = (status(p1), status(c1), status(p2), status(c2));
        let puts_ok = [c1, c2].contains(&StatusCode::CREATED);
        let patches_ok = [p1, p2].contains(&StatusCode::ACCEPTED);
        assert!(
            !(puts_ok && patches_ok),
            "round {round}: a chunk was accepted and the session committed without it: PATCH {p1}, {p2}; PUT {c1}, {c2}"
        );
        if puts_ok {
            committed += 1;
            // The session takes nothing more.
            let r = patch(2).await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "round {round}: a PATCH after the commit"
            );
            after_commit_refused += 1;
            for i in 0..3 {
                let r = http
                    .get(format!("{}/v2/{repo}/blobs/{digest}", base(i)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let got = r.bytes().await.unwrap();
                assert_eq!(
                    sha256(&got),
                    digest,
                    "round {round}: the committed blob read through replica {i} is {} bytes, not its own {}",
                    got.len(),
                    first.len()
                );
            }
        } else {
            patched_first += 1;
        }
    }
    eprintln!(
        "{ROUNDS} sessions raced: {committed} committed (each then refused a PATCH: {after_commit_refused}), {patched_first} took a chunk first and refused the commit"
    );
}
