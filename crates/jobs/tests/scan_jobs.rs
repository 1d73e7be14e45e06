//! The scanner's jobs against a SQLite store and a real registry: importing the OSV
//! fixtures (`crates/scan/tests/fixtures/vulndb`), scanning images built from real PyPI
//! releases, re-matching after a database change, and a failed import that leaves the
//! current database (and every finding) as it was.
//!
//! The expected advisory ids come from the fixtures' `manifest.json`, never from the
//! scanner. Tests needing the image fixtures skip without them (fail under `CI=true`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::scan_images::*;
use wharf_jobs::actions::{self, Stores};
use wharf_jobs::vulndb::{self, TracingLog};
use wharf_jobs::{Finished, JobContext};
use wharf_metastore::MetaStore;
use wharf_oci::Digest;

fn vulndb_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scan/tests/fixtures/vulndb")
}

fn stores(reg: &TestRegistry) -> Stores {
    Stores {
        meta: reg.registry.meta().clone(),
        blobs: reg.registry.blobs().clone(),
        upload_expiry: Duration::from_secs(3600),
        gc_grace: Duration::from_secs(3600),
        gc_busy_percent: 50,
        vulndb: Default::default(),
        registry_address: Default::default(),
    }
}

/// Runs `action` as a worker would, outside the queue.
async fn run(
    reg: &TestRegistry,
    action: &str,
    params: serde_json::Value,
) -> anyhow::Result<Finished> {
    let stores = stores(reg);
    let action = actions::all(&stores)
        .into_iter()
        .find(|a| a.name() == action)
        .unwrap_or_else(|| panic!("{action} is registered"));
    assert!(actions::NAMES.contains(&action.name()));
    let ctx = JobContext::detached(action.name(), &params.to_string(), stores.meta.clone());
    action.run(&ctx).await
}

fn meta(reg: &TestRegistry) -> &dyn MetaStore {
    &**reg.registry.meta()
}

/// `(normalised name, version, advisory)` of an image's findings.
async fn findings(reg: &TestRegistry, digest: &Digest) -> BTreeSet<(String, String, String)> {
    meta(reg)
        .findings(&digest.to_string())
        .await
        .unwrap()
        .into_iter()
        .map(|f| (normalise(&f.name), f.version, f.advisory_id))
        .collect()
}

/// What `manifest.json` expects of these PyPI releases, less the `without` ids.
fn expected(packages: &[&FixturePackage], without: &[&str]) -> BTreeSet<(String, String, String)> {
    packages
        .iter()
        .flat_map(|p| {
            let ids = p.expected_ids.clone().expect("manifest.json lists the ids");
            ids.into_iter()
                .filter(|id| !without.contains(&id.as_str()))
                .map(|id| (normalise(&p.name), p.version.clone(), id))
        })
        .collect()
}

fn pypi_image(fixtures: &Fixtures, packages: &[&FixturePackage]) -> TestImage {
    let dirs: Vec<PathBuf> = packages.iter().map(|p| fixtures.path(&p.path)).collect();
    let trees: Vec<(&Path, &str)> = dirs.iter().map(|d| (d.as_path(), SITE_PACKAGES)).collect();
    image(vec![layer_from_dirs(&trees, Compression::Gzip)])
}

