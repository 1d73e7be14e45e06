//! The scanning API against a real `wharf serve` (authentication on): the fixture
//! advisory database uploaded as a zip and imported by a job, a vulnerable Alpine image
//! and a fixed one pushed over the registry API, scanned by "rescan all" (only what is
//! not scanned) and "scan now", their findings and SBOM as a user reads them; a broken
//! archive refused with the current database kept; and who may do what.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

#[path = "support/scan_fixture.rs"]
mod scan_fixture;

use std::time::Duration;

use reqwest::Method;
use secure::{admin, client, create_user, expect, get, grant_user, request, send, Cred, Reply};
use serde_json::Value;
use support::TestServer;

/// How long a job may take on a busy machine.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

/// Polls `check` every 200 ms until it gives a value, at most `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not after {limit:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until job `id` is over; returns it.
async fn wait_job(w: &TestServer, id: i64) -> Value {
    poll(&format!("job {id} to finish"), JOB_DEADLINE, || async {
        let job = get(w, &format!("/api/v0/jobs/{id}"), &admin()).await.json();
        let status = job["status"].as_str().unwrap_or_default().to_string();
        if ["done", "error", "cancelled", "worker_dead"].contains(&status.as_str()) {
            Ok(job)
        } else {
            Err(format!("{job}"))
        }
    })
    .await
}

/// Pushes `image` as `repo:tag` over the registry API; its manifest digest.
async fn push_image(w: &TestServer, repo: &str, tag: &str, image: &oci_layout::Image) -> String {
    for blob in image.content() {
        secure::try_push_blob(&w.base, &admin(), repo, &blob.bytes)
            .await
            .unwrap_or_else(|r| panic!("pushing a blob of {repo}: {}", r.describe()));
    }
    let put = client()
        .put(format!("{}/v2/{repo}/manifests/{tag}", w.base))
        .header("content-type", oci_layout::OCI_MANIFEST)
        .body(image.manifest.bytes.clone());
    let r = send(admin().apply(put)).await;
    expect(&r, 201, None, &format!("pushing {repo}:{tag}"));
    image.manifest.digest.clone()
}

/// `POST /api/v0/vulndb?name=NAME` with `body`.
async fn upload(w: &TestServer, cred: &Cred, name: &str, body: Vec<u8>) -> Reply {
    let rb = client()
        .post(format!("{}/api/v0/vulndb?name={name}", w.base))
        .header("content-type", "application/zip")
        .body(body);
    send(cred.apply(rb)).await
}

async fn vulns(w: &TestServer, cred: &Cred, repo: &str, reference: &str) -> Reply {
    get(
        w,
        &format!("/api/v0/repositories/{repo}/_vulnerabilities/{reference}"),
        cred,
    )
    .await
}

/// The one image of a report for an image (not an index).
fn only_image(report: &Value) -> &Value {
    let images = report["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "{report}");
    &images[0]
}

/// Waits until `repo:reference` shows as scanned.
async fn wait_scanned(w: &TestServer, repo: &str, reference: &str) -> Value {
    poll(
        &format!("{repo}:{reference} to be scanned"),
        JOB_DEADLINE,
        || async {
            let r = vulns(w, &admin(), repo, reference).await;
            let v = r.json();
            if v["images"][0]["status"] == "scanned" {
                Ok(v)
            } else {
                Err(r.describe())
            }
        },
    )
    .await
}

/// pyspdxtools from the test venv (or PATH); `None` (a skip, a failure under CI=true)
/// without it.
fn pyspdxtools() -> Option<std::path::PathBuf> {
    let venv = std::env::var_os("WHARF_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/wharf-test-venv")
        })
        .join("bin/pyspdxtools");
    if venv.is_file() {
        return Some(venv);
    }
    if std::process::Command::new("pyspdxtools")
        .arg("--help")
        .output()
        .is_ok()
    {
        return Some("pyspdxtools".into());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "pyspdxtools is required under CI=true (scripts/install-test-deps.sh installs it)"
    );
    eprintln!("SKIPPED the SBOM's validation: pyspdxtools is not installed");
    None
}

