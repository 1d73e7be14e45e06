//! Online garbage collection and the metadatastoremigration job on a real `wharf
//! serve`: what is unreferenced goes, what an image needs stays, and GC refuses to run
//! while manifests stored by an older release lack their references.

mod support;

#[path = "support/http.rs"]
mod http;

#[path = "support/secure.rs"]
mod secure;

use std::time::Duration;

use http::{client, push_blob, push_image};
use reqwest::StatusCode;
use secure::{run_fails, run_ok, wharf_cmd};
use support::{sha256, TestServer};

const LIMIT: Duration = Duration::from_secs(120);

fn start(data: &std::path::Path) -> TestServer {
    TestServer::start_in(
        data,
        &["--job-heartbeat-secs", "1", "--job-retry-backoff-secs", "1"],
        &[],
    )
}

fn cmd(args: &[&str], data: &std::path::Path) -> tokio::process::Command {
    let mut c = wharf_cmd(args);
    c.arg("--data-dir").arg(data);
    c
}

fn blob_file(data: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

async fn status(c: &reqwest::Client, url: String) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}

#[tokio::test]
async fn gc_removes_unreferenced_blobs_and_keeps_every_image() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    let (manifest, _) = push_image(&c, &server.base, "team/app", "v1", "kept").await;
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = image["layers"][0]["digest"].as_str().unwrap().to_string();
    // A blob pushed and never used by a manifest (an abandoned push).
    let garbage = b"a layer nobody refers to".repeat(100);
    let garbage_digest = push_blob(&c, &server.base, "team/app", &garbage).await;
    assert!(blob_file(&data, &garbage_digest).exists());

    // Within the default grace period (24 h) nothing goes.
    let out = run_ok(cmd(&["gc", "--dry-run"], &data), None, LIMIT).await;
    assert!(
        out.contains("would free 0 manifests, 0 links, 0 blobs, 0 bytes"),
        "{out}"
    );
    let out = run_ok(
        cmd(&["gc", "--dry-run", "--grace-secs", "0"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains(&format!(
            "would free 0 manifests, 1 links, 1 blobs, {} bytes",
            garbage.len()
        )),
        "{out}"
    );
    assert!(
        blob_file(&data, &garbage_digest).exists(),
        "a dry run deletes nothing"
    );

    // The real run, as a job on the serving replica.
    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(
        out.contains(&format!(
            "done: freed 0 manifests, 1 links, 1 blobs, {} bytes",
            garbage.len()
        )),
        "{out}"
    );
    assert!(
        !blob_file(&data, &garbage_digest).exists(),
        "the bytes are gone"
    );
    let base = &server.base;
    assert_eq!(
        status(&c, format!("{base}/v2/team/app/blobs/{garbage_digest}")).await,
        StatusCode::NOT_FOUND
    );
    // The image is whole.
    let r = c
        .get(format!("{base}/v2/team/app/manifests/v1"))
        .header("accept", http::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .get(format!("{base}/v2/team/app/blobs/{layer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    // What it freed, for monitoring.
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wharf_gc_last_run_freed{kind=\"blobs\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "wharf_gc_last_run_freed{{kind=\"bytes\"}} {}",
            garbage.len()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("wharf_jobs{action=\"gc\",status=\"done\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wharf_manifests_without_refs 0"),
        "{metrics}"
    );
    // Untagged manifests go only when asked.
    c.delete(format!("{base}/v2/team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(out.contains("freed 0 manifests"), "{out}");
}

/// With no replica serving, `wharf gc` and `wharf jobs run --wait` say so at once
/// instead of waiting for a worker that does not exist; `--here` runs the job in the
/// command's own process, and takes no other kind of job.
#[tokio::test]
async fn with_no_replica_serving_gc_says_so_at_once_and_runs_here() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = start(&data);
    let c = client();
    let (manifest, _) = push_image(&c, &server.base, "team/app", "v1", "kept").await;
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = image["layers"][0]["digest"].as_str().unwrap().to_string();
    let garbage = b"left behind by an abandoned push".repeat(50);
    let garbage_digest = push_blob(&c, &server.base, "team/app", &garbage).await;
    assert!(server.signal_and_wait("TERM").success());

    let out = run_fails(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(
        out.contains("no replica is serving")
            && out.contains("run it in this process:  wharf gc --grace-secs 0 --data-dir")
            && out.contains("data --here"),
        "{out}"
    );
    let out = run_fails(
        cmd(&["jobs", "run", "purge_uploads", "--wait"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("no replica is serving") && out.contains("--here"),
        "{out}"
    );
    // The push queued the image's scan (scan on push); nothing else is queued.
    let out = run_ok(cmd(&["jobs", "list"], &data), None, LIMIT).await;
    assert!(
        !out.contains("purge_uploads") && !out.contains(" gc "),
        "a refused wait queued a job: {out}"
    );
    // Queued without waiting: it waits for a replica, and the command says so.
    let out = run_ok(cmd(&["jobs", "run", "purge_uploads"], &data), None, LIMIT).await;
    assert!(
        out.contains("queued job") && out.contains("the job waits until one starts"),
        "{out}"
    );

    let out = run_ok(
        cmd(&["gc", "--grace-secs", "0", "--here"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("running it in this process")
            && out.contains(&format!(
                "done: freed 0 manifests, 1 links, 1 blobs, {} bytes",
                garbage.len()
            )),
        "{out}"
    );
    assert!(
        !blob_file(&data, &garbage_digest).exists(),
        "the bytes are gone"
    );
    assert!(blob_file(&data, &layer).exists(), "the image's layer stays");
    let out = run_ok(
        cmd(&["jobs", "list", "--status", "waiting"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("purge_uploads"),
        "--here for gc took another action's job: {out}"
    );
    let out = run_ok(
        cmd(&["jobs", "run", "purge_uploads", "--here"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(out.contains("done:"), "{out}");
}

#[tokio::test]
async fn gc_waits_for_the_migration_of_older_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let c = client();
    let (manifest, _) = push_image(&c, &server.base, "team/old", "v1", "stored by 1.0.0").await;
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = image["layers"][0]["digest"].as_str().unwrap().to_string();
    // The manifest as release 1.0.0 left it: no recorded references.
    let db = rusqlite::Connection::open(data.join("metadata.db")).unwrap();
    db.execute_batch("DELETE FROM manifest_refs; UPDATE manifests SET refs_recorded = 0;")
        .unwrap();
    drop(db);

    // GC refuses (three attempts, then error), saying what to do.
    let out = run_fails(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(
        out.contains("gc job") && out.contains("ended error"),
        "{out}"
    );
    assert!(
        out.contains("disabled until the metadatastoremigration job has completed: 1 manifests"),
        "{out}"
    );
    assert_eq!(
        out.matches("failed: garbage collection is disabled")
            .count(),
        3,
        "{out}"
    );
    assert!(blob_file(&data, &layer).exists(), "nothing was collected");

    let out = run_ok(
        cmd(&["jobs", "run", "metadatastoremigration", "--wait"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("1 manifests need their references recorded"),
        "{out}"
    );
    assert!(
        out.contains("done: references recorded for 1 manifests"),
        "{out}"
    );
    // Run twice: nothing counted twice.
    let out = run_ok(
        cmd(&["jobs", "run", "metadatastoremigration", "--wait"], &data),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("done: references recorded for 0 manifests"),
        "{out}"
    );

    let out = run_ok(cmd(&["gc", "--grace-secs", "0"], &data), None, LIMIT).await;
    assert!(out.contains("freed 0 manifests, 0 links, 0 blobs"), "{out}");
    let r = c
        .get(format!("{}/v2/team/old/blobs/{layer}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the image's layer survived");
}

// ---------------------------------------------------------------------------------
// Two replicas on PostgreSQL and a shared directory: a worker killed with SIGKILL in
// the middle of a job is replaced by the other replica's worker.

fn replica(pg: &str, blobs: &std::path::Path) -> TestServer {
    let mut c = support::serve_command();
    c.args([
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--metadata",
        pg,
    ])
    .args([
        "--job-heartbeat-secs",
        "1",
        "--job-retry-backoff-secs",
        "1",
        "--heartbeat-interval-secs",
        "1",
    ])
    .arg("--data-dir")
    .arg(blobs);
    TestServer::launch(c, blobs)
}

async fn api(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut rb = c.request(method, url);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

/// Waits (bounded) until `cond` holds for the job, returning the job.
async fn wait_job(
    c: &reqwest::Client,
    base: &str,
    id: i64,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..3_000 {
        let j = api(
            c,
            reqwest::Method::GET,
            format!("{base}/api/v0/jobs/{id}"),
            None,
        )
        .await;
        if cond(&j) {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id}: {what} did not happen in 30 s");
}

/// Kills, with SIGKILL, whichever replica's worker runs job `id`; returns the other.
async fn kill_the_runner(
    c: &reqwest::Client,
    id: i64,
    mut a: TestServer,
    mut b: TestServer,
) -> TestServer {
    let job = api(
        c,
        reqwest::Method::GET,
        format!("{}/api/v0/jobs/{id}", a.base),
        None,
    )
    .await;
    let worker = job["worker_id"].as_str().expect("running").to_string();
    let workers = api(
        c,
        reqwest::Method::GET,
        format!("{}/api/v0/workers", a.base),
        None,
    )
    .await;
    let address = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == worker.as_str())
        .map(|w| w["address"].as_str().unwrap().to_string())
        .expect("the worker is registered");
    if address == a.base {
        a.signal_and_wait("KILL");
        b
    } else {
        b.signal_and_wait("KILL");
        a
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_migration_is_replaced_and_nothing_is_counted_twice() {
    let Some(pg) = support::pg_database("gc_migration") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("shared");
    let a = replica(&pg, &blobs);
    let c = client();
    // Many small manifests over two blobs, then made to look as 1.0.0 stored them.
    const N: usize = 1_000;
    let config = br#"{"os":"linux"}"#.to_vec();
    let layer = b"one shared layer".to_vec();
    push_blob(&c, &a.base, "mig/app", &config).await;
    push_blob(&c, &a.base, "mig/app", &layer).await;
    for i in 0..N {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": http::OCI_MANIFEST,
            "config": http::descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [http::descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
            "annotations": {"n": i.to_string()},
        });
        let r = http::put_manifest(
            &c,
            &a.base,
            "mig/app",
            &format!("t{i}"),
            http::OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    support::psql(
        &pg,
        "DELETE FROM manifest_refs; UPDATE manifests SET refs_recorded = FALSE",
    );
    let b = replica(&pg, &blobs);

    let job = api(
        &c,
        reqwest::Method::POST,
        format!("{}/api/v0/jobs", a.base),
        Some(serde_json::json!({"action": "metadatastoremigration", "params": {"batch_size": 1}})),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    // Kill the worker once it is under way, well before the end.
    wait_job(&c, &a.base, id, "progress", |j| j["status"] == "running").await;
    let mut done_at_kill = 0;
    for _ in 0..3_000 {
        done_at_kill = support::psql(&pg, "SELECT COUNT(*) FROM manifests WHERE refs_recorded")
            .parse::<usize>()
            .unwrap();
        if done_at_kill >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let survivor = kill_the_runner(&c, id, a, b).await;
    let after_kill = support::psql(&pg, "SELECT COUNT(*) FROM manifests WHERE refs_recorded")
        .parse::<usize>()
        .unwrap();
    assert!(
        done_at_kill >= 20 && after_kill < N,
        "killed mid-run: {done_at_kill}..{after_kill} of {N}"
    );

    let end = wait_job(&c, &survivor.base, id, "the end", |j| {
        j["status"] != "running" && j["status"] != "waiting"
    })
    .await;
    assert_eq!(
        (end["status"].as_str(), end["attempts"].as_i64()),
        (Some("done"), Some(2)),
        "{end}"
    );
    let logs = api(
        &c,
        reqwest::Method::GET,
        format!("{}/api/v0/jobs/{id}/logs", survivor.base),
        None,
    )
    .await;
    let lines: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("worker_dead: worker")),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    let second: usize = last
        .strip_prefix("done: references recorded for ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert_eq!(
        second,
        N - after_kill,
        "the second attempt did only what was left"
    );
    // Exactly two references per manifest, none twice, none missing.
    assert_eq!(
        support::psql(
            &pg,
            "SELECT COUNT(*) FROM manifests WHERE NOT refs_recorded"
        ),
        "0"
    );
    assert_eq!(
        support::psql(&pg, "SELECT COUNT(*) FROM manifest_refs"),
        (2 * N).to_string()
    );
}

// ---------------------------------------------------------------------------------
// GC under load: a writer pushes, tags and untags while GC runs again and again.

struct Pushed {
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

async fn push_unique(c: &reqwest::Client, base: &str, repo: &str, n: usize) -> Pushed {
    let config = format!(r#"{{"os":"linux","n":{n}}}"#).into_bytes();
    let layer: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(n as u32 + 7) % 251) as u8)
        .chain(n.to_string().into_bytes())
        .collect();
    push_blob(c, base, repo, &config).await;
    push_blob(c, base, repo, &layer).await;
    let manifest = http::image_manifest(&config, &[&layer]);
    let tag = format!("n{n}");
    let r = http::put_manifest(c, base, repo, &tag, http::OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED, "push {n} during GC");
    Pushed {
        tag,
        manifest,
        blobs: vec![config, layer],
    }
}

async fn run_gc_job(c: &reqwest::Client, base: &str, grace_secs: u64) -> serde_json::Value {
    let job = api(
        c,
        reqwest::Method::POST,
        format!("{base}/api/v0/jobs"),
        Some(serde_json::json!({"action": "gc", "params": {"grace_secs": grace_secs, "delete_untagged": true}})),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    let end = wait_job(c, base, id, "the end", |j| {
        !["running", "waiting", "cancel_request"].contains(&j["status"].as_str().unwrap())
    })
    .await;
    assert_eq!(end["status"], "done", "{end}");
    end
}

/// Pushes images (untagging every other one) while GC runs five times; then one last
/// GC. Returns what must remain and what must be gone.
async fn gc_under_load(base: &str) -> (Vec<Pushed>, Vec<Pushed>) {
    let c = client();
    let repo = "load/app";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (c, base, stop, pushed) = (c.clone(), base.to_string(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let (mut kept, mut dropped) = (Vec::new(), Vec::new());
            // Bounded: GC's runs end long before.
            for n in 0..5_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let p = push_unique(&c, &base, repo, n).await;
                pushed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n % 2 == 1 {
                    let r = c
                        .delete(format!("{base}/v2/{repo}/manifests/{}", p.tag))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                    dropped.push(p);
                } else {
                    kept.push(p);
                }
            }
            (kept, dropped)
        })
    };
    // GC again and again with a short grace period while the writer works: five runs,
    // and more (at most 50) until ten images were pushed meanwhile (a GC run can take
    // less time than a push).
    let mut runs = 0;
    while runs < 5 || (pushed.load(std::sync::atomic::Ordering::SeqCst) < 10 && runs < 50) {
        run_gc_job(&c, base, 2).await;
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (kept, dropped) = writer.await.unwrap();
    assert!(kept.len() + dropped.len() >= 10, "pushes went on during GC");
    // With nothing in flight, everything unreferenced goes.
    let end = run_gc_job(&c, base, 0).await;
    eprintln!(
        "{} images pushed during {runs} GC runs; the last run: {}",
        kept.len() + dropped.len(),
        end["progress"]
    );
    for p in &kept {
        let r = c
            .get(format!("{base}/v2/{repo}/manifests/{}", p.tag))
            .header("accept", http::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap(), p.manifest, "{}", p.tag);
        for b in &p.blobs {
            let r = c
                .get(format!("{base}/v2/{repo}/blobs/{}", sha256(b)))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "{}: a blob of a tagged image",
                p.tag
            );
            assert_eq!(&r.bytes().await.unwrap()[..], &b[..]);
        }
    }
    for p in &dropped {
        for b in &p.blobs {
            assert_eq!(
                status(&c, format!("{base}/v2/{repo}/blobs/{}", sha256(b))).await,
                StatusCode::NOT_FOUND,
                "{}: a blob only an untagged manifest used",
                p.tag
            );
        }
    }
    (kept, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_under_load_on_sqlite_and_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    let (kept, dropped) = gc_under_load(&server.base).await;
    // The bytes themselves: exactly the kept images' blobs are left on disk.
    for p in &kept {
        for b in &p.blobs {
            assert!(blob_file(&data, &sha256(b)).exists());
        }
    }
    for p in &dropped {
        for b in &p.blobs {
            assert!(
                !blob_file(&data, &sha256(b)).exists(),
                "{} left bytes behind",
                p.tag
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_under_load_on_postgres_and_s3() {
    let Some(pg) = support::pg_database("gc_load") else {
        return;
    };
    let Ok(s3) = std::env::var("WHARF_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "WHARF_TEST_S3_ENDPOINT is required under CI=true"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let prefix = format!("gc-load-{}", std::process::id());
    let mut cmd = support::serve_command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--metadata",
        &pg,
    ])
    .args([
        "--blobs",
        &format!("s3://wharf-test/{prefix}"),
        "--s3-endpoint",
        &s3,
    ])
    .args(["--job-heartbeat-secs", "1", "--job-retry-backoff-secs", "1"])
    .arg("--data-dir")
    .arg(tmp.path())
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test");
    let server = TestServer::launch(cmd, tmp.path());
    let (kept, dropped) = gc_under_load(&server.base).await;
    // The objects themselves, listed from the S3 server.
    let listing = client()
        .get(format!(
            "{s3}/wharf-test?list-type=2&prefix={prefix}/blobs/&max-keys=1000"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for p in &kept {
        for b in &p.blobs {
            assert!(
                listing.contains(sha256(b).trim_start_matches("sha256:")),
                "{}: object missing",
                p.tag
            );
        }
    }
    for p in &dropped {
        for b in &p.blobs {
            assert!(
                !listing.contains(sha256(b).trim_start_matches("sha256:")),
                "{}: object left behind",
                p.tag
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_gc_is_replaced_and_the_rest_is_collected() {
    let Some(pg) = support::pg_database("gc_killgc") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let blobs = tmp.path().join("shared");
    let a = replica(&pg, &blobs);
    let c = client();
    let (manifest, _) = push_image(&c, &a.base, "kill/app", "v1", "kept").await;
    const GARBAGE: usize = 600;
    let mut garbage = Vec::new();
    for i in 0..GARBAGE {
        garbage.push(push_blob(&c, &a.base, "kill/app", format!("garbage {i}").as_bytes()).await);
    }
    let b = replica(&pg, &blobs);
    let job = api(
        &c,
        reqwest::Method::POST,
        format!("{}/api/v0/jobs", a.base),
        // Slowed right down (deletions come in batches of 64 blobs), so the kill lands
        // mid-run.
        Some(serde_json::json!({"action": "gc", "params": {"grace_secs": 0, "busy_percent": 1}})),
    )
    .await;
    let id = job["id"].as_i64().unwrap();
    wait_job(&c, &a.base, id, "start", |j| j["status"] == "running").await;
    let count = |table: &str| {
        support::psql(&pg, &format!("SELECT COUNT(*) FROM {table}"))
            .parse::<usize>()
            .unwrap()
    };
    let before = count("blobs");
    for _ in 0..3_000 {
        if count("blobs") + 20 <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let survivor = kill_the_runner(&c, id, a, b).await;
    let left_at_kill = count("blobs") - 2; // the kept image's config and layer
    assert!(
        left_at_kill > 0 && left_at_kill + 20 <= GARBAGE,
        "killed mid-run: {left_at_kill} garbage blobs left"
    );

    let end = wait_job(&c, &survivor.base, id, "the end", |j| {
        j["status"] != "running" && j["status"] != "waiting"
    })
    .await;
    assert_eq!(
        (end["status"].as_str(), end["attempts"].as_i64()),
        (Some("done"), Some(2)),
        "{end}"
    );
    // Everything unreferenced is gone, records and bytes; the image is whole.
    assert_eq!(count("repository_blobs"), 2);
    assert_eq!(count("blobs"), 2);
    for d in &garbage {
        assert!(!blob_file(&blobs, d).exists(), "{d} left on disk");
    }
    let r = c
        .get(format!("{}/v2/kill/app/manifests/v1", survivor.base))
        .header("accept", http::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let image: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for d in [&image["config"]["digest"], &image["layers"][0]["digest"]] {
        let r = c
            .get(format!(
                "{}/v2/kill/app/blobs/{}",
                survivor.base,
                d.as_str().unwrap()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
