//! Rolling upgrades of replica containers, for real: three replica containers of
//! release 1.1.0 (`--network host`) on PostgreSQL and the S3 test server, behind nginx
//! on the host, with writers and readers going through nginx the whole time;
//! `wharf upgrade apply --driver docker` replaces them one at a time with this build.
//! 1.1.0 is the previous minor release. One test starts from 1.0.0 instead and goes
//! through 1.1.0 in the same command (a stop of the plan: the guide forbids skipping a
//! minor release).
//!
//! What an operator counts on (docs/upgrading.md, /work/shared/design/upgrade.md §4):
//! - no client request fails during the upgrade, and every push acknowledged before,
//!   during or after it pulls back byte-identical;
//! - the upgrade survives SIGKILL at any point of a replica's replacement: run again,
//!   it continues where it was;
//! - a new replica that dies while starting is waited for (until its timeout, then
//!   the upgrade fails naming it);
//! - until finalisation, `upgrade rollback` brings the 1.1.0 containers back and undoes
//!   the schema level the upgrade expanded, and nothing pushed in between is lost;
//!   after it, rollback is refused.
//!
//! The images come from scripts/test.sh (WHARF_TEST_IMAGE_1_1_0, WHARF_TEST_IMAGE_DEBUG,
//! built by `scripts/build-image.sh --binary`). Without Docker, or without them, the
//! tests print SKIPPED; under CI=true they fail instead.

mod support;

#[path = "support/secure.rs"]
mod secure;

#[path = "support/oci_layout.rs"]
mod oci_layout;

#[path = "support/rolling.rs"]
mod rolling;

use std::collections::BTreeSet;
use std::time::Duration;

use rolling::{
    background_detail, prereqs, pull_back_all, replica_phase, Failure, Hook, Load, LoadConfig,
    LoadReport, RollingCluster,
};

/// This build's version: what the upgraded replicas and the data must report.
const OWN: &str = env!("CARGO_PKG_VERSION");
const OLD: &str = "1.1.0";
/// Release 1.1.0's schema level, and this build's.
const OLD_LEVEL: u32 = 2;
const OWN_LEVEL: u32 = wharf_metastore::schema::SCHEMA_LEVEL;
/// One of the tables level 3 (expand-only) adds, and its undo drops.
const LEVEL_3_TABLE: &str = "scan_policies";

/// One cluster at a time also under `cargo test` (nextest runs these in a test group of
/// one: .config/nextest.toml).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A 1.1.0 cluster behind nginx with the load already pushing and pulling.
async fn cluster_under_load(test: &str) -> Option<(RollingCluster, Load)> {
    let p = prereqs()?;
    let cluster = RollingCluster::start(test, &p, &p.old_image, OLD).await;
    let load = Load::start(&cluster.base(), LoadConfig::default());
    load.wait_for_pushes(3, Duration::from_secs(120)).await;
    Some((cluster, load))
}

