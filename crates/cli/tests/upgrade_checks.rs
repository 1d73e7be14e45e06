//! The pre-flight checks of `wharf upgrade check`, each made to fail for real (the stale
//! backup and the pending background migration are in tests/upgrade.rs):
//!
//! - `clock-drift`: a real `wharf serve` on PostgreSQL whose clock runs 700 s ahead
//!   (libfaketime, `LD_PRELOAD`), so its heartbeats carry the skewed clock;
//! - `data-dir`: a registry's data copied onto a real tmpfs mount, remounted read-only,
//!   and filled up until the kernel answers ENOSPC;
//! - `database`: a real PostgreSQL server outside the range a release catalog
//!   (`--catalog`, the real releases.toml with this release's entry changed) supports.
//!
//! What is asserted is what an operator sees: the exit status, each check's status, what
//! it measured and its fix. Processes, mounts and directories are removed on drop, also
//! when a test fails.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/http.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use secure::{run, wharf_cmd};
use serde_json::Value;
use support::TestServer;
// support/http.rs uses it through the crate root.
use support::sha256;

const OWN: &str = env!("CARGO_PKG_VERSION");

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `wharf upgrade check --format json ARGS`: the exit status and the report.
async fn check_json(args: &[&str]) -> (i32, Value) {
    let mut c = wharf_cmd(&["upgrade", "check", "--format", "json"]);
    c.args(args);
    let out = run(c, None, Duration::from_secs(120)).await;
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not a JSON report:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit status"), report)
}

/// `wharf upgrade check ARGS` as an operator reads it: the exit status and the text.
async fn check_text(args: &[&str]) -> (i32, String) {
    let mut c = wharf_cmd(&["upgrade", "check"]);
    c.args(args);
    let out = run(c, None, Duration::from_secs(120)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("exit status"), text)
}

/// One check of a JSON report: (status, measured, fix).
fn one(report: &Value, name: &str) -> (String, String, String) {
    let c = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"));
    (
        c["status"].as_str().unwrap().to_string(),
        c["measured"].as_str().unwrap().to_string(),
        c["fix"].as_str().unwrap_or("").to_string(),
    )
}

/// The text report's line for `name` with `status`, and the fix line under it.
fn text_lines<'a>(text: &'a str, status: &str, name: &str) -> (&'a str, &'a str) {
    let prefix = format!("  {status:<8} {name:<22} ");
    let mut lines = text.lines();
    let line = lines
        .by_ref()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {status} {name} line in:\n{text}"));
    let fix = lines.next().filter(|l| l.trim_start().starts_with("fix: "));
    (line, fix.unwrap_or(""))
}

// ---------------------------------------------------------------------------------
// clock-drift

/// libfaketime's multi-threaded preload library (Debian package `faketime`).
fn faketime_library() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/lib/faketime/libfaketimeMT.so.1".into());
    candidates.push("/usr/local/lib/faketime/libfaketimeMT.so.1".into());
    if let Some(lib) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(lib);
    }
    assert!(
        !under_ci(),
        "libfaketime is required under CI=true; scripts/install-test-deps.sh installs it (package faketime)"
    );
    eprintln!("SKIPPED: libfaketime is not installed (run scripts/install-test-deps.sh)");
    None
}

/// `wharf serve` on PostgreSQL `pg`, its clock shifted by `faketime` (e.g. `+120s`).
fn replica(pg: &str, data: &Path, faketime: Option<(&Path, &str)>) -> TestServer {
    let mut cmd = support::serve_command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-auth",
        "--metadata",
        pg,
        "--heartbeat-interval-secs",
        "1",
    ])
    .arg("--data-dir")
    .arg(data);
    if let Some((lib, offset)) = faketime {
        // Only the wall clock moves: timers (the monotonic clock) keep their pace.
        cmd.env("LD_PRELOAD", lib)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    TestServer::launch(cmd, data)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The number in "clock N ms ahead of".
fn drift_in(measured: &str) -> i64 {
    measured
        .split("clock ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no drift in {measured:?}"))
}