/// Copies the fixture archives into `dir`, rewriting `osv-PyPI.zip`: `drop` left out,
/// `extra` (name, JSON) added.
fn write_db(dir: &Path, drop: &[&str], extra: &[(&str, &str)]) {
    for entry in std::fs::read_dir(vulndb_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".zip") {
            continue;
        }
        if name != "osv-PyPI.zip" {
            std::fs::copy(&path, dir.join(&name)).unwrap();
            continue;
        }
        let mut input = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut out = zip::ZipWriter::new(std::fs::File::create(dir.join(&name)).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        for i in 0..input.len() {
            let mut entry = input.by_index(i).unwrap();
            let entry_name = entry.name().to_string();
            if drop.iter().any(|d| entry_name == format!("{d}.json")) {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.start_file(entry_name, options).unwrap();
            out.write_all(&bytes).unwrap();
        }
        for (entry_name, json) in extra {
            out.start_file(*entry_name, options).unwrap();
            out.write_all(json.as_bytes()).unwrap();
        }
        out.finish().unwrap();
    }
}

const FIXTURE_COUNTS: [(&str, u64); 5] = [
    ("Alpine", 1),
    ("Debian", 1),
    ("PyPI", 143),
    ("Ubuntu", 1),
    ("crates.io", 17),
];

#[test]
fn archives_in_reads_each_layout() {
    let dir = vulndb_dir();
    let zips = vulndb::archives_in(&dir).unwrap();
    let labels: Vec<&str> = zips.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(labels, ["Alpine", "Debian", "PyPI", "Ubuntu", "crates.io"]);
    assert!(zips.iter().all(|(_, p)| p.extension().unwrap() == "zip"));

    let folders = vulndb::archives_in(&dir.join("osv")).unwrap();
    let labels: BTreeSet<&str> = folders.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(labels, FIXTURE_COUNTS.iter().map(|(e, _)| *e).collect());
    assert!(folders.iter().all(|(_, p)| p.is_dir()));

    let one = vulndb::archives_in(&dir.join("osv-PyPI.zip")).unwrap();
    assert_eq!(one, [("PyPI".to_string(), dir.join("osv-PyPI.zip"))]);
    let records = vulndb::archives_in(&dir.join("osv/PyPI")).unwrap();
    assert_eq!(records, [("PyPI".to_string(), dir.join("osv/PyPI"))]);

    assert!(vulndb::archives_in(&dir.join("package-lists")).is_err());
    assert!(vulndb::archives_in(&dir.join("no-such")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_the_fixture_archives_and_record_directories() {
    let reg = TestRegistry::new().await;
    let expected: BTreeMap<String, u64> = FIXTURE_COUNTS
        .iter()
        .map(|(e, n)| (e.to_string(), *n))
        .collect();

    let archives = vulndb::archives_in(&vulndb_dir()).unwrap();
    let first = vulndb::import_archives(meta(&reg), "file:fixtures", &archives, &TracingLog)
        .await
        .unwrap();
    assert_eq!(first.records, 163);
    assert_eq!(first.per_ecosystem, expected);
    let current = meta(&reg).current_vulndb().await.unwrap().unwrap();
    assert_eq!(current.id, first.version_id);
    assert_eq!(current.status, "current");
    assert_eq!(current.records, Some(163));
    let counts: BTreeMap<String, u64> =
        serde_json::from_str(current.ecosystems_json.as_deref().unwrap()).unwrap();
    assert_eq!(counts, expected);

    // The osv/ layout (folders of records) gives the same database.
    let folders = vulndb::archives_in(&vulndb_dir().join("osv")).unwrap();
    let second = vulndb::import_archives(meta(&reg), "file:osv", &folders, &TracingLog)
        .await
        .unwrap();
    assert_eq!(second.records, 163);
    assert_eq!(second.per_ecosystem, expected);
    let versions = meta(&reg).vulndb_versions(5).await.unwrap();
    assert_eq!(versions[0].id, second.version_id);
    assert_eq!(versions[0].status, "current");
    assert_eq!(versions[1].id, first.version_id);
    assert_eq!(versions[1].status, "superseded");

    // Stored as the matcher needs them: severity, aliases, affected by normalised name.
    let rows = meta(&reg)
        .advisories(&["PYSEC-2023-74".to_string()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].aliases.iter().any(|a| a.starts_with("CVE-")));
    assert!(rows[0]
        .affected
        .iter()
        .any(|a| a.ecosystem == "PyPI" && a.name == "requests"));

    // A re-match with no packages has nothing to do.
    let rematched = vulndb::rematch(meta(&reg), &TracingLog).await.unwrap();
    assert_eq!(rematched.db_version, Some(second.version_id));
    assert_eq!((rematched.packages, rematched.added), (0, 0));
}

/// Scan before any database, import (the re-match finds the first image's advisories),
/// scan a second image (its new packages are matched at once), re-import without one
/// advisory (the re-match removes it), then a database with an invalid record (the
/// import fails; nothing changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_import_rematch_and_failed_import() {
    let Some(fixtures) = fixtures() else { return };
    let requests = fixtures.package("pypi", "requests", "2.19.1");
    let urllib3 = fixtures.package("pypi", "urllib3", "1.24.1");
    let pyyaml = fixtures.package("pypi", "pyyaml", "5.1");
    let reg = TestRegistry::new().await;

    // 1. Scanned with no database: an inventory, no findings.
    let a_packages = [requests, urllib3];
    let a = push(
        &reg.registry,
        "app/a",
        "v1",
        &pypi_image(&fixtures, &a_packages),
    )
    .await;
    let params =
        |repo: &str, d: &Digest| serde_json::json!({"repository": repo, "digest": d.to_string()});
    let done = run(&reg, "scan", params("app/a", &a)).await.unwrap();
    assert!(matches!(done, Finished::Done(_)), "{done:?}");
    let inventory = meta(&reg).inventory(&a.to_string()).await.unwrap().unwrap();
    assert_eq!(inventory.status, "scanned");
    assert_eq!(inventory.packages.len(), 2);
    assert!(findings(&reg, &a).await.is_empty());

    // 2. The import's re-match finds them, and records them as new for the image.
    let db1 = tempfile::tempdir().unwrap();
    write_db(db1.path(), &[], &[]);
    let done = run(
        &reg,
        "vulndb_import",
        serde_json::json!({"path": db1.path()}),
    )
    .await
    .unwrap();
    assert!(matches!(done, Finished::Done(_)), "{done:?}");
    let v1 = meta(&reg).current_vulndb().await.unwrap().unwrap();
    assert_eq!(v1.records, Some(163));
    assert_eq!(findings(&reg, &a).await, expected(&a_packages, &[]));
    let changes = meta(&reg).vuln_changes(v1.id, 100).await.unwrap();
    let added: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.manifest_digest == a.to_string() && c.change == "added")
        .map(|c| c.advisory_id.as_str())
        .collect();
    let all_a: BTreeSet<String> = expected(&a_packages, &[])
        .into_iter()
        .map(|t| t.2)
        .collect();
    assert_eq!(added, all_a.iter().map(String::as_str).collect());
    let summary = &meta(&reg).summaries(&[a.to_string()]).await.unwrap()[0].1;
    assert_eq!(summary.db_version, Some(v1.id));

    // 3. A scan with a database: its new package (pyyaml) is matched at once, the known
    //    one (requests) keeps its matches.
    let b_packages = [requests, pyyaml];
    let b = push(
        &reg.registry,
        "app/b",
        "v1",
        &pypi_image(&fixtures, &b_packages),
    )
    .await;
    run(&reg, "scan", params("app/b", &b)).await.unwrap();
    assert_eq!(findings(&reg, &b).await, expected(&b_packages, &[]));
    let summary = &meta(&reg).summaries(&[b.to_string()]).await.unwrap()[0].1;
    let total = summary.critical + summary.high + summary.medium + summary.low + summary.unknown;
    assert_eq!(total as usize, expected(&b_packages, &[]).len());

    // 4. A database without PYSEC-2023-74: the re-match removes it from both images and
    //    records the change.
    let db2 = tempfile::tempdir().unwrap();
    write_db(db2.path(), &["PYSEC-2023-74"], &[]);
    let done = run(
        &reg,
        "vulndb_import",
        serde_json::json!({"path": db2.path()}),
    )
    .await
    .unwrap();
    assert!(matches!(done, Finished::Done(_)), "{done:?}");
    let v2 = meta(&reg).current_vulndb().await.unwrap().unwrap();
    assert_ne!(v2.id, v1.id);
    assert_eq!(v2.records, Some(162));
    let after_a = findings(&reg, &a).await;
    let after_b = findings(&reg, &b).await;
    assert_eq!(after_a, expected(&a_packages, &["PYSEC-2023-74"]));
    assert_eq!(after_b, expected(&b_packages, &["PYSEC-2023-74"]));
    let changes = meta(&reg).vuln_changes(v2.id, 100).await.unwrap();
    let changed: BTreeSet<(String, String, String)> = changes
        .iter()
        .map(|c| {
            (
                c.manifest_digest.clone(),
                c.advisory_id.clone(),
                c.change.clone(),
            )
        })
        .collect();
    let removed = |d: &Digest| {
        (
            d.to_string(),
            "PYSEC-2023-74".to_string(),
            "removed".to_string(),
        )
    };
    assert_eq!(changed, BTreeSet::from([removed(&a), removed(&b)]));

    // A re-match with nothing new changes nothing.
    let again = vulndb::rematch(meta(&reg), &TracingLog).await.unwrap();
    assert_eq!((again.added, again.removed), (0, 0));
    assert_eq!(again.packages, 3);

    // 5. A database with an invalid record: the import fails naming it, v2 stays
    //    current, and every finding stays.
    let db3 = tempfile::tempdir().unwrap();
    let bad = r#"{"id":"TEST-BAD-1","modified":"2026-01-01T00:00:00Z",
        "affected":[{"package":{"ecosystem":"PyPI","name":"requests"},
        "ranges":[{"type":"ECOSYSTEM","events":[]}]}]}"#;
    write_db(db3.path(), &[], &[("TEST-BAD-1.json", bad)]);
    let err = run(
        &reg,
        "vulndb_import",
        serde_json::json!({"path": db3.path()}),
    )
    .await
    .unwrap_err();
    let error = format!("{err:#}");
    assert!(error.contains("PyPI/osv-PyPI.zip: TEST-BAD-1"), "{error}");
    assert_eq!(
        meta(&reg).current_vulndb().await.unwrap().unwrap().id,
        v2.id
    );
    let newest = &meta(&reg).vulndb_versions(1).await.unwrap()[0];
    assert_eq!(newest.status, "failed");
    assert!(
        newest.error.as_deref().unwrap_or("").contains("TEST-BAD-1"),
        "{newest:?}"
    );
    assert_eq!(findings(&reg, &a).await, after_a);
    assert_eq!(findings(&reg, &b).await, after_b);

    // A scan of a manifest the repository no longer holds (deleted after its push
    // queued the scan) has nothing to do: done, saying so, and nothing stored.
    let missing: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
    let done = run(&reg, "scan", params("app/a", &missing)).await.unwrap();
    let Finished::Done(summary) = done else {
        panic!("{done:?}")
    };
    assert!(summary.contains("no longer in the repository"), "{summary}");
    assert!(meta(&reg)
        .inventory(&missing.to_string())
        .await
        .unwrap()
        .is_none());
}

/// An image whose layer cannot be read is stored as a failed scan, with why; the job
/// itself is done (the image's failure is the image's, not the job's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_image_is_stored_as_failed() {
    let reg = TestRegistry::new().await;
    let archives = vulndb::archives_in(&vulndb_dir()).unwrap();
    vulndb::import_archives(meta(&reg), "file:fixtures", &archives, &TracingLog)
        .await
        .unwrap();
    let garbage = image(vec![b"this is not a tar archive, nor compressed".repeat(40)]);
    let digest = push(&reg.registry, "app/broken", "v1", &garbage).await;
    let params = serde_json::json!({"repository": "app/broken", "digest": digest.to_string()});
    let done = run(&reg, "scan", params).await.unwrap();
    assert!(
        matches!(done, Finished::Done(ref s) if s.contains("1 failed")),
        "{done:?}"
    );
    let inventory = meta(&reg)
        .inventory(&digest.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inventory.status, "failed");
    assert!(inventory.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert!(inventory.packages.is_empty());
    let summaries = meta(&reg).summaries(&[digest.to_string()]).await.unwrap();
    assert_eq!(summaries[0].1.status, "failed");

    // Bad parameters fail the attempt.
    let bad = serde_json::json!({"repository": "app/broken"});
    assert!(run(&reg, "scan", bad).await.is_err());
    let bad = serde_json::json!({"path": "/no/such/dir"});
    assert!(run(&reg, "vulndb_import", bad).await.is_err());
    assert!(run(&reg, "vulndb_rematch", serde_json::json!({"x": 1}))
        .await
        .is_err());
}
