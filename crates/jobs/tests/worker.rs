//! The worker runtime against a real (SQLite) store: outcomes, retries, cancellation,
//! hand-back on shutdown, and a dead worker's job finished by another.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use wharf_jobs::{Action, Finished, JobContext, Worker, WorkerConfig};
use wharf_metastore::jobs::{JobStatus, NewJob};
use wharf_metastore::{MetaStore, SqliteMetaStore};

/// Succeeds after failing `fail_first` times; with `steps`, works in steps until told
/// to stop.
struct TestAction {
    name: &'static str,
    fail_first: u32,
    steps: u32,
    runs: AtomicU32,
}

#[async_trait]
impl Action for TestAction {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        if run <= self.fail_first {
            anyhow::bail!("failure number {run}");
        }
        for step in 0..self.steps {
            if let Some(why) = ctx.should_stop() {
                return Ok(Finished::Stopped(why, format!("stopped at step {step}")));
            }
            ctx.progress(step as u64, self.steps as u64, "stepping");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.log("worked").await;
        Ok(Finished::Done(format!("run {run} finished")))
    }
}

fn action(name: &'static str, fail_first: u32, steps: u32) -> Arc<TestAction> {
    Arc::new(TestAction {
        name,
        fail_first,
        steps,
        runs: AtomicU32::new(0),
    })
}

fn fast() -> WorkerConfig {
    WorkerConfig::with_heartbeat(Duration::from_millis(100), Duration::from_millis(50))
}

async fn store() -> (Arc<dyn MetaStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteMetaStore::open(dir.path().join("m.db"))
        .await
        .unwrap();
    (Arc::new(s), dir)
}

/// Polls until the job reaches a final status (bounded).
async fn wait_final(store: &dyn MetaStore, id: i64) -> wharf_metastore::jobs::Job {
    for _ in 0..600 {
        let j = store.job(id).await.unwrap().unwrap();
        if j.status.is_final() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} did not finish in 15 s");
}

async fn log_lines(store: &dyn MetaStore, id: i64) -> Vec<String> {
    store
        .job_log(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.line)
        .collect()
}

fn start(worker: Arc<Worker>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    (tx, tokio::spawn(worker.run(rx)))
}

#[tokio::test]
async fn a_job_runs_to_done_with_its_log_and_progress() {
    let (store, _d) = store().await;
    let a = action("demo", 0, 3);
    let w = Worker::new("http://r1", "1.1.0", store.clone(), vec![a.clone()], fast());
    let (stop, handle) = start(w);
    let job = wharf_jobs::enqueue(store.as_ref(), "demo", "{}")
        .await
        .unwrap();
    let done = wait_final(store.as_ref(), job.id).await;
    assert_eq!((done.status, done.attempts), (JobStatus::Done, 1));
    let progress: serde_json::Value =
        serde_json::from_str(done.progress.as_deref().unwrap()).unwrap();
    assert_eq!(progress["total"], 3);
    let log = log_lines(store.as_ref(), job.id).await;
    assert!(log[0].starts_with("attempt 1 of 3 started"), "{log:?}");
    assert!(
        log.iter().any(|l| l == "worked") && log.last().unwrap().starts_with("done: run 1"),
        "{log:?}"
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
    assert!(
        store.workers().await.unwrap().0.is_empty(),
        "a stopped worker deregisters"
    );
}

#[tokio::test]
async fn a_failing_job_ends_in_error_after_three_attempts_and_can_be_queued_again() {
    let (store, _d) = store().await;
    let a = action("flaky", 3, 0);
    let (stop, handle) = start(Worker::new(
        "http://r1",
        "1.1.0",
        store.clone(),
        vec![a.clone()],
        fast(),
    ));
    let job = wharf_jobs::enqueue(store.as_ref(), "flaky", "{}")
        .await
        .unwrap();
    let end = wait_final(store.as_ref(), job.id).await;
    assert_eq!((end.status, end.attempts), (JobStatus::Error, 3));
    assert_eq!(end.last_error.as_deref(), Some("failure number 3"));
    let log = log_lines(store.as_ref(), job.id).await;
    let failures: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("failed: failure number"))
        .collect();
    assert_eq!(failures.len(), 3, "{log:?}");
    assert!(failures[2].contains("no attempts left"), "{log:?}");
    // Queued again by hand, it runs (the action now succeeds).
    let again = wharf_jobs::enqueue(store.as_ref(), "flaky", "{}")
        .await
        .unwrap();
    assert_eq!(
        wait_final(store.as_ref(), again.id).await.status,
        JobStatus::Done
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it() {
    let (store, _d) = store().await;
    let a = action("long", 0, 10_000);
    let (stop, handle) = start(Worker::new(
        "http://r1",
        "1.1.0",
        store.clone(),
        vec![a],
        fast(),
    ));
    let job = wharf_jobs::enqueue(store.as_ref(), "long", "{}")
        .await
        .unwrap();
    for _ in 0..400 {
        if store.job(job.id).await.unwrap().unwrap().status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    store.cancel_job(job.id).await.unwrap();
    let end = wait_final(store.as_ref(), job.id).await;
    assert_eq!(end.status, JobStatus::Cancelled);
    assert!(log_lines(store.as_ref(), job.id)
        .await
        .iter()
        .any(|l| l.starts_with("cancelled: stopped at step")));
    stop.send(true).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_stopping_worker_hands_its_job_back_and_another_finishes_it() {
    let (store, _d) = store().await;
    let a = action("long", 0, 30);
    let (stop1, h1) = start(Worker::new(
        "http://r1",
        "1.1.0",
        store.clone(),
        vec![a.clone()],
        fast(),
    ));
    let job = wharf_jobs::enqueue(store.as_ref(), "long", "{}")
        .await
        .unwrap();
    for _ in 0..400 {
        if store.job(job.id).await.unwrap().unwrap().status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop1.send(true).unwrap();
    h1.await.unwrap();
    let back = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (back.status, back.attempts),
        (JobStatus::Waiting, 0),
        "handed back, attempt not counted"
    );
    let (stop2, h2) = start(Worker::new(
        "http://r2",
        "1.1.0",
        store.clone(),
        vec![a],
        fast(),
    ));
    let end = wait_final(store.as_ref(), job.id).await;
    assert_eq!((end.status, end.attempts), (JobStatus::Done, 1));
    assert!(log_lines(store.as_ref(), job.id)
        .await
        .iter()
        .any(|l| l.contains("handed back")));
    stop2.send(true).unwrap();
    h2.await.unwrap();
}

#[tokio::test]
async fn a_dead_workers_job_is_finished_by_another() {
    let (store, _d) = store().await;
    let job = store
        .enqueue(&NewJob {
            action: "demo".into(),
            params: "{}".into(),
            max_attempts: 3,
            deadline_ms: None,
            cron: None,
        })
        .await
        .unwrap();
    // A worker takes it and is never heard from again.
    store.claim("ghost", &["demo"]).await.unwrap().unwrap();
    let (stop, handle) = start(Worker::new(
        "http://r2",
        "1.1.0",
        store.clone(),
        vec![action("demo", 0, 1)],
        fast(),
    ));
    let end = wait_final(store.as_ref(), job.id).await;
    assert_eq!((end.status, end.attempts), (JobStatus::Done, 2));
    let log = log_lines(store.as_ref(), job.id).await;
    assert!(
        log.iter()
            .any(|l| l.contains("worker_dead") && l.contains("ghost")),
        "{log:?}"
    );
    stop.send(true).unwrap();
    handle.await.unwrap();
}