#[tokio::test]
async fn clock_drift_fails_for_a_replica_whose_clock_is_off() {
    let Some(lib) = faketime_library() else {
        return;
    };
    let Some(pg) = support::pg_database("checks_clock") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.to_str().unwrap();
    let store = ["--metadata", &pg, "--data-dir", dir];

    // A replica whose clock runs 700 s ahead of this machine's (and the database's):
    // more than the replica expiry (10 minutes), so it also shows that such a replica
    // does not make the others' registrations, or its own, expire.
    let mut skewed = replica(&pg, &data, Some((&lib, "+700s")));
    // Its heartbeat carries the skewed clock: the store records the replica's own clock
    // beside the database's clock when the heartbeat arrived.
    let row = support::psql(
        &pg,
        "SELECT address || ' ' || clock || ' ' || (clock - heartbeat_at) FROM replicas",
    );
    let fields: Vec<&str> = row.split(' ').collect();
    assert_eq!(fields.len(), 3, "one replica registered: {row:?}");
    assert_eq!(fields[0], skewed.base);
    let (clock, drift): (i64, i64) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    assert!(
        (690_000..710_000).contains(&(clock - now_ms())),
        "the replica's clock is 700 s ahead of this process's: {row}"
    );
    assert!(
        (690_000..710_000).contains(&drift),
        "and of the database's: {row}"
    );

    let (code, r) = check_json(&store).await;
    assert_eq!(code, 1, "{r}");
    let (status, measured, fix) = one(&r, "clock-drift");
    assert_eq!(status, "fail", "{r}");
    assert!(
        measured.starts_with(&format!("{}: clock ", skewed.base))
            && measured.contains(" ms ahead of the metadata store's"),
        "{measured}"
    );
    assert!(
        (690_000..710_000).contains(&drift_in(&measured)),
        "the measured drift: {measured}"
    );
    assert!(fix.contains("NTP"), "{fix}");
    // As an operator reads it.
    let (code, text) = check_text(&store).await;
    assert_eq!(code, 1, "{text}");
    let (line, fix) = text_lines(&text, "FAIL", "clock-drift");
    // The drift is whatever the clocks measured (699,9xx or 700,0xx ms), read back as a number.
    assert!(line.contains(&format!("{}: clock ", skewed.base)), "{text}");
    assert!(
        (690_000..710_000).contains(&drift_in(line)),
        "the printed drift: {text}"
    );
    assert!(
        fix.contains("fix: synchronise the replicas' clocks"),
        "{text}"
    );

    // Stopped, it deregisters: nothing left to compare.
    assert!(skewed.signal_and_wait("TERM").success());
    let (_, r) = check_json(&store).await;
    assert_eq!(
        one(&r, "clock-drift"),
        (
            "pass".into(),
            "no replica registered: no clock to compare".into(),
            String::new()
        ),
        "{r}"
    );

    // A replica with a right clock, serving: the clocks agree (the replicas check fails,
    // since the local driver needs every replica stopped).
    let mut normal = replica(&pg, &data, None);
    let (code, r) = check_json(&store).await;
    assert_eq!(code, 1, "{r}");
    let (status, measured, _) = one(&r, "clock-drift");
    assert_eq!(status, "pass", "{r}");
    assert!(
        measured.starts_with("1 replica clock(s) within 1 s of the metadata store's"),
        "{measured}"
    );
    let (status, measured, _) = one(&r, "replicas");
    assert!(status == "fail" && measured.contains(&normal.base), "{r}");
    assert!(normal.signal_and_wait("TERM").success());
}

// ---------------------------------------------------------------------------------
// data-dir

/// A tmpfs mounted for the test; unmounted on drop, also when the test fails.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` (`mount -o size=`) on `dir`. None (the test is skipped)
    /// when mounting is not permitted here; under CI=true that is a failure.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "wharf-test"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mount {
                dir: dir.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !under_ci(),
                    "mounting a tmpfs is required under CI=true (root with CAP_SYS_ADMIN): {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here: {why}");
                None
            }
        }
    }

    /// `mount -o remount,OPTION`
    fn remount(&self, option: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(&self.dir)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "remount {option} {}", self.dir.display());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy: detach it now; the kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A real registry's data (an image pushed, the server stopped) in `tmp/original`.
