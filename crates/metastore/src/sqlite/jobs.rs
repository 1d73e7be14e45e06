//! [`JobStore`] on SQLite: every change is one write transaction on the single writer,
//! which is what makes claiming safe here.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteMetaStore;
use crate::jobs::{
    Cron, Job, JobStatus, JobStore, Lease, LogLine, NewJob, Outcome, Reaped, Worker,
    JOB_LOG_CAP_BYTES,
};
use crate::{now_ms, MetaError, Result};

const JOB_COLUMNS: &str =
    "id, action, params, status, attempts, max_attempts, worker_id, cron, deadline, not_before,
     created_at, started_at, heartbeat_at, finished_at, progress, last_error";

fn job_row(r: &Row) -> rusqlite::Result<Job> {
    let status: String = r.get(3)?;
    Ok(Job {
        id: r.get(0)?,
        action: r.get(1)?,
        params: r.get(2)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Error),
        attempts: r.get(4)?,
        max_attempts: r.get(5)?,
        worker_id: r.get(6)?,
        cron: r.get(7)?,
        deadline_ms: r.get(8)?,
        not_before_ms: r.get(9)?,
        created_at_ms: r.get(10)?,
        started_at_ms: r.get(11)?,
        heartbeat_at_ms: r.get(12)?,
        finished_at_ms: r.get(13)?,
        progress: r.get(14)?,
        last_error: r.get(15)?,
    })
}

fn get_job(c: &Connection, id: i64) -> rusqlite::Result<Option<Job>> {
    c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))?
        .query_row([id], job_row)
        .optional()
}

pub(super) fn insert_job(c: &Connection, job: &NewJob, now: i64) -> Result<Job> {
    c.execute(
        "INSERT INTO jobs (action, params, status, max_attempts, cron, deadline, not_before, created_at)
         VALUES (?, ?, 'waiting', ?, ?, ?, ?, ?)",
        params![job.action, job.params, job.max_attempts, job.cron, job.deadline_ms, now, now],
    )?;
    Ok(get_job(c, c.last_insert_rowid())?.expect("just inserted"))
}

