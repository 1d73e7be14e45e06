//! `wharf backup` and `wharf restore`, as an operator uses them: a backup taken while
//! pushes go on, the registry wiped, restored, and every image that was there before
//! the backup pulled back byte-identical; damaged archives refused before anything is
//! touched; restores across metadata stores (SQLite ⇄ PostgreSQL, S3 → directory).

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_layout::Rng;
use reqwest::{Client, StatusCode};
use secure::{run_fails, run_ok, wharf_cmd};
use support::{serve_command, sha256, TestServer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LIMIT: Duration = Duration::from_secs(120);

struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<Vec<u8>>,
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn push_blob(c: &Client, base: &str, repo: &str, data: &[u8]) {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{base}{loc}{sep}digest={}", sha256(data)))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Pushes an image with a random layer of `layer_size` bytes.
async fn push(c: &Client, base: &str, repo: &str, tag: &str, layer_size: usize) -> Image {
    let mut rng = Rng::seeded();
    let config = format!(r#"{{"os":"linux","tag":"{tag}","r":"{}"}}"#, rng.hex(8)).into_bytes();
    let layer = rng.bytes(layer_size);
    push_blob(c, base, repo, &config).await;
    push_blob(c, base, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    Image {
        repo: repo.into(),
        tag: tag.into(),
        manifest,
        blobs: vec![config, layer],
    }
}

/// Every image pulls back byte-identical from `base`.
async fn assert_pulls(c: &Client, base: &str, images: &[Image]) {
    for i in images {
        let r = c
            .get(format!("{base}/v2/{}/manifests/{}", i.repo, i.tag))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}:{}", i.repo, i.tag);
        assert_eq!(r.bytes().await.unwrap(), i.manifest, "{}:{}", i.repo, i.tag);
        for b in &i.blobs {
            let r = c
                .get(format!("{base}/v2/{}/blobs/{}", i.repo, sha256(b)))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(&r.bytes().await.unwrap(), b);
        }
    }
}

/// Tags the registry lists for `repo`.
async fn tags(c: &Client, base: &str, repo: &str) -> Vec<String> {
    let r = c
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let v: serde_json::Value = r.json().await.unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn data_args(dir: &Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.display().to_string()]
}

/// `wharf backup --list --json` on a data directory: its output and the records in it.
async fn backup_records(data: &Path) -> (String, serde_json::Value) {
    let list = run_ok(
        cmd(&["backup", "--list", "--json"], &data_args(data)),
        None,
        LIMIT,
    )
    .await;
    let records = serde_json::from_str(&list).unwrap();
    (list, records)
}

fn cmd(args: &[&str], store: &[String]) -> tokio::process::Command {
    let mut c = wharf_cmd(args);
    c.args(store)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    c
}

/// Pushes images in the background until stopped, noting each acknowledged one.
fn background_pushes(
    base: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Image>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = client();
        // Bounded: the backup it runs beside finishes long before.
        for n in 0..2_000 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let image = push(&c, &base, "busy/app", &format!("during-{n}"), 32 * 1024).await;
            acknowledged.lock().unwrap().push(image);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_pushing_then_wipe_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = client();
    let mut before = Vec::new();
    for (i, size) in [1usize << 20, 300_000, 4096, 2 << 20].iter().enumerate() {
        before.push(
            push(
                &c,
                &server.base,
                &format!("team/app{}", i % 2),
                &format!("v{i}"),
                *size,
            )
            .await,
        );
    }

    // The backup runs while another client keeps pushing.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let pushes = background_pushes(server.base.clone(), stop.clone(), acknowledged.clone());
    // Bounded wait until the pushes are under way.
    for _ in 0..3_000 {
        if acknowledged.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_backup = acknowledged.lock().unwrap().len();
    assert!(before_backup >= 3, "background pushes did not start");
    let archive = tmp.path().join("backup.tar");
    let out = run_ok(
        cmd(
            &["backup", "--with-blobs", "--out", archive.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    let after_backup = acknowledged.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    pushes.await.unwrap();
    let during = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(out.contains("backup written to"), "{out}");
    assert!(archive.exists() && !tmp.path().join("backup.tar.partial").exists());

    // Recorded in the metadata store, for the upgrade checks.
    let (list, records) = backup_records(&data).await;
    assert_eq!(records[0]["scope"], "metadata+blobs", "{list}");
    assert_eq!(records[0]["location"], archive.display().to_string());
    assert!(records[0]["bytes"].as_u64().unwrap() > 3 << 20);

    // A location given with `..` is printed and recorded as the one path it names.
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    let roundabout = tmp.path().join("sub").join("..").join("metadata.tar");
    let canonical = tmp.path().canonicalize().unwrap().join("metadata.tar");
    let out = run_ok(
        cmd(
            &["backup", "--out", roundabout.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains(&format!("backup written to {} (", canonical.display())),
        "{out}"
    );
    let (list, records) = backup_records(&data).await;
    assert_eq!(
        records[0]["location"],
        canonical.display().to_string(),
        "{list}"
    );

    // Any tar lists it, and the archive verifies on its own.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.starts_with("wharf-backup.json\n") && listing.ends_with("SHA256SUMS\n"),
        "{listing}"
    );
    let v = run_ok(
        cmd(
            &["restore", "--verify-only", archive.to_str().unwrap()],
            &[],
        ),
        None,
        LIMIT,
    )
    .await;
    assert!(v.contains("a complete wharf backup"), "{v}");

    // Wipe, restore, serve again.
    assert!(server.signal_and_wait("TERM").success());
    std::fs::remove_dir_all(&data).unwrap();
    let out = run_ok(
        cmd(&["restore", archive.to_str().unwrap()], &data_args(&data)),
        None,
        LIMIT,
    )
    .await;
    assert!(out.contains("restored"), "{out}");
    let server = TestServer::start_in(&data, &[], &[]);
    assert_pulls(&c, &server.base, &before).await;
    // Those acknowledged before it started are in it; of those acknowledged while it
    // ran, each is in it wholly or not at all; nothing else is.
    let restored_tags = tags(&c, &server.base, "busy/app").await;
    for i in &during[..before_backup] {
        assert!(
            restored_tags.contains(&i.tag),
            "{} was pushed before the backup",
            i.tag
        );
    }
    let in_backup: Vec<Image> = during
        .into_iter()
        .filter(|i| restored_tags.contains(&i.tag))
        .collect();
    eprintln!(
        "pushes acknowledged before the backup: {before_backup}, by its end: {after_backup}; in the backup: {}",
        in_backup.len()
    );
    assert_pulls(&c, &server.base, &in_backup).await;
    assert_eq!(
        restored_tags.len(),
        in_backup.len(),
        "only acknowledged pushes come back"
    );
}

/// Copies `archive` with the first occurrence of `needle` altered.
fn damaged_copy(archive: &Path, needle: &[u8], to: &Path) {
    let mut bytes = std::fs::read(archive).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the needle is in the archive");
    bytes[at + needle.len() / 2] ^= 0x01;
    std::fs::write(to, bytes).unwrap();
}

#[tokio::test]
async fn damaged_or_truncated_archives_are_refused_before_anything_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start_in(&data, &[], &[]);
    let c = client();
    let image = push(&c, &server.base, "team/app", "v1", 200_000).await;
    let archive = tmp.path().join("b.tar");
    run_ok(
        cmd(
            &["backup", "--with-blobs", "--out", archive.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    let size = std::fs::metadata(&archive).unwrap().len() as usize;
    let bytes = std::fs::read(&archive).unwrap();

    let target = tmp.path().join("restored");
    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();
    let layer_digest = sha256(&image.blobs[1]);
    let blob_entry = format!(
        "blobs/sha256/{}",
        layer_digest.trim_start_matches("sha256:")
    );
    for (what, needle, reason) in [
        ("a blob's bytes", &image.blobs[1][1000..1064], "is damaged"),
        ("a table row", b"team/app".as_slice(), "is damaged"),
        ("an entry name", blob_entry.as_bytes(), "checksum"),
        (
            "the checksum list",
            b"  metadata/01-repositories".as_slice(),
            "SHA256SUMS",
        ),
    ] {
        let p = tmp.path().join(format!("damaged-{}.tar", cases.len()));
        damaged_copy(&archive, needle, &p);
        cases.push((what.to_string(), p, reason));
    }
    for cut in [100, 700, size / 2, size - 1024 - 10, size - 1] {
        let p = tmp.path().join(format!("cut-{cut}.tar"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        cases.push((format!("cut at {cut} of {size}"), p, "truncated"));
    }
    let not_tar = tmp.path().join("not-a-backup.tar");
    std::fs::write(&not_tar, b"just some text, not an archive\n".repeat(40)).unwrap();
    cases.push((
        "not an archive".into(),
        not_tar,
        "not a usable wharf backup",
    ));

    for (what, path, reason) in &cases {
        let out = run_fails(
            cmd(&["restore", path.to_str().unwrap()], &data_args(&target)),
            None,
            LIMIT,
        )
        .await;
        assert!(
            out.contains("is not a usable wharf backup"),
            "{what}: {out}"
        );
        assert!(out.contains(reason), "{what}: expected {reason:?} in {out}");
        assert!(
            !target.exists(),
            "{what}: the restore created {}",
            target.display()
        );
    }

    // Over a running registry's data with --replace: refused while it serves, and the
    // damaged archive leaves its data as it was.
    let out = run_fails(
        cmd(
            &["restore", "--replace", archive.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    assert!(out.contains("stop every replica before restoring"), "{out}");
    assert_pulls(&c, &server.base, std::slice::from_ref(&image)).await;
}

#[tokio::test]
async fn a_backup_from_another_version_needs_consent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start_in(&data, &[], &[]);
    let c = client();
    let image = push(&c, &server.base, "team/app", "v1", 10_000).await;
    let archive = tmp.path().join("b.tar");
    run_ok(
        cmd(
            &["backup", "--with-blobs", "--out", archive.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    // The same archive as another release would have written it.
    let older = tmp.path().join("older.tar");
    rewrite_version(&archive, &older, "0.9.0").await;
    let target = tmp.path().join("restored");
    let out = run_fails(
        cmd(&["restore", older.to_str().unwrap()], &data_args(&target)),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("written by wharf 0.9.0") && out.contains("--allow-version-mismatch"),
        "{out}"
    );
    assert!(!target.exists());
    run_ok(
        cmd(
            &[
                "restore",
                "--allow-version-mismatch",
                older.to_str().unwrap(),
            ],
            &data_args(&target),
        ),
        None,
        LIMIT,
    )
    .await;
    let restored = TestServer::start_in(&target, &[], &[]);
    assert_pulls(&c, &restored.base, std::slice::from_ref(&image)).await;
}

/// Rewrites an archive's header to name another wharf version, with checksums to match.
async fn rewrite_version(from: &Path, to: &Path, version: &str) {
    use sha2::Digest as _;
    use wharf_backup::tar::{TarReader, TarWriter};
    let mut r = TarReader::new(tokio::fs::File::open(from).await.unwrap());
    let mut w = TarWriter::new(tokio::fs::File::create(to).await.unwrap());
    let mut sums = String::new();
    while let Some(e) = r.next().await.unwrap() {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        if e.name == "wharf-backup.json" {
            let mut h: serde_json::Value = serde_json::from_slice(&data).unwrap();
            h["wharf_version"] = version.into();
            data = serde_json::to_vec(&h).unwrap();
        }
        if e.name == "SHA256SUMS" {
            data = sums.clone().into_bytes();
        } else {
            sums.push_str(&format!(
                "{}  {}\n",
                hex::encode(sha2::Sha256::digest(&data)),
                e.name
            ));
        }
        w.begin(&e.name).await.unwrap();
        w.write(&data).await.unwrap();
        w.end().await.unwrap();
    }
    w.finish().await.unwrap();
}

fn start(store: &[String], data_dir: &Path) -> TestServer {
    let mut c = serve_command();
    c.args(["--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .args(store)
        .arg("--data-dir")
        .arg(data_dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    TestServer::launch(c, data_dir)
}

/// From the embedded store to PostgreSQL: the way to scale out an existing registry.
#[tokio::test]
async fn sqlite_backup_restores_into_postgres() {
    let Some(pg) = support::pg_database("backup_from_sqlite") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start_in(&data, &[], &[]);
    let c = client();
    let images = vec![
        push(&c, &server.base, "team/app", "v1", 50_000).await,
        push(&c, &server.base, "team/other", "latest", 70_000).await,
    ];
    let archive = tmp.path().join("b.tar");
    run_ok(
        cmd(
            &["backup", "--with-blobs", "--out", archive.to_str().unwrap()],
            &data_args(&data),
        ),
        None,
        LIMIT,
    )
    .await;
    let store = vec!["--metadata".to_string(), pg.clone()];
    let target = tmp.path().join("scaled");
    let mut args = store.clone();
    args.extend(data_args(&target));
    run_ok(
        cmd(&["restore", archive.to_str().unwrap()], &args),
        None,
        LIMIT,
    )
    .await;
    let mut restored = start(&store, &target);
    assert_pulls(&c, &restored.base, &images).await;
    // A second restore into the same store needs --replace.
    assert!(restored.signal_and_wait("TERM").success());
    let out = run_fails(
        cmd(&["restore", archive.to_str().unwrap()], &args),
        None,
        LIMIT,
    )
    .await;
    assert!(
        out.contains("already holds data") && out.contains("--replace"),
        "{out}"
    );
    run_ok(
        cmd(&["restore", "--replace", archive.to_str().unwrap()], &args),
        None,
        LIMIT,
    )
    .await;
}

/// An online backup of a PostgreSQL + S3 registry, restored onto one machine.
#[tokio::test]
async fn postgres_and_s3_backup_restores_into_the_embedded_store() {
    let Some(pg) = support::pg_database("backup_from_pg") else {
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
    let store = vec![
        "--metadata".to_string(),
        pg,
        "--blobs".into(),
        format!("s3://wharf-test/backup-{}", std::process::id()),
        "--s3-endpoint".into(),
        s3,
    ];
    let server = start(&store, &tmp.path().join("replica"));
    let c = client();
    let images = vec![
        push(&c, &server.base, "team/app", "v1", 400_000).await,
        push(&c, &server.base, "team/app", "v2", 5_000).await,
    ];
    let archive = tmp.path().join("b.tar");
    run_ok(
        cmd(
            &["backup", "--with-blobs", "--out", archive.to_str().unwrap()],
            &store,
        ),
        None,
        LIMIT,
    )
    .await;
    let list = run_ok(cmd(&["backup", "--list"], &store), None, LIMIT).await;
    assert!(
        list.contains("metadata+blobs") && list.contains("b.tar"),
        "{list}"
    );
    let target = tmp.path().join("single");
    run_ok(
        cmd(&["restore", archive.to_str().unwrap()], &data_args(&target)),
        None,
        LIMIT,
    )
    .await;
    let restored = TestServer::start_in(&target, &[], &[]);
    assert_pulls(&c, &restored.base, &images).await;
}