/// The SPDX project's validator accepts `document` (skipped without pyspdxtools, a
/// failure under CI=true).
fn assert_valid_spdx(document: &[u8], what: &str) {
    let Some(tool) = pyspdxtools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sbom.spdx.json");
    std::fs::write(&file, document).unwrap();
    let out = std::process::Command::new(tool)
        .arg("-i")
        .arg(&file)
        .output()
        .expect("run pyspdxtools");
    assert!(
        out.status.success(),
        "pyspdxtools rejected {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_rescan_findings_sbom_scan_now_and_a_refused_archive() {
    let w = TestServer::start_secure();
    // Pushes are not scanned here: "rescan all" and "scan now" do it.
    let no_scan_on_push = serde_json::json!({
        "scan_on_push": false, "block_severity": null, "unscanned": "allow", "attach_sbom": false,
    });
    let r = request(
        &w,
        Method::PUT,
        "/api/v0/scan_policy",
        &admin(),
        Some(&no_scan_on_push),
    )
    .await;
    expect(&r, 204, None, "turning scan on push off");

    // No database yet.
    let r = get(&w, "/api/v0/vulndb", &admin()).await;
    expect(&r, 200, None, "the database before any import");
    assert_eq!(r.json()["current"], Value::Null, "{}", r.describe());

    // The fixture database, uploaded as a zip: stored, then imported by a job.
    let r = upload(&w, &admin(), "osv.zip", scan_fixture::vulndb_zip()).await;
    expect(&r, 202, None, "uploading the fixture database");
    let job = r.json();
    assert_eq!(job["action"], "vulndb_import", "{job}");
    assert!(
        job["params"]["blob"]
            .as_str()
            .is_some_and(|b| b.starts_with("sha256:")),
        "{job}"
    );
    let done = wait_job(&w, job["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let db = get(&w, "/api/v0/vulndb", &admin()).await.json();
    assert_eq!(db["current"]["id"], 1, "{db}");
    assert_eq!(db["current"]["status"], "current", "{db}");
    assert_eq!(db["current"]["source"], "upload:osv.zip", "{db}");
    assert_eq!(
        db["current"]["records"],
        scan_fixture::VULNDB_RECORDS,
        "{db}"
    );

    // A vulnerable image and the same with libexif fixed.
    let vulnerable = push_image(
        &w,
        "base/alpine",
        "3.12",
        &scan_fixture::alpine_image("0.6.20-r0"),
    )
    .await;
    push_image(
        &w,
        "base/alpine",
        "3.12-fixed",
        &scan_fixture::alpine_image("0.6.21-r0"),
    )
    .await;

    // Not scanned yet: said so, and no SBOM.
    let r = vulns(&w, &admin(), "base/alpine", "3.12").await;
    expect(&r, 200, None, "the report of an image not scanned");
    let image = only_image(&r.json()).clone();
    assert_eq!(image["status"], "not_scanned", "{image}");
    assert_eq!(image["digest"], vulnerable.as_str(), "{image}");
    let r = get(&w, "/api/v0/repositories/base/alpine/_sbom/3.12", &admin()).await;
    expect(&r, 404, None, "the SBOM of an image not scanned");
    assert!(
        r.text().contains("has not been scanned"),
        "{}",
        r.describe()
    );

    // Rescan all: both images are queued, as one job that queues a scan per image.
    let r = request(
        &w,
        Method::POST,
        "/api/v0/scanning/rescan_all",
        &admin(),
        None,
    )
    .await;
    expect(&r, 202, None, "rescan all");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let report = wait_scanned(&w, "base/alpine", "3.12").await;
    wait_scanned(&w, "base/alpine", "3.12-fixed").await;

    // What the scanner tests expect of this image: Alpine 3.12, and only libexif
    // 0.6.20-r0 affected, by CVE-2012-2812, fixed in 0.6.21-r0.
    let image = only_image(&report);
    assert_eq!(image["os"], "Alpine Linux v3.12", "{image}");
    assert_eq!(image["db_version"], 1, "{image}");
    assert!(image["packages"].as_u64().unwrap() > 1, "{image}");
    let findings = image["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{image}");
    let f = &findings[0];
    assert_eq!(f["advisory_id"], "CVE-2012-2812", "{f}");
    assert_eq!(f["package"], "libexif", "{f}");
    assert_eq!(f["ecosystem"], "Alpine:v3.12", "{f}");
    assert_eq!(f["installed_version"], "0.6.20-r0", "{f}");
    assert_eq!(f["fixed_version"], "0.6.21-r0", "{f}");
    assert_eq!(
        f["url"], "https://osv.dev/vulnerability/CVE-2012-2812",
        "{f}"
    );
    assert!(
        f["purl"]
            .as_str()
            .unwrap()
            .starts_with("pkg:apk/alpine/libexif@"),
        "{f}"
    );
    let sev = f["severity"].as_str().unwrap().to_string();
    assert_eq!(image["counts"][&sev], 1, "{image}");
    let fixed = vulns(&w, &admin(), "base/alpine", "3.12-fixed")
        .await
        .json();
    assert_eq!(
        only_image(&fixed)["findings"],
        serde_json::json!([]),
        "{fixed}"
    );

    // Rescan all again: nothing is left unscanned; with all=true both are queued.
    for (query, expected) in [("", 0), ("?all=true", 2)] {
        let r = request(
            &w,
            Method::POST,
            &format!("/api/v0/scanning/rescan_all{query}"),
            &admin(),
            None,
        )
        .await;
        expect(&r, 202, None, "rescan all again");
        let id = r.json()["id"].as_i64().unwrap();
        let done = wait_job(&w, id).await;
        assert_eq!(done["status"], "done", "{done}");
        let logs = get(&w, &format!("/api/v0/jobs/{id}/logs"), &admin())
            .await
            .text();
        // One scan per image: the two tags are two images.
        assert_eq!(
            logs.matches("scan queued as job").count(),
            expected,
            "rescan_all{query}: {logs}"
        );
    }

    // Scan now, by digest: a job, and the results stay.
    let r = request(
        &w,
        Method::POST,
        &format!("/api/v0/repositories/base/alpine/_scan/{vulnerable}"),
        &admin(),
        None,
    )
    .await;
    expect(&r, 202, None, "scan now");
    let job = r.json();
    assert_eq!(job["action"], "scan", "{job}");
    assert_eq!(job["params"]["digest"], vulnerable.as_str(), "{job}");
    let done = wait_job(&w, job["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let again = vulns(&w, &admin(), "base/alpine", &vulnerable).await.json();
    assert_eq!(
        only_image(&again)["findings"][0]["advisory_id"],
        "CVE-2012-2812"
    );

    // The SBOM: an SPDX 2.3 attachment naming libexif, valid for the SPDX tools.
    let r = get(&w, "/api/v0/repositories/base/alpine/_sbom/3.12", &admin()).await;
    expect(&r, 200, None, "the SBOM");
    assert_eq!(r.header("content-type"), Some("application/spdx+json"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment;") && d.contains(".spdx.json")),
        "{}",
        r.describe()
    );
    let doc = r.json();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3", "{doc}");
    assert!(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "libexif" && p["versionInfo"] == "0.6.20-r0"),
        "{doc}"
    );
    assert_valid_spdx(&r.body, "the SBOM");

    // A broken archive: stored and queued, but the import refuses it; the job fails,
    // the version is listed as failed with why, and version 1 stays current.
    let r = upload(
        &w,
        &admin(),
        "broken.zip",
        b"not a zip archive at all".to_vec(),
    )
    .await;
    expect(&r, 202, None, "uploading a broken archive");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "error", "{done}");
    let db = get(&w, "/api/v0/vulndb", &admin()).await.json();
    assert_eq!(db["current"]["id"], 1, "{db}");
    let newest = &db["versions"][0];
    assert_eq!(newest["id"], 2, "{db}");
    assert_eq!(newest["status"], "failed", "{db}");
    assert_eq!(newest["source"], "upload:broken.zip", "{db}");
    assert!(
        newest["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{db}"
    );
    let still = vulns(&w, &admin(), "base/alpine", "3.12").await.json();
    assert_eq!(only_image(&still)["findings"].as_array().unwrap().len(), 1);

    // Each action is in the audit log, by whom and on what.
    let audit = get(&w, "/api/v0/audit?limit=100", &admin()).await.json();
    let entries: Vec<(String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (action, target) in [
        ("vulndb.upload", ""),
        ("scanning.rescan_all", ""),
        ("image.scan", format!("base/alpine@{vulnerable}").as_str()),
    ] {
        assert!(
            entries
                .iter()
                .any(|(a, act, t)| a == "admin" && act == action && t.contains(target)),
            "{action} on {target:?} in {entries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_scan_upload_and_rescan() {
    let w = TestServer::start_secure();
    push_image(
        &w,
        "base/alpine",
        "3.12",
        &scan_fixture::alpine_image("0.6.20-r0"),
    )
    .await;
    create_user(&w, "reader", "reader-password-1").await;
    grant_user(&w, &admin(), "base/alpine", "reader", "read").await;
    create_user(&w, "stranger", "stranger-password-1").await;
    let reader = Cred::basic("reader", "reader-password-1");
    let stranger = Cred::basic("stranger", "stranger-password-1");

    // Reading takes pull access.
    expect(
        &vulns(&w, &reader, "base/alpine", "3.12").await,
        200,
        None,
        "a reader reads the report",
    );
    expect(
        &vulns(&w, &stranger, "base/alpine", "3.12").await,
        403,
        Some("DENIED"),
        "a user without access",
    );
    expect(
        &vulns(&w, &Cred::Anonymous, "base/alpine", "3.12").await,
        401,
        None,
        "anonymous",
    );
    expect(
        &vulns(&w, &reader, "base/alpine", "no-such-tag").await,
        404,
        None,
        "an unknown tag",
    );

    // Scanning takes push access; the database and rescans are the administrators'.
    let r = request(
        &w,
        Method::POST,
        "/api/v0/repositories/base/alpine/_scan/3.12",
        &reader,
        None,
    )
    .await;
    expect(&r, 403, Some("DENIED"), "a reader scans");
    let r = upload(&w, &reader, "osv.zip", scan_fixture::vulndb_zip()).await;
    expect(&r, 403, Some("DENIED"), "a non-administrator uploads");
    let r = request(
        &w,
        Method::POST,
        "/api/v0/scanning/rescan_all",
        &reader,
        None,
    )
    .await;
    expect(&r, 403, Some("DENIED"), "a non-administrator rescans");
    expect(
        &get(&w, "/api/v0/vulndb", &reader).await,
        200,
        None,
        "a signed-in user reads the database's status",
    );
    expect(
        &get(&w, "/api/v0/vulndb", &Cred::Anonymous).await,
        401,
        None,
        "anonymous reads the database's status",
    );
    // Nothing was queued by the refused requests: the push's own scan only.
    let jobs = get(&w, "/api/v0/jobs", &admin()).await.json();
    let actions: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["action"].as_str())
        .collect();
    assert_eq!(actions, ["scan"], "{jobs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_is_reported_per_platform() {
    let w = TestServer::start_secure();
    let r = upload(&w, &admin(), "osv.zip", scan_fixture::vulndb_zip()).await;
    expect(&r, 202, None, "uploading the fixture database");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");

    // amd64 vulnerable, arm64 fixed, under one index.
    let amd64 = scan_fixture::alpine_image_for("0.6.20-r0", "amd64");
    let arm64 = scan_fixture::alpine_image_for("0.6.21-r0", "arm64");
    for img in [&amd64, &arm64] {
        push_image(&w, "base/multi", &img.manifest.digest, img).await;
    }
    let index = oci_layout::index_of(&[("amd64", &amd64), ("arm64", &arm64)]);
    let put = client()
        .put(format!("{}/v2/base/multi/manifests/1.0", w.base))
        .header("content-type", oci_layout::OCI_INDEX)
        .body(index.bytes.clone());
    expect(
        &send(admin().apply(put)).await,
        201,
        None,
        "pushing the index",
    );

    let r = request(
        &w,
        Method::POST,
        "/api/v0/repositories/base/multi/_scan/1.0",
        &admin(),
        None,
    )
    .await;
    expect(&r, 202, None, "scan now, on the index");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");

    let report = vulns(&w, &admin(), "base/multi", "1.0").await.json();
    assert_eq!(report["digest"], index.digest.as_str(), "{report}");
    let images = report["images"].as_array().unwrap();
    let platforms: Vec<(&str, &str, usize)> = images
        .iter()
        .map(|i| {
            (
                i["platform"].as_str().unwrap(),
                i["status"].as_str().unwrap(),
                i["findings"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [("linux/amd64", "scanned", 1), ("linux/arm64", "scanned", 0)],
        "{report}"
    );
    assert_eq!(images[0]["digest"], amd64.manifest.digest.as_str());
    assert_eq!(images[0]["findings"][0]["advisory_id"], "CVE-2012-2812");

    // The SBOM of each platform, by its name.
    for (platform, libexif) in [("linux/amd64", "0.6.20-r0"), ("linux/arm64", "0.6.21-r0")] {
        let r = get(
            &w,
            &format!("/api/v0/repositories/base/multi/_sbom/1.0?platform={platform}"),
            &admin(),
        )
        .await;
        expect(&r, 200, None, &format!("the SBOM of {platform}"));
        let doc = r.json();
        assert!(
            doc["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "libexif" && p["versionInfo"] == libexif),
            "{platform}: {doc}"
        );
    }
    let r = get(
        &w,
        "/api/v0/repositories/base/multi/_sbom/1.0?platform=linux/s390x",
        &admin(),
    )
    .await;
    expect(
        &r,
        404,
        None,
        "the SBOM of a platform the index does not have",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_version_lists_the_images_it_newly_affects() {
    let w = TestServer::start_secure();
    // Version 1 without the Alpine records: the image has no findings.
    let r = upload(
        &w,
        &admin(),
        "PyPI.zip",
        scan_fixture::vulndb_zip_of(&["PyPI"]),
    )
    .await;
    expect(&r, 202, None, "uploading the PyPI records");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let digest = push_image(
        &w,
        "base/alpine",
        "3.12",
        &scan_fixture::alpine_image("0.6.20-r0"),
    )
    .await;
    let r = request(
        &w,
        Method::POST,
        "/api/v0/repositories/base/alpine/_scan/3.12",
        &admin(),
        None,
    )
    .await;
    expect(&r, 202, None, "scan now");
    wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    let report = wait_scanned(&w, "base/alpine", "3.12").await;
    assert_eq!(only_image(&report)["findings"], serde_json::json!([]));
    let db = get(&w, "/api/v0/vulndb", &admin()).await.json();
    assert_eq!(
        db["current"]["ecosystems"],
        serde_json::json!({"PyPI": 143}),
        "{db}"
    );

    // Version 2 with them: the image is newly affected, and its report says so.
    let r = upload(&w, &admin(), "osv.zip", scan_fixture::vulndb_zip()).await;
    expect(&r, 202, None, "uploading the whole database");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let db = get(&w, "/api/v0/vulndb", &admin()).await.json();
    assert_eq!(db["current"]["id"], 2, "{db}");
    assert_eq!(db["versions"][1]["status"], "superseded", "{db}");
    assert_eq!(
        db["changes"],
        serde_json::json!([{"manifest_digest": digest, "advisory_id": "CVE-2012-2812", "change": "added"}]),
        "{db}"
    );
    let report = vulns(&w, &admin(), "base/alpine", "3.12").await.json();
    let image = only_image(&report);
    assert_eq!(image["db_version"], 2, "{image}");
    assert_eq!(
        image["findings"][0]["advisory_id"], "CVE-2012-2812",
        "{image}"
    );
}

/// The SPDX referrers of `repo@digest`, as the referrers API lists them.
async fn sbom_referrers(w: &TestServer, repo: &str, digest: &str) -> Vec<Value> {
    let r = get(w, &format!("/v2/{repo}/referrers/{digest}"), &admin()).await;
    expect(&r, 200, None, "listing referrers");
    r.json()["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter(|m| m["artifactType"] == "application/spdx+json")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_with_attach_sbom_pushes_the_sbom_as_a_referrer() {
    let w = TestServer::start_secure();
    let r = upload(&w, &admin(), "osv.zip", scan_fixture::vulndb_zip()).await;
    expect(&r, 202, None, "uploading the database");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let policy = serde_json::json!({
        "scan_on_push": true, "block_severity": null, "unscanned": "allow", "attach_sbom": true,
    });
    let r = request(
        &w,
        Method::PUT,
        "/api/v0/repositories/base/alpine/_scan_policy",
        &admin(),
        Some(&policy),
    )
    .await;
    expect(&r, 204, None, "setting the policy");

    // The push queues the scan, which attaches the SBOM when it is done.
    let digest = push_image(
        &w,
        "base/alpine",
        "3.12",
        &scan_fixture::alpine_image("0.6.20-r0"),
    )
    .await;
    let report = wait_scanned(&w, "base/alpine", "3.12").await;

    // The metrics count it under its worst finding's severity.
    let severity = only_image(&report)["findings"][0]["severity"]
        .as_str()
        .expect("a finding")
        .to_string();
    let metrics = get(&w, "/metrics", &admin()).await;
    expect(&metrics, 200, None, "metrics");
    let text = metrics.text();
    for line in [
        "wharf_vulndb_version 1".to_string(),
        "wharf_vulndb_last_import_failed 0".to_string(),
        "wharf_scanned_images{status=\"scanned\"} 1".to_string(),
        format!("wharf_images_by_worst_severity{{severity=\"{severity}\"}} 1"),
        "wharf_images_by_worst_severity{severity=\"none\"} 0".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    let first = poll("the SBOM referrer", JOB_DEADLINE, || async {
        match sbom_referrers(&w, "base/alpine", &digest).await.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let referrer = first["digest"].as_str().unwrap().to_string();
    let r = client()
        .get(format!("{}/v2/base/alpine/manifests/{referrer}", w.base))
        .header("accept", "application/vnd.oci.image.manifest.v1+json");
    let manifest = send(admin().apply(r)).await;
    expect(&manifest, 200, None, "reading the referrer");
    let manifest = manifest.json();
    assert_eq!(manifest["subject"]["digest"], digest.as_str(), "{manifest}");
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let blob = get(&w, &format!("/v2/base/alpine/blobs/{layer}"), &admin()).await;
    expect(&blob, 200, None, "reading the SBOM blob");
    let doc = blob.json();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3", "{doc}");
    let names: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"libexif"), "{names:?}");
    assert_valid_spdx(&serde_json::to_vec(&doc).unwrap(), "the referrer's SBOM");

    // A later scan replaces it: still one SBOM of wharf's on the image.
    let r = request(
        &w,
        Method::POST,
        "/api/v0/repositories/base/alpine/_scan/3.12",
        &admin(),
        None,
    )
    .await;
    expect(&r, 202, None, "scan now");
    let done = wait_job(&w, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    let after = sbom_referrers(&w, "base/alpine", &digest).await;
    assert_eq!(after.len(), 1, "{after:?}");
}