/// Appends log lines within the cap; the line that reaches it says the log stops.
fn append_log(c: &Connection, job_id: i64, attempt: u32, lines: &[String]) -> Result<()> {
    let Some((used, next)): Option<(i64, i64)> = c
        .query_row(
            "SELECT log_bytes, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_logs WHERE job_id = ?1) FROM jobs WHERE id = ?1",
            [job_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
    else {
        return Err(MetaError::Conflict(format!("no job {job_id}")));
    };
    let (mut used, mut seq) = (used, next);
    let now = now_ms();
    let mut st = c.prepare_cached(
        "INSERT INTO job_logs (job_id, seq, at, attempt, line) VALUES (?, ?, ?, ?, ?)",
    )?;
    for line in lines {
        if used > JOB_LOG_CAP_BYTES {
            break;
        }
        let len = line.len() as i64 + 1;
        if used + len > JOB_LOG_CAP_BYTES {
            st.execute(params![
                job_id,
                seq,
                now,
                attempt,
                "(the log reached its size limit; later lines are not kept)"
            ])?;
            used = JOB_LOG_CAP_BYTES + 1;
            break;
        }
        st.execute(params![job_id, seq, now, attempt, line])?;
        used += len;
        seq += 1;
    }
    c.execute(
        "UPDATE jobs SET log_bytes = ? WHERE id = ?",
        params![used, job_id],
    )?;
    Ok(())
}

fn cron_row(r: &Row) -> rusqlite::Result<Cron> {
    Ok(Cron {
        name: r.get(0)?,
        action: r.get(1)?,
        params: r.get(2)?,
        schedule: r.get(3)?,
        run_for_minutes: r.get(4)?,
        enabled: r.get::<_, i64>(5)? != 0,
        next_run_at_ms: r.get(6)?,
        last_job_id: r.get(7)?,
    })
}

#[async_trait]
impl JobStore for SqliteMetaStore {
    async fn enqueue(&self, job: &NewJob) -> Result<Job> {
        let job = job.clone();
        self.write(move |tx| insert_job(tx, &job, now_ms())).await
    }

    async fn claim(&self, worker_id: &str, actions: &[&str]) -> Result<Option<Job>> {
        let worker_id = worker_id.to_string();
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        self.write(move |tx| {
            let now = now_ms();
            let list = actions.iter().map(|_| "?").collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT id FROM jobs WHERE status = 'waiting' AND not_before <= ? AND action IN ({list})
                   AND action NOT IN (SELECT action FROM jobs WHERE status IN ('running', 'cancel_request'))
                 ORDER BY status, (action = 'scan'), id LIMIT 1"
            );
            let mut values: Vec<rusqlite::types::Value> = vec![now.into()];
            values.extend(actions.iter().map(|a| a.clone().into()));
            let id: Option<i64> = tx
                .prepare(&sql)?
                .query_row(rusqlite::params_from_iter(values), |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            tx.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = ?, started_at = ?,
                        heartbeat_at = ?, finished_at = NULL WHERE id = ?",
                params![worker_id, now, now, id],
            )?;
            Ok(get_job(tx, id)?)
        })
        .await
    }

    async fn job_heartbeat(
        &self,
        job_id: i64,
        worker_id: &str,
        progress: Option<&str>,
    ) -> Result<Lease> {
        let worker_id = worker_id.to_string();
        let progress = progress.map(str::to_string);
        // Relaxed: a lost heartbeat is replaced by the next one.
        self.write_relaxed(move |tx| {
            let status: Option<String> = tx
                .query_row(
                    "UPDATE jobs SET heartbeat_at = ?, progress = COALESCE(?, progress)
                     WHERE id = ? AND worker_id = ? AND status IN ('running', 'cancel_request') RETURNING status",
                    params![now_ms(), progress, job_id, worker_id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match status.as_deref() {
                Some("running") => Lease::Held,
                Some(_) => Lease::CancelRequested,
                None => Lease::Lost,
            })
        })
        .await
    }

    async fn finish_job(
        &self,
        job_id: i64,
        worker_id: &str,
        outcome: &Outcome,
    ) -> Result<Option<Job>> {
        let worker_id = worker_id.to_string();
        let outcome = outcome.clone();
        self.write(move |tx| {
            let now = now_ms();
            let Some(job) = get_job(tx, job_id)? else { return Ok(None) };
            let mine = job.worker_id.as_deref() == Some(worker_id.as_str())
                && matches!(job.status, JobStatus::Running | JobStatus::CancelRequest);
            if !mine {
                return Ok(None);
            }
            match &outcome {
                Outcome::Done => {
                    tx.execute(
                        "UPDATE jobs SET status = 'done', finished_at = ?, heartbeat_at = ? WHERE id = ?",
                        params![now, now, job_id],
                    )?;
                }
                Outcome::Released if job.status == JobStatus::Running => {
                    tx.execute(
                        "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker_id = NULL,
                                not_before = ?, heartbeat_at = ? WHERE id = ?",
                        params![now, now, job_id],
                    )?;
                }
                Outcome::Cancelled | Outcome::Released => {
                    tx.execute(
                        "UPDATE jobs SET status = 'cancelled', finished_at = ?, heartbeat_at = ? WHERE id = ?",
                        params![now, now, job_id],
                    )?;
                }
                Outcome::Failed { error, retry_after_ms } => {
                    let retry = job.attempts < job.max_attempts && job.status == JobStatus::Running;
                    if retry {
                        tx.execute(
                            "UPDATE jobs SET status = 'waiting', worker_id = NULL, last_error = ?, not_before = ?,
                                    heartbeat_at = ? WHERE id = ?",
                            params![error, now + retry_after_ms, now, job_id],
                        )?;
                    } else {
                        let status = if job.status == JobStatus::CancelRequest { "cancelled" } else { "error" };
                        tx.execute(
                            "UPDATE jobs SET status = ?, last_error = ?, finished_at = ?, heartbeat_at = ? WHERE id = ?",
                            params![status, error, now, now, job_id],
                        )?;
                    }
                }
            }
            Ok(get_job(tx, job_id)?)
        })
        .await
    }

    async fn cancel_job(&self, job_id: i64) -> Result<Option<Job>> {
        self.write(move |tx| {
            let now = now_ms();
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'waiting'",
                params![now, job_id],
            )?;
            tx.execute(
                "UPDATE jobs SET status = 'cancel_request' WHERE id = ? AND status = 'running'",
                [job_id],
            )?;
            Ok(get_job(tx, job_id)?)
        })
        .await
    }

    async fn job(&self, job_id: i64) -> Result<Option<Job>> {
        self.read(move |c| Ok(get_job(c, job_id)?)).await
    }

    async fn jobs(
        &self,
        action: Option<&str>,
        status: Option<JobStatus>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let action = action.map(str::to_string);
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![action, status.map(|s| s.as_str()), before_id, limit as i64],
                job_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn append_job_log(&self, job_id: i64, attempt: u32, lines: &[String]) -> Result<()> {
        let lines = lines.to_vec();
        self.write_relaxed(move |tx| append_log(tx, job_id, attempt, &lines))
            .await
    }

    async fn job_log(&self, job_id: i64, after_seq: i64, limit: usize) -> Result<Vec<LogLine>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, at, attempt, line FROM job_logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            )?;
            let rows = st.query_map(params![job_id, after_seq, limit as i64], |r| {
                Ok(LogLine {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    attempt: r.get(2)?,
                    line: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn reap_dead_jobs(&self, before_ms: i64) -> Result<Vec<Reaped>> {
        self.write(move |tx| {
            let now = now_ms();
            let dead: Vec<(i64, String, String, u32, u32)> = {
                let mut st = tx.prepare(
                    "SELECT id, worker_id, status, attempts, max_attempts FROM jobs
                     WHERE status IN ('running', 'cancel_request') AND heartbeat_at < ?",
                )?;
                let rows = st.query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let mut out = Vec::new();
            for (id, worker, status, attempts, max) in dead {
                let next = if status == "cancel_request" {
                    JobStatus::Cancelled
                } else if attempts < max {
                    JobStatus::Waiting
                } else {
                    JobStatus::WorkerDead
                };
                let finished = next.is_final().then_some(now);
                tx.execute(
                    "UPDATE jobs SET status = ?, worker_id = NULL, finished_at = ?, not_before = ?,
                            last_error = ? WHERE id = ?",
                    params![next.as_str(), finished, now, format!("worker_dead: worker {worker} stopped reporting"), id],
                )?;
                let what = match next {
                    JobStatus::Waiting => "queued again",
                    JobStatus::Cancelled => "cancelled",
                    _ => "no attempts left",
                };
                append_log(
                    tx,
                    id,
                    attempts,
                    &[format!("worker_dead: worker {worker} stopped reporting during attempt {attempts}; {what}")],
                )?;
                out.push(Reaped { job_id: id, worker_id: worker, status: next });
            }
            Ok(out)
        })
        .await
    }

    async fn worker_heartbeat(&self, w: &Worker) -> Result<()> {
        let w = w.clone();
        self.write_relaxed(move |tx| {
            tx.execute(
                "INSERT INTO workers (id, address, version, actions, started_at, heartbeat_at, job_id)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
                   actions = excluded.actions, heartbeat_at = excluded.heartbeat_at, job_id = excluded.job_id",
                params![w.id, w.address, w.version, w.actions, w.started_at_ms, now_ms(), w.job_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM workers WHERE id = ?", [id])?;
            Ok(())
        })
        .await
    }

    async fn workers(&self) -> Result<(Vec<Worker>, i64)> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, address, version, actions, started_at, heartbeat_at, job_id FROM workers ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Worker {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    version: r.get(2)?,
                    actions: r.get(3)?,
                    started_at_ms: r.get(4)?,
                    heartbeat_at_ms: r.get(5)?,
                    job_id: r.get(6)?,
                })
            })?;
            Ok((rows.collect::<rusqlite::Result<Vec<_>>>()?, now_ms()))
        })
        .await
    }

    async fn expire_workers(&self, before_ms: i64) -> Result<u64> {
        self.write(move |tx| {
            Ok(tx.execute("DELETE FROM workers WHERE heartbeat_at < ?", [before_ms])? as u64)
        })
        .await
    }

    async fn put_cron(&self, cron: &Cron) -> Result<()> {
        let c = cron.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO crons (name, action, params, schedule, run_for_minutes, enabled, next_run_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET action = excluded.action, params = excluded.params,
                   schedule = excluded.schedule, run_for_minutes = excluded.run_for_minutes,
                   enabled = excluded.enabled, next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
                params![c.name, c.action, c.params, c.schedule, c.run_for_minutes, c.enabled as i64, c.next_run_at_ms, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_cron(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx| Ok(tx.execute("DELETE FROM crons WHERE name = ?", [name])? > 0))
            .await
    }

    async fn crons(&self) -> Result<Vec<Cron>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT name, action, params, schedule, run_for_minutes, enabled, next_run_at, last_job_id
                 FROM crons ORDER BY name",
            )?;
            let rows = st.query_map([], cron_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn fire_cron(
        &self,
        name: &str,
        due_ms: i64,
        next_ms: i64,
        job: &NewJob,
    ) -> Result<Option<Job>> {
        let name = name.to_string();
        let job = job.clone();
        self.write(move |tx| {
            let moved = tx.execute(
                "UPDATE crons SET next_run_at = ? WHERE name = ? AND next_run_at = ? AND enabled = 1",
                params![next_ms, name, due_ms],
            )?;
            if moved == 0 {
                return Ok(None);
            }
            let queued = insert_job(tx, &job, now_ms())?;
            tx.execute("UPDATE crons SET last_job_id = ? WHERE name = ?", params![queued.id, name])?;
            Ok(Some(queued))
        })
        .await
    }

    async fn store_now(&self) -> Result<i64> {
        Ok(now_ms())
    }
}