async fn registry_data(tmp: &Path) -> PathBuf {
    let data = tmp.join("original");
    let mut server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    http::push_image(&c, &server.base, "team/app", "v1", "data-dir checks").await;
    assert!(server.signal_and_wait("TERM").success());
    data
}

fn copy_into(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[tokio::test]
async fn data_dir_fails_on_a_read_only_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let original = registry_data(tmp.path()).await;
    let dir = tmp.path().join("mnt");
    let Some(mount) = Mount::tmpfs(&dir, "8m") else {
        return;
    };
    copy_into(&original, &dir);
    let args = ["--data-dir", dir.to_str().unwrap()];

    // Writable: the data directory passes.
    let (_, r) = check_json(&args).await;
    let (status, measured, _) = one(&r, "data-dir");
    assert_eq!(status, "pass", "{r}");
    assert!(measured.ends_with("write+fsync ok"), "{measured}");

    // Read-only: it fails and says so; the checks that need the data still report.
    mount.remount("ro");
    let (code, r) = check_json(&args).await;
    assert_eq!(code, 1, "a failing check, not an error: {r}");
    let (status, measured, fix) = one(&r, "data-dir");
    assert_eq!(status, "fail", "{r}");
    assert!(
        measured.starts_with(&format!("{} is on a read-only file system", dir.display()))
            && measured.contains("Read-only file system (os error 30)"),
        "{measured}"
    );
    assert!(fix.contains("mount -o remount,rw"), "{fix}");
    let (status, measured, _) = one(&r, "blob-store");
    assert_eq!(status, "fail", "the blobs are on it too: {measured}");
    let (status, measured, _) = one(&r, "database");
    assert!(
        status == "fail" && measured.contains("does not open"),
        "the embedded store is on it too: {measured}"
    );
    let (code, text) = check_text(&args).await;
    assert_eq!(code, 1, "{text}");
    let (line, fix) = text_lines(&text, "FAIL", "data-dir");
    assert!(line.contains("read-only file system"), "{text}");
    assert!(
        fix.contains("fix: make its file system writable again"),
        "{text}"
    );

    // Writable again: it passes again.
    mount.remount("rw");
    let (_, r) = check_json(&args).await;
    assert_eq!(one(&r, "data-dir").0, "pass", "{r}");
    assert_eq!(one(&r, "blob-store").0, "pass", "{r}");
    assert_eq!(one(&r, "database").0, "pass", "{r}");
}

#[tokio::test]
async fn data_dir_fails_when_its_file_system_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let original = registry_data(tmp.path()).await;
    let dir = tmp.path().join("mnt");
    let Some(_mount) = Mount::tmpfs(&dir, "8m") else {
        return;
    };
    copy_into(&original, &dir);
    let args = ["--data-dir", dir.to_str().unwrap()];
    let (_, r) = check_json(&args).await;
    assert_eq!(one(&r, "data-dir").0, "pass", "{r}");

    // Fill it until the kernel refuses (8 MiB at most; the bound is far above).
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        let mut refused = None;
        for _ in 0..10_000 {
            if let Err(e) = f.write_all(&chunk) {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the tmpfs never filled up");
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
    }

    let (code, r) = check_json(&args).await;
    assert_eq!(code, 1, "a failing check, not an error: {r}");
    let (status, measured, fix) = one(&r, "data-dir");
    assert_eq!(status, "fail", "{r}");
    assert!(
        measured.starts_with(&format!(
            "{}: no space left: 0 MiB free of 8 MiB (0.0%), at least 5% needed",
            dir.display()
        )) && measured.ends_with("write+fsync failed: No space left on device (os error 28)"),
        "{measured}"
    );
    assert!(fix.starts_with("free space on its file system"), "{fix}");
    assert_eq!(one(&r, "blob-store").0, "fail", "{r}");
    let (code, text) = check_text(&args).await;
    assert_eq!(code, 1, "{text}");
    let (line, fix) = text_lines(&text, "FAIL", "data-dir");
    assert!(line.contains("no space left"), "{text}");
    assert!(fix.contains("fix: free space on its file system"), "{text}");

    // Space again: it passes again.
    std::fs::remove_file(&filler).unwrap();
    let (_, r) = check_json(&args).await;
    assert_eq!(one(&r, "data-dir").0, "pass", "{r}");
    assert_eq!(one(&r, "blob-store").0, "pass", "{r}");
}