/// After an upgrade: the load goes on a little on the new replicas, then everything an
/// upgrade must leave: every replica on this build's image, the data at this version
/// and schema level with its background migrations finished (level 3's, run by the new
/// replicas; an earlier hop's), `upgrade verify` passing, every acknowledged
/// push pulling back byte-identical through nginx. Returns the load's report; its
/// failures are the caller's to judge.
async fn check_upgraded(cluster: &RollingCluster, load: Load) -> LoadReport {
    load.run_for(Duration::from_secs(3)).await;
    cluster.assert_all_on(&cluster.new_image, OWN).await;
    let st = cluster
        .wait_status(OWN, true, Duration::from_secs(180))
        .await;
    assert_eq!(st["data_version"], OWN, "{st:#}");
    assert_eq!(st["schema_level"], OWN_LEVEL, "{st:#}");
    assert_eq!(
        (st["steps_done"].as_u64(), st["steps_total"].as_u64()),
        (Some(8), Some(8)),
        "{st:#}"
    );
    // Level 3's background migration (`manifestsummaries`) was queued by the last
    // hop's background step and the new replicas ran it (wait_status waited for it);
    // one from an earlier hop (a multi-hop upgrade from 1.0.0) has finished too.
    assert!(
        st["background_migrations"]
            .as_array()
            .is_some_and(|b| !b.is_empty() && b.iter().all(|m| m["status"] == "done")),
        "{st:#}"
    );
    assert_eq!(st["pending_manifests"], 0, "{st:#}");
    let detail = background_detail(&st, Some(OLD)).unwrap_or_default();
    assert!(
        detail.starts_with("manifestsummaries queued as job "),
        "{st:#}"
    );
    // Every manifest has its summary, those that 1.1.0 replicas stored included.
    assert_eq!(
        cluster.psql(
            "SELECT count(*) FROM manifests m WHERE NOT EXISTS (SELECT 1 FROM manifest_summaries s
             WHERE s.repository_id = m.repository_id AND s.digest = m.digest)"
        ),
        "0"
    );
    // The replicas' saved configuration (their environment holds secrets) is shown as
    // names only, and is gone from the store once the upgrade is finalised.
    let journal = st["journal"].to_string();
    assert!(
        !journal.contains("WHARF_ADMIN_PASSWORD") && !journal.contains("AWS_SECRET_ACCESS_KEY"),
        "{st:#}"
    );
    assert!(journal.contains("saved the configuration of "), "{st:#}");
    let (ok, out) = cluster.verify().await;
    assert!(ok, "upgrade verify fails after the upgrade:\n{out}");
    let report = load.stop().await;
    let problems = pull_back_all(&cluster.base(), &report.acknowledged).await;
    assert!(
        problems.is_empty(),
        "acknowledged pushes that do not pull back identical ({} of {}):\n{}",
        problems.len(),
        report.acknowledged.len(),
        problems.join("\n")
    );
    report
}

fn print_figures(what: &str, cluster: &RollingCluster, report: &LoadReport) {
    let nginx = cluster.nginx();
    eprintln!(
        "{what}: {}; nginx re-sent {} request(s) to another replica, logged {} upstream error(s)",
        report.summary(),
        nginx.retried().len(),
        nginx.error_log().len()
    );
    for (kind, n) in nginx.upstream_error_kinds() {
        eprintln!("  nginx: {n} × {kind}");
    }
    // The unusual ones in full: which request, on which replica.
    for line in nginx
        .error_log()
        .iter()
        .filter(|l| !l.contains("Connection refused") && !l.contains("temporarily disabled"))
        .take(10)
    {
        eprintln!("  nginx: {line}");
    }
}

/// Failures not explained by a container the test itself killed with SIGKILL.
fn unexplained<'a>(failures: &'a [Failure], killed_addr: &str) -> Vec<&'a Failure> {
    failures
        .iter()
        .filter(|f| {
            !f.upstream
                .as_deref()
                .is_some_and(|u| u.contains(killed_addr))
        })
        .collect()
}

