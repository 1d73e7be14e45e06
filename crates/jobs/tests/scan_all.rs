//! `scan_all` ("Rescan all images"): it pages through repositories and their tags
//! (more tags than one page here), queues one `scan` job per tagged image that has no
//! inventory and no scan queued (each image once, however many tags name it), and with
//! `{"all": true}` one per tagged image whatever was scanned.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::scan_images::*;
use wharf_jobs::actions::{self, Stores};
use wharf_jobs::{Finished, JobContext};
use wharf_metastore::MetaStore;

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

async fn run(reg: &TestRegistry, action: &str, params: serde_json::Value) -> Finished {
    let stores = stores(reg);
    let action = actions::all(&stores)
        .into_iter()
        .find(|a| a.name() == action)
        .unwrap_or_else(|| panic!("{action} is registered"));
    let ctx = JobContext::detached(action.name(), &params.to_string(), stores.meta.clone());
    action
        .run(&ctx)
        .await
        .unwrap_or_else(|e| panic!("{params}: {e:#}"))
}

/// The `(repository, digest)` of every queued scan job, and how many there are.
async fn queued_scans(meta: &dyn MetaStore) -> (BTreeSet<(String, String)>, usize) {
    let jobs = meta.jobs(Some("scan"), None, None, 10_000).await.unwrap();
    let set = jobs
        .iter()
        .map(|j| {
            let p: serde_json::Value = serde_json::from_str(&j.params).unwrap();
            (
                p["repository"].as_str().unwrap().to_string(),
                p["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (set, jobs.len())
}

fn tiny(n: usize) -> TestImage {
    image(vec![layer_from_files(
        &[("etc/note", 0o644, format!("image {n}\n").as_bytes())],
        Compression::Gzip,
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_each_unscanned_image_once_across_pages() {
    let reg = TestRegistry::new().await;
    let meta: &dyn MetaStore = &**reg.registry.meta();
    // Pushes queue no scans here (the registry default says so): scan_all does.
    meta.set_scan_policy(
        "",
        &wharf_metastore::scan::ScanPolicy {
            scan_on_push: false,
            block_severity: None,
            unscanned: "allow".into(),
            attach_sbom: false,
        },
    )
    .await
    .unwrap();
    // 450 tags over 9 images in one repository (more than two pages of tags), and one
    // image in each of two more repositories.
    let images: Vec<TestImage> = (0..11).map(tiny).collect();
    for i in 0..450 {
        push(
            &reg.registry,
            "app/many",
            &format!("t{i:03}"),
            &images[i % 9],
        )
        .await;
    }
    push(&reg.registry, "app/one", "v1", &images[9]).await;
    push(&reg.registry, "lib/two", "v1", &images[10]).await;

    let Finished::Done(summary) = run(&reg, "scan_all", serde_json::json!({})).await else {
        panic!("scan_all did not finish");
    };
    assert!(
        summary.starts_with("11 scans queued over 3 repositories"),
        "{summary}"
    );
    let (set, count) = queued_scans(meta).await;
    assert_eq!(count, 11, "each image once: {set:?}");
    let expected: BTreeSet<(String, String)> = (0..9)
        .map(|i| {
            (
                "app/many".to_string(),
                images[i].manifest_digest.to_string(),
            )
        })
        .chain([
            ("app/one".into(), images[9].manifest_digest.to_string()),
            ("lib/two".into(), images[10].manifest_digest.to_string()),
        ])
        .collect();
    assert_eq!(set, expected);

    // Run again while those jobs wait: nothing is queued twice.
    let Finished::Done(summary) = run(&reg, "scan_all", serde_json::json!({})).await else {
        panic!("scan_all did not finish");
    };
    assert!(
        summary
            .starts_with("0 scans queued over 3 repositories; 11 images already scanned or queued"),
        "{summary}"
    );
    assert_eq!(queued_scans(meta).await.1, 11);
    for job in meta.jobs(Some("scan"), None, None, 100).await.unwrap() {
        meta.cancel_job(job.id).await.unwrap();
    }

    // Scan three of them; a second run queues only the other eight.
    for i in [0, 1, 9] {
        let repo = if i == 9 { "app/one" } else { "app/many" };
        run(
            &reg,
            "scan",
            serde_json::json!({"repository": repo, "digest": images[i].manifest_digest.to_string()}),
        )
        .await;
    }
    let Finished::Done(summary) = run(&reg, "scan_all", serde_json::json!({})).await else {
        panic!("scan_all did not finish");
    };
    assert!(
        summary.starts_with("8 scans queued over 3 repositories; 3 images already scanned"),
        "{summary}"
    );
    assert_eq!(queued_scans(meta).await.1, 19);

    // all=true: every image again.
    let Finished::Done(summary) = run(&reg, "scan_all", serde_json::json!({"all": true})).await
    else {
        panic!("scan_all did not finish");
    };
    assert!(summary.starts_with("11 scans queued"), "{summary}");
    assert_eq!(queued_scans(meta).await.1, 30);
}