// ---------------------------------------------------------------------------------
// database, and --catalog

/// The real releases.toml with this release's entry (added if the catalog does not
/// have it yet) requiring PostgreSQL `range`.
fn catalog_requiring(range: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../releases.toml"))
        .unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let own = semver::Version::parse(OWN).unwrap();
    let release = format!("{}.{}.{}", own.major, own.minor, own.patch);
    let releases = doc["release"].as_array_mut().unwrap();
    let found = releases
        .iter()
        .position(|r| r["version"].as_str() == Some(release.as_str()));
    let index = match found {
        Some(i) => i,
        None => {
            // The next release: this build's schema level, with a migration for each
            // level it adds.
            let last = releases.last().unwrap()["schema_level"]
                .as_integer()
                .unwrap();
            let level = wharf_server::SCHEMA_LEVEL as i64;
            let migrations: Vec<String> = (last + 1..=level)
                .map(|l| format!("{{ level = {l}, name = \"level-{l}\", kind = \"expand\" }}"))
                .collect();
            let entry: toml::Table = toml::from_str(&format!(
                "version = \"{release}\"\ndate = \"2027-01-01\"\nschema_level = {level}\n\
                 commit_subject = \"Release {release}\"\nmigrations = [{}]\n\
                 [supports]\npostgresql = \">=13\"\ndocker_engine_api = \">=1.41\"\n",
                migrations.join(", ")
            ))
            .unwrap();
            releases.push(toml::Value::Table(entry));
            releases.len() - 1
        }
    };
    releases[index]["supports"]["postgresql"] = toml::Value::String(range.into());
    toml::to_string(&doc).unwrap()
}