/// The harness itself, without the driver: replicas stopped with `docker stop`
/// (SIGTERM: drain) and started again one at a time, under load. This is what the
/// docker driver does to each replica, and what the nginx configuration is for: no
/// request may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_stopped_and_started_one_at_a_time_under_load_lose_no_request() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("stop").await else {
        return;
    };
    // Steady state first: nothing may fail with every replica up.
    load.run_for(Duration::from_secs(5)).await;
    assert_eq!(
        load.failures(),
        0,
        "failures with every replica up: {:?}",
        load.failure_list()
    );
    let steady = load.requests();
    for i in 0..cluster.replicas.len() {
        let name = cluster.replicas[i].name.clone();
        let t = std::time::Instant::now();
        cluster.stop_container(&name, Duration::from_secs(30));
        let stopped_in = t.elapsed();
        assert!(!cluster.running(&name));
        load.run_for(Duration::from_secs(3)).await;
        cluster.start_container(&name);
        cluster.wait_ready(i, OLD, Duration::from_secs(60)).await;
        eprintln!(
            "{name}: docker stop took {} ms; back after {} ms",
            stopped_in.as_millis(),
            t.elapsed().as_millis()
        );
        load.run_for(Duration::from_secs(2)).await;
    }
    let report = load.stop().await;
    print_figures(
        &format!("three replicas stopped and started in turn ({steady} requests before)"),
        &cluster,
        &report,
    );
    let problems = pull_back_all(&cluster.base(), &report.acknowledged).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    report.assert_no_failures("replicas stopped with docker stop under load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_upgrade_under_load_has_zero_failed_requests() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("upgrade").await else {
        return;
    };
    // An image the Engine lacks is refused before anything changes: no step journalled.
    let mut args = cluster.apply_args();
    let at = args.iter().position(|a| a == "--image").unwrap() + 1;
    args[at] = "wharf-no-such-image:0".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused =
        rolling::run_streaming(cluster.upgrade_cmd(&args), Duration::from_secs(120), |_| {
            Hook::Continue
        })
        .await;
    assert!(
        !refused.success()
            && refused
                .describe()
                .contains("wharf-no-such-image:0 is not on this Docker Engine"),
        "{}",
        refused.describe()
    );
    let st = cluster.status().await;
    assert_eq!(st["journal"], serde_json::json!([]), "{st:#}");
    let run = cluster.apply(&[], |_| Hook::Continue).await;
    run.assert_finished("upgrade apply --driver docker");
    eprintln!(
        "upgrade apply took {:.1} s:\n{}",
        run.elapsed.as_secs_f64(),
        run.describe()
    );
    // Each replica was drained, replaced and reported ready, one after another.
    let phases = run.replica_phases();
    for r in &cluster.replicas {
        for phase in ["draining", "created", "started", "ready"] {
            assert!(
                phases.iter().any(|(n, p)| n == &r.name && p == phase),
                "no {phase} for {}: {}",
                r.name,
                run.describe()
            );
        }
    }
    let report = check_upgraded(&cluster, load).await;
    print_figures("rolling upgrade under load", &cluster, &report);
    report.assert_no_failures("rolling upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_rolling_upgrade_resumes() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("resume").await else {
        return;
    };
    // SIGKILL at each phase of a replacement, each time on another replica: after the
    // old container drained, after the new one was created, and after it was started
    // (before it is ready).
    let mut interrupted: Vec<String> = Vec::new();
    let mut ready_before: BTreeSet<String> = BTreeSet::new();
    for phase in ["drained", "created", "started"] {
        let run = cluster
            .apply(&[], |e| match replica_phase(e) {
                Some((r, p)) if p == phase && !interrupted.contains(&r) => Hook::Kill,
                _ => Hook::Continue,
            })
            .await;
        let Some((replica, _)) = run.killed_at.as_ref().and_then(replica_phase) else {
            panic!(
                "apply never reported {phase} on a replica not interrupted yet: {}",
                run.describe()
            );
        };
        assert!(!run.success(), "killed: {}", run.describe());
        eprintln!(
            "apply killed at {phase} of {replica} after {:.1} s",
            run.elapsed.as_secs_f64()
        );
        // A replica that was ready in an earlier run is not touched again.
        for (r, p) in run.replica_phases() {
            assert!(
                !(ready_before.contains(&r)
                    && ["draining", "removed", "created"].contains(&p.as_str())),
                "{r} was upgraded before, yet this run reports {p}: {}",
                run.describe()
            );
            if p == "ready" {
                ready_before.insert(r);
            }
        }
        interrupted.push(replica);
        load.run_for(Duration::from_secs(1)).await;
    }
    let run = cluster.apply(&[], |_| Hook::Continue).await;
    run.assert_finished("upgrade apply after three interruptions");
    for (r, p) in run.replica_phases() {
        assert!(
            !(ready_before.contains(&r)
                && ["draining", "removed", "created"].contains(&p.as_str())),
            "{r} was upgraded before, yet the last run reports {p}: {}",
            run.describe()
        );
    }
    let report = check_upgraded(&cluster, load).await;
    print_figures("rolling upgrade interrupted three times", &cluster, &report);
    report.assert_no_failures("interrupted rolling upgrade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_replica_killed_while_starting_is_waited_for() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("killnew").await else {
        return;
    };
    // The first new container is killed as soon as it is started, and started again
    // by hand once the command reports it is not running.
    let mut killed: Option<String> = None;
    let mut restarted = false;
    let run = cluster
        .apply(&[], |e| {
            match replica_phase(e) {
                Some((r, p)) if p == "started" && killed.is_none() => {
                    cluster.kill_container(&r);
                    killed = Some(r);
                }
                Some((r, p)) if p == "not_running" && killed.as_ref() == Some(&r) && !restarted => {
                    cluster.start_container(&r);
                    restarted = true;
                }
                _ => {}
            }
            Hook::Continue
        })
        .await;
    run.assert_finished("upgrade apply with a new replica killed while starting");
    let killed = killed.expect("a replica was started");
    assert!(
        restarted,
        "the command never reported {killed} not running: {}",
        run.describe()
    );
    let phases: Vec<String> = run
        .replica_phases()
        .into_iter()
        .filter(|(r, _)| r == &killed)
        .map(|(_, p)| p)
        .collect();
    let down = phases.iter().position(|p| p == "not_running").unwrap();
    assert!(
        phases[down..].iter().any(|p| p == "ready"),
        "{killed} was not waited for until ready: {phases:?}"
    );
    let report = check_upgraded(&cluster, load).await;
    print_figures(
        "rolling upgrade with a new replica killed once",
        &cluster,
        &report,
    );
    // SIGKILL may cost the requests that replica had already taken; nothing else.
    let addr = &cluster.replicas[cluster.index_of(&killed)].addr;
    let other: Vec<_> = unexplained(&report.failures, addr);
    assert!(
        other.is_empty(),
        "failed requests not on the killed replica {addr}:\n{}",
        report.failures_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_replica_left_dead_fails_the_upgrade_naming_it() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("deadnew").await else {
        return;
    };
    let mut killed: Option<String> = None;
    let run = cluster
        .apply(&["--replica-timeout-secs", "5"], |e| {
            match replica_phase(e) {
                Some((r, p)) if p == "started" && killed.is_none() => {
                    cluster.kill_container(&r);
                    killed = Some(r);
                }
                _ => {}
            }
            Hook::Continue
        })
        .await;
    let killed = killed.expect("a replica was started");
    assert!(
        !run.success() && !run.finished(),
        "the upgrade must fail while {killed} stays dead: {}",
        run.describe()
    );
    let message = run.failure().unwrap_or_else(|| run.all_output());
    assert!(
        message.contains(&killed),
        "the failure does not name {killed}: {}",
        run.describe()
    );
    eprintln!(
        "apply failed after {:.1} s: {message}",
        run.elapsed.as_secs_f64()
    );
    assert!(!cluster.running(&killed));
    // Started again, the upgrade is run again and completes.
    cluster.start_container(&killed);
    let run = cluster.apply(&[], |_| Hook::Continue).await;
    run.assert_finished("upgrade apply after the dead replica was started");
    let report = check_upgraded(&cluster, load).await;
    print_figures(
        "rolling upgrade with a new replica left dead, then rerun",
        &cluster,
        &report,
    );
    let addr = &cluster.replicas[cluster.index_of(&killed)].addr;
    let other: Vec<_> = unexplained(&report.failures, addr);
    assert!(
        other.is_empty(),
        "failed requests not on the killed replica {addr}:\n{}",
        report.failures_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_in_the_middle_of_an_upgrade() {
    let _serial = SERIAL.lock().await;
    let Some((cluster, load)) = cluster_under_load("rollback").await else {
        return;
    };
    // Interrupted once two replicas run this build.
    let mut ready: BTreeSet<String> = BTreeSet::new();
    let run = cluster
        .apply(&[], |e| match replica_phase(e) {
            Some((r, p)) if p == "ready" => {
                ready.insert(r);
                if ready.len() == 2 {
                    Hook::Kill
                } else {
                    Hook::Continue
                }
            }
            _ => Hook::Continue,
        })
        .await;
    assert!(
        run.killed,
        "apply never had two replicas ready: {}",
        run.describe()
    );
    load.run_for(Duration::from_secs(2)).await;
    // Level 3 is expanded (its tables are there, next to 1.1.0's), not finalised.
    assert!(cluster.has_table(LEVEL_3_TABLE), "level 3 is not expanded");

    let run = cluster.rollback(&[], |_| Hook::Continue).await;
    run.assert_finished("upgrade rollback");
    eprintln!(
        "rollback took {:.1} s:\n{}",
        run.elapsed.as_secs_f64(),
        run.describe()
    );
    cluster.assert_all_on(&cluster.old_image, OLD).await;
    let st = cluster
        .wait_status(OLD, false, Duration::from_secs(60))
        .await;
    assert_eq!(st["data_version"], OLD, "{st:#}");
    assert_eq!(st["schema_level"], OLD_LEVEL, "{st:#}");
    // The expansion was undone with level 3's undo SQL: its tables are gone.
    let undone = format!("schema levels undone: [{OWN_LEVEL}]");
    assert!(
        run.events
            .iter()
            .any(|e| e["step"] == "expand" && e["status"] == "undone" && e["detail"] == undone),
        "no `{undone}`: {}",
        run.describe()
    );
    assert!(
        !cluster.has_table(LEVEL_3_TABLE),
        "level 3's tables are still there after the rollback"
    );
    load.run_for(Duration::from_secs(3)).await;
    assert_eq!(
        load.failures(),
        0,
        "failed requests through the upgrade and the rollback:\n{:#?}",
        load.failure_list()
    );
    // Everything pushed so far (through 1.1.0 and this build's replicas) is there on
    // 1.1.0 again.
    let pushed = load.acknowledged_images();
    let problems = pull_back_all(&cluster.base(), &pushed).await;
    assert!(
        problems.is_empty(),
        "after the rollback ({} of {} images):\n{}",
        problems.len(),
        pushed.len(),
        problems.join("\n")
    );

    // Then the upgrade again, to the end.
    let run = cluster.apply(&[], |_| Hook::Continue).await;
    run.assert_finished("upgrade apply after a rollback");
    let report = check_upgraded(&cluster, load).await;
    print_figures(
        "upgrade, rollback half-way, upgrade again",
        &cluster,
        &report,
    );
    report.assert_no_failures("upgrade, rollback and upgrade again");

    // Finalised: there is no way back but a backup restore.
    let run = cluster.rollback(&[], |_| Hook::Continue).await;
    assert!(
        !run.success(),
        "rollback after finalisation must be refused: {}",
        run.describe()
    );
    let text = run.all_output().to_lowercase();
    assert!(
        text.contains("finalised") || text.contains("finalized"),
        "the refusal does not say the upgrade is finalised: {}",
        run.describe()
    );
    cluster.assert_all_on(&cluster.new_image, OWN).await;
}

/// Release 1.0.0, where the multi-hop upgrade starts, and its schema level.
const FIRST: &str = "1.0.0";

/// When the journal recorded `step` of the hop `from` → `to`, and its detail (psql).
fn journalled(cluster: &RollingCluster, from: &str, to: &str, step: &str) -> (i64, String) {
    let row = cluster.psql(&format!(
        "SELECT at || ' ' || detail FROM wharf_upgrade_journal
         WHERE from_version = '{from}' AND to_version = '{to}' AND step = '{step}'"
    ));
    let (at, detail) = row
        .split_once(' ')
        .unwrap_or_else(|| panic!("no journal entry {step} of {from} → {to}: {row:?}"));
    (at.parse().unwrap(), detail.to_string())
}

/// The whole path in one command: three replica containers of release 1.0.0 behind
/// nginx, under load, upgraded to this build through 1.1.0 by `upgrade apply --driver
/// docker` given each stop's image. The command is killed while it waits for 1.1.0's
/// background migration (which the 1.1.0 replicas run), and again between the hops;
/// each rerun resumes. At the end no request failed, every acknowledged push pulls
/// back byte-identical, 1.1.0's `metadatastoremigration` had finished before level 3
/// was expanded (journal and job records), every replica runs this build, and
/// `upgrade verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_hop_rolling_upgrade_from_1_0_0_in_one_command_under_load() {
    let _serial = SERIAL.lock().await;
    let Some(p) = prereqs() else {
        return;
    };
    let cluster = RollingCluster::start("hops", &p, &p.image_1_0_0, FIRST).await;
    let load = Load::start(&cluster.base(), LoadConfig::default());
    // 1.0.0's manifests are what 1.1.0's background migration works through.
    load.wait_for_pushes(10, Duration::from_secs(180)).await;
    let stop_1_1_0 = format!("{OLD}={}", cluster.old_image);
    let extra = ["--image", stop_1_1_0.as_str()];

    // Killed while it waits for the replicas to run 1.1.0's background migration.
    let run = cluster
        .apply(&extra, |e| {
            if e["event"] == "waiting_for_migration" {
                Hook::Kill
            } else {
                Hook::Continue
            }
        })
        .await;
    assert!(
        run.killed
            && run
                .killed_at
                .as_ref()
                .is_some_and(|e| e["action"] == "metadatastoremigration"),
        "apply was not killed while waiting for metadatastoremigration: {}",
        run.describe()
    );
    let plan = run
        .events
        .iter()
        .find(|e| e["event"] == "plan")
        .unwrap_or_else(|| panic!("no plan event: {}", run.describe()));
    assert_eq!(
        plan["hops"],
        serde_json::json!([{"from": FIRST, "to": OLD}, {"from": OLD, "to": OWN}]),
        "{}",
        run.describe()
    );
    cluster.assert_all_on(&cluster.old_image, OLD).await;
    // `upgrade status` shows the hop under way: 1.1.0, all but its background step.
    let st = cluster.status().await;
    assert_eq!(
        (
            &st["data_version"],
            &st["upgrading_to"],
            &st["steps_done"],
            &st["steps_total"]
        ),
        (
            &serde_json::json!(OLD),
            &serde_json::json!(OLD),
            &serde_json::json!(7),
            &serde_json::json!(8)
        ),
        "{st:#}"
    );
    load.run_for(Duration::from_secs(1)).await;

    // Killed between the hops: the second hop has just started.
    let run = cluster
        .apply(&extra, |e| {
            if e["event"] == "start" && e["to"] == OWN {
                Hook::Kill
            } else {
                Hook::Continue
            }
        })
        .await;
    assert!(
        run.killed && run.killed_at.as_ref().is_some_and(|e| e["from"] == OLD),
        "apply was not killed between the hops: {}",
        run.describe()
    );
    let st = cluster.status().await;
    assert_eq!(st["data_version"], OLD, "{st:#}");
    load.run_for(Duration::from_secs(1)).await;

    // The rerun goes to the end.
    let run = cluster.apply(&extra, |_| Hook::Continue).await;
    run.assert_finished("upgrade apply after two interruptions");
    eprintln!("the last run:\n{}", run.describe());
    let st = cluster
        .wait_status(OWN, true, Duration::from_secs(180))
        .await;
    assert_eq!(st["schema_level"], OWN_LEVEL, "{st:#}");

    // 1.1.0's background migration finished before level 3 was expanded: in the
    // journal, and by the job's own record.
    let (background_at, background) = journalled(&cluster, FIRST, OLD, "background");
    let (expand_at, _) = journalled(&cluster, OLD, OWN, "expand");
    assert!(
        background_at <= expand_at,
        "background at {background_at}, expand at {expand_at}"
    );
    assert!(
        background.starts_with("metadatastoremigration done"),
        "{background}"
    );
    let jobs = cluster.psql(
        "SELECT status || ' ' || finished_at FROM jobs WHERE action = 'metadatastoremigration'",
    );
    let finished: Vec<(&str, i64)> = jobs
        .lines()
        .map(|l| {
            let (status, at) = l.split_once(' ').unwrap();
            (status, at.parse().unwrap())
        })
        .collect();
    assert!(
        !finished.is_empty()
            && finished
                .iter()
                .all(|(s, at)| *s == "done" && *at <= expand_at),
        "metadatastoremigration jobs: {jobs:?}, level 3 expanded at {expand_at}"
    );
    assert_eq!(
        cluster.psql("SELECT count(*) FROM manifests WHERE NOT refs_recorded"),
        "0"
    );
    let report = check_upgraded(&cluster, load).await;
    print_figures("multi-hop rolling upgrade from 1.0.0", &cluster, &report);
    report.assert_no_failures("multi-hop rolling upgrade");
}