#[tokio::test]
async fn database_fails_outside_the_catalogs_postgresql_range() {
    let Some(pg) = support::pg_database("checks_catalog") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &["--metadata", &pg], &[]);
    assert!(server.signal_and_wait("TERM").success());
    let store = [
        "--metadata",
        pg.as_str(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    // "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
    let server_version = support::psql(&pg, "SHOW server_version");
    let server_version = server_version.split_whitespace().next().unwrap();

    // The catalog built in supports this server.
    let (_, r) = check_json(&store).await;
    let (status, measured, _) = one(&r, "database");
    assert_eq!(status, "pass", "{r}");
    assert!(
        measured.starts_with(&format!("PostgreSQL {server_version}; ")),
        "{measured}"
    );

    // A later catalog in which this release needs PostgreSQL 99 or later.
    let later = tmp.path().join("releases.toml");
    std::fs::write(&later, catalog_requiring(">=99")).unwrap();
    let mut args = vec!["--catalog", later.to_str().unwrap()];
    args.extend(store);
    let (code, r) = check_json(&args).await;
    assert_eq!(code, 1, "{r}");
    let (status, measured, fix) = one(&r, "database");
    assert_eq!(status, "fail", "{r}");
    assert!(
        measured.starts_with(&format!(
            "PostgreSQL {server_version} is outside what {OWN}"
        )) && measured.ends_with(" supports: >=99"),
        "{measured}"
    );
    assert_eq!(
        fix,
        "upgrade PostgreSQL to a version in >=99 first (then check again)"
    );
    let (code, text) = check_text(&args).await;
    assert_eq!(code, 1, "{text}");
    let (line, fix) = text_lines(&text, "FAIL", "database");
    assert!(
        line.contains(&format!("PostgreSQL {server_version} is outside what "))
            && line.ends_with(">=99"),
        "{text}"
    );
    assert!(fix.contains("fix: upgrade PostgreSQL"), "{text}");

    // And one that supports only older servers than this one.
    let major = server_version.split('.').next().unwrap();
    std::fs::write(&later, catalog_requiring(&format!("<{major}"))).unwrap();
    let (code, r) = check_json(&args).await;
    assert_eq!(code, 1, "{r}");
    let (status, measured, _) = one(&r, "database");
    assert!(
        status == "fail" && measured.ends_with(&format!(" supports: <{major}")),
        "{r}"
    );
}

async fn wharf_out(args: &[&str]) -> (i32, String) {
    let out = run(wharf_cmd(args), None, Duration::from_secs(60)).await;
    (
        out.status.code().expect("exit status"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn release(v: &str, level: u32, migrations: &str) -> String {
    format!(
        "[[release]]\nversion = \"{v}\"\ndate = \"2027-01-01\"\nschema_level = {level}\n\
         commit_subject = \"Release {v}\"\nmigrations = [{migrations}]\n\
         [release.supports]\npostgresql = \">=13\"\ndocker_engine_api = \">=1.41\"\n"
    )
}

#[tokio::test]
async fn plan_and_check_take_a_catalog_file_and_refuse_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("releases.toml");
    let path = file.to_str().unwrap();
    let m1 = r#"{ level = 1, name = "initial", kind = "initial" }"#;
    let m2 = r#"{ level = 2, name = "jobs", kind = "expand" }"#;
    let m3 = r#"{ level = 3, name = "next", kind = "expand" }"#;

    // Planned over the file's releases, with the file's schema levels.
    std::fs::write(
        &file,
        release("1.0.0", 1, m1)
            + &release("1.1.0", 2, m2)
            + &release("1.1.3", 2, "")
            + &release("1.2.0", 3, m3),
    )
    .unwrap();
    let (code, out) = wharf_out(&[
        "upgrade",
        "plan",
        "--catalog",
        path,
        "--from",
        "1.0.0",
        "--to",
        "1.2.0",
    ])
    .await;
    // Not as one hop, but through 1.1.3: `apply` makes both hops.
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("upgrade 1.0.0 → 1.2.0: allowed in 2 hops")
            && out.contains("as one hop, rule skip-minor")
            && out.contains("path of required stops: 1.1.3 → 1.2.0")
            && out.contains("1.0.0 → 1.1.3  (minor-upgrade; schema level 1 → 2)")
            && out.contains("1.1.3 → 1.2.0  (minor-upgrade; schema level 2 → 3)"),
        "{out}"
    );

    // Bad files: exit 2, naming the file and what is wrong with it.
    let cases = [
        (
            release("1.0.0", 1, m1) + &release("1.0.1", 2, m2),
            "the release catalog is inconsistent: 1.0.1: a patch release must not migrate data",
        ),
        (
            "[[release]]\nversion = 1\n".to_string(),
            "the release catalog does not parse",
        ),
    ];
    for (text, why) in cases {
        std::fs::write(&file, text).unwrap();
        for cmd in ["plan", "check"] {
            let (code, out) = wharf_out(&[
                "upgrade",
                cmd,
                "--catalog",
                path,
                "--from",
                "1.0.0",
                "--data-dir",
                tmp.path().join("none").to_str().unwrap(),
            ])
            .await;
            assert_eq!(code, 2, "{cmd}: {out}");
            assert!(
                out.contains(&format!("wharf: error: --catalog {path}: {why}")),
                "{cmd}: {out}"
            );
        }
    }
    let missing = tmp.path().join("missing.toml");
    let (code, out) =
        wharf_out(&["upgrade", "check", "--catalog", missing.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!(
            "--catalog {}: cannot read the file: No such file or directory",
            missing.display()
        )),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------
// vulnerability-database

/// A failed database import shows as a warning with its error and the way to refresh;
/// a warning is never counted as a failure.
#[tokio::test]
async fn vulnerability_database_warns_and_never_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let data = registry_data(tmp.path()).await;
    let dir = data.to_str().unwrap();

    let (_, report) = check_json(&["--data-dir", dir]).await;
    assert_eq!(
        one(&report, "vulnerability-database"),
        (
            "pass".to_string(),
            "no database and no scanned images".to_string(),
            String::new()
        )
    );

    // An import refused for an invalid record: recorded as a failed version.
    let bad = tmp.path().join("bad/PyPI");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("TEST-BAD-1.json"),
        r#"{"id": "TEST-BAD-1", "modified": "2026-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI"}}]}"#,
    )
    .unwrap();
    let import = run(
        wharf_cmd(&[
            "vulndb",
            "--data-dir",
            dir,
            "import",
            tmp.path().join("bad").to_str().unwrap(),
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(!import.status.success());

    let (code, report) = check_json(&["--data-dir", dir]).await;
    let (status, measured, fix) = one(&report, "vulnerability-database");
    assert_eq!(status, "warn", "{report}");
    assert!(
        measured.starts_with("no vulnerability database has been imported")
            && measured.contains(
                "; the latest vulnerability database update failed (version 1 from file:"
            )
            && measured.contains("TEST-BAD-1: affected[0].package has no name")
            && measured.ends_with("the database in use is none"),
        "{measured}"
    );
    assert!(fix.contains("wharf vulndb import PATH"), "{fix}");
    let fails = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .count();
    assert_eq!(report["failed"], fails, "{report}");
    assert_eq!(code, i32::from(fails > 0), "{report}");

    let (_, text) = check_text(&["--data-dir", dir]).await;
    let (line, fix) = text_lines(&text, "WARN", "vulnerability-database");
    assert!(line.contains("TEST-BAD-1"), "{line}");
    assert!(
        fix.contains("fix: the upgrade queues vulndb_rematch"),
        "{fix}"
    );
}

// ---------------------------------------------------------------------------------
// content-caches

/// Registered caches are listed with their versions; one that never reported is a
/// warning (its users download from the registry), never a failure.
#[tokio::test]
async fn content_caches_are_listed_and_an_unseen_one_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = registry_data(tmp.path()).await;
    let dir = data.to_str().unwrap();
    let (_, report) = check_json(&["--data-dir", dir]).await;
    assert_eq!(
        one(&report, "content-caches"),
        (
            "pass".to_string(),
            "none registered".to_string(),
            String::new()
        )
    );
    let add = run(
        wharf_cmd(&[
            "cache",
            "--data-dir",
            dir,
            "add",
            "eu",
            "--url",
            "https://cache-eu.example",
            "--region",
            "eu-west",
        ]),
        None,
        Duration::from_secs(60),
    )
    .await;
    assert!(add.status.success(), "{}", secure::output_text(&add));
    assert!(
        String::from_utf8_lossy(&add.stdout)
            .trim()
            .starts_with("wharf_cache_"),
        "the token is printed"
    );
    let (_, report) = check_json(&["--data-dir", dir]).await;
    let (status, measured, fix) = one(&report, "content-caches");
    assert_eq!(status, "warn", "a warning, never a failure");
    assert!(
        measured.contains("eu version unknown (unseen)"),
        "{measured}"
    );
    assert!(fix.contains("wharf cache remove"), "{fix}");
    // The plan lists them too, as the caches to upgrade with the cluster.
    for format in ["text", "json"] {
        let plan = run(
            wharf_cmd(&[
                "upgrade",
                "plan",
                "--from",
                "1.1.0",
                "--data-dir",
                dir,
                "--format",
                format,
            ]),
            None,
            Duration::from_secs(60),
        )
        .await;
        let text = String::from_utf8_lossy(&plan.stdout).to_string();
        assert!(plan.status.success(), "{}", secure::output_text(&plan));
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["content_caches"],
                serde_json::json!([{"name": "eu", "version": null, "state": "unseen"}]),
                "{text}"
            );
        } else {
            assert!(
                text.contains("content caches, upgraded after the replicas and before finalising: eu (version unknown, unseen)"),
                "{text}"
            );
        }
    }
}

/// A running replica plans and checks an upgrade as the CLI does
/// (`GET /api/v0/upgrade/plan` and `/check`, for the web UI): the same checks in the
/// same order with the same verdicts, and the same plan, read-only.
#[tokio::test]
async fn a_replica_plans_and_checks_an_upgrade_as_the_cli_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = registry_data(tmp.path()).await;
    let dir = data.to_str().unwrap();
    let server = TestServer::start_in(&data, &[], &[]);
    let c = http::client();
    let get = |path: String| {
        let c = c.clone();
        async move {
            let r = c.get(&path).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let verdicts = |r: &Value| -> Vec<(String, String)> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (status, api) = get(server.url("/api/v0/upgrade/check")).await;
    assert_eq!(status, 200, "{api}");
    let (code, cli) = check_json(&["--data-dir", dir]).await;
    assert_eq!(verdicts(&api), verdicts(&cli), "API: {api:#}\nCLI: {cli:#}");
    assert_eq!(
        (api["from"].clone(), api["to"].clone()),
        (cli["from"].clone(), cli["to"].clone())
    );
    // This replica serves from the store: the local driver's `replicas` check fails,
    // naming it, in both.
    let (status, measured, _) = one(&api, "replicas");
    assert!(
        status == "fail" && measured.contains(&server.base),
        "{api:#}"
    );
    assert_eq!((code, api["failed"].as_u64()), (1, cli["failed"].as_u64()));
    let failed_local = api["failed"].as_u64().unwrap();
    // For a rolling upgrade a serving replica is expected: on the data's release (or
    // the target's) it passes, again the same in both.
    let (status, api) = get(server.url("/api/v0/upgrade/check?driver=docker")).await;
    assert_eq!(status, 200, "{api}");
    let (code, cli) = check_json(&["--data-dir", dir, "--driver", "docker"]).await;
    assert_eq!(verdicts(&api), verdicts(&cli), "API: {api:#}\nCLI: {cli:#}");
    let (status, measured, _) = one(&api, "replicas");
    assert!(
        status == "pass"
            && measured.contains("to be replaced one at a time")
            && measured.contains(&server.base),
        "{api:#}"
    );
    assert_eq!(api["failed"].as_u64(), Some(failed_local - 1), "{api:#}");
    assert_eq!(code == 0, failed_local == 1, "{cli:#}");
    let (status, bad) = get(server.url("/api/v0/upgrade/check?driver=ftp")).await;
    assert_eq!(status, 400, "{bad}");

    // Plans: to this version (nothing to do) and a downgrade (refused, with the rule).
    let own = env!("CARGO_PKG_VERSION");
    for to in [own, "1.1.0"] {
        let (status, api) = get(server.url(&format!("/api/v0/upgrade/plan?to={to}"))).await;
        assert_eq!(status, 200, "{api}");
        let out = run(
            wharf_cmd(&[
                "upgrade",
                "plan",
                "--to",
                to,
                "--format",
                "json",
                "--data-dir",
                dir,
            ]),
            None,
            Duration::from_secs(60),
        )
        .await;
        let (code, text) = (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout),
        );
        let cli: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        for field in [
            "from",
            "to",
            "allowed",
            "reachable",
            "path",
            "hops",
            "rule",
            "reason",
            "migrations",
            "checks",
            "content_caches",
        ] {
            assert_eq!(api[field], cli[field], "{field}: API {api:#}\nCLI {cli:#}");
        }
        assert_eq!(code == 0, api["reachable"] == true, "{text}");
    }
    let (_, downgrade) = get(server.url("/api/v0/upgrade/plan?to=1.1.0")).await;
    assert_eq!(downgrade["allowed"], false, "{downgrade:#}");
    assert!(
        downgrade["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{downgrade:#}"
    );
    // A target that is not a version is refused, saying so.
    let (status, body) = get(server.url("/api/v0/upgrade/plan?to=banana")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("is not a version"), "{body}");
}
