//! [`JobStore`] on PostgreSQL: claims take the oldest due job with `FOR UPDATE SKIP
//! LOCKED`, so replicas polling together never take the same one; a partial unique
//! index keeps one running job per action even when two claims race.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::{PgMetaStore, DB_NOW_MS};
use crate::jobs::{
    Cron, Job, JobStatus, JobStore, Lease, LogLine, NewJob, Outcome, Reaped, Worker,
    JOB_LOG_CAP_BYTES,
};
use crate::{MetaError, Result};

const JOB_COLUMNS: &str =
    "id, action, params, status, attempts, max_attempts, worker_id, cron, deadline, not_before,
     created_at, started_at, heartbeat_at, finished_at, progress, last_error";

fn job_row(r: &PgRow) -> Job {
    let status: String = r.get(3);
    Job {
        id: r.get(0),
        action: r.get(1),
        params: r.get(2),
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Error),
        attempts: r.get::<i64, _>(4) as u32,
        max_attempts: r.get::<i64, _>(5) as u32,
        worker_id: r.get(6),
        cron: r.get(7),
        deadline_ms: r.get(8),
        not_before_ms: r.get(9),
        created_at_ms: r.get(10),
        started_at_ms: r.get(11),
        heartbeat_at_ms: r.get(12),
        finished_at_ms: r.get(13),
        progress: r.get(14),
        last_error: r.get(15),
    }
}

async fn get_job(c: &mut PgConnection, id: i64) -> Result<Option<Job>> {
    Ok(sqlx::query(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(c)
    .await?
    .map(|r| job_row(&r)))
}

async fn insert_job(c: &mut PgConnection, job: &NewJob) -> Result<Job> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO jobs (action, params, status, max_attempts, cron, deadline, not_before, created_at)
         VALUES ($1, $2, 'waiting', $3, $4, $5, {DB_NOW_MS}, {DB_NOW_MS}) RETURNING {JOB_COLUMNS}"
    )))
    .bind(&job.action)
    .bind(&job.params)
    .bind(job.max_attempts as i64)
    .bind(&job.cron)
    .bind(job.deadline_ms)
    .fetch_one(c)
    .await?;
    Ok(job_row(&row))
}

async fn append_log(
    c: &mut PgConnection,
    job_id: i64,
    attempt: u32,
    lines: &[String],
) -> Result<()> {
    // The job row's lock orders concurrent appends to one log.
    let Some(row) = sqlx::query(
        "SELECT log_bytes, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_logs WHERE job_id = $1)
         FROM jobs WHERE id = $1 FOR UPDATE",
    )
    .bind(job_id)
    .fetch_optional(&mut *c)
    .await?
    else {
        return Err(MetaError::Conflict(format!("no job {job_id}")));
    };
    let (mut used, mut seq): (i64, i64) = (row.get(0), row.get(1));
    for line in lines {
        if used > JOB_LOG_CAP_BYTES {
            break;
        }
        let len = line.len() as i64 + 1;
        let text = if used + len > JOB_LOG_CAP_BYTES {
            used = JOB_LOG_CAP_BYTES;
            "(the log reached its size limit; later lines are not kept)"
        } else {
            line.as_str()
        };
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO job_logs (job_id, seq, at, attempt, line) VALUES ($1, $2, {DB_NOW_MS}, $3, $4)"
        )))
        .bind(job_id)
        .bind(seq)
        .bind(attempt as i64)
        .bind(text)
        .execute(&mut *c)
        .await?;
        used += len;
        seq += 1;
    }
    sqlx::query("UPDATE jobs SET log_bytes = $1 WHERE id = $2")
        .bind(used)
        .bind(job_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn cron_row(r: &PgRow) -> Cron {
    Cron {
        name: r.get(0),
        action: r.get(1),
        params: r.get(2),
        schedule: r.get(3),
        run_for_minutes: r.get::<Option<i64>, _>(4).map(|m| m as u32),
        enabled: r.get(5),
        next_run_at_ms: r.get(6),
        last_job_id: r.get(7),
    }
}

#[async_trait]
impl JobStore for PgMetaStore {
    async fn enqueue(&self, job: &NewJob) -> Result<Job> {
        let mut c = self.pool.acquire().await?;
        insert_job(&mut c, job).await
    }

    async fn claim(&self, worker_id: &str, actions: &[&str]) -> Result<Option<Job>> {
        let actions: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        let r = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = $1,
                    started_at = {DB_NOW_MS}, heartbeat_at = {DB_NOW_MS}, finished_at = NULL
             WHERE id = (SELECT id FROM jobs
                         WHERE status = 'waiting' AND not_before <= {DB_NOW_MS} AND action = ANY($2)
                           AND action NOT IN (SELECT action FROM jobs WHERE status IN ('running', 'cancel_request'))
                         ORDER BY status, (action = 'scan'), id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(worker_id)
        .bind(&actions)
        .fetch_optional(&self.pool)
        .await;
        match r {
            Ok(row) => Ok(row.map(|r| job_row(&r))),
            // Another worker started the same action a moment ago: nothing to take now.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn job_heartbeat(
        &self,
        job_id: i64,
        worker_id: &str,
        progress: Option<&str>,
    ) -> Result<Lease> {
        let status: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE jobs SET heartbeat_at = {DB_NOW_MS}, progress = COALESCE($1, progress)
             WHERE id = $2 AND worker_id = $3 AND status IN ('running', 'cancel_request') RETURNING status"
        )))
        .bind(progress)
        .bind(job_id)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match status.as_deref() {
            Some("running") => Lease::Held,
            Some(_) => Lease::CancelRequested,
            None => Lease::Lost,
        })
    }

    async fn finish_job(
        &self,
        job_id: i64,
        worker_id: &str,
        outcome: &Outcome,
    ) -> Result<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"
        )))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(job) = row.map(|r| job_row(&r)) else {
            return Ok(None);
        };
        let mine = job.worker_id.as_deref() == Some(worker_id)
            && matches!(job.status, JobStatus::Running | JobStatus::CancelRequest);
        if !mine {
            // Release the row lock now, not when the pool gets round to it: a claim
            // skips locked rows.
            tx.rollback().await?;
            return Ok(None);
        }
        let (status, error, retry_after): (&str, Option<&str>, i64) = match outcome {
            Outcome::Done => ("done", None, 0),
            Outcome::Cancelled => ("cancelled", None, 0),
            Outcome::Released if job.status == JobStatus::Running => ("released", None, 0),
            Outcome::Released => ("cancelled", None, 0),
            Outcome::Failed {
                error,
                retry_after_ms,
            } => {
                if job.attempts < job.max_attempts && job.status == JobStatus::Running {
                    ("waiting", Some(error.as_str()), *retry_after_ms)
                } else if job.status == JobStatus::CancelRequest {
                    ("cancelled", Some(error.as_str()), 0)
                } else {
                    ("error", Some(error.as_str()), 0)
                }
            }
        };
        if status == "released" {
            let row = sqlx::query(AssertSqlSafe(format!(
                "UPDATE jobs SET status = 'waiting', attempts = attempts - 1, worker_id = NULL,
                        not_before = {DB_NOW_MS}, heartbeat_at = {DB_NOW_MS}
                 WHERE id = $1 RETURNING {JOB_COLUMNS}"
            )))
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Some(job_row(&row)));
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = $1, last_error = COALESCE($2, last_error), heartbeat_at = {DB_NOW_MS},
                    finished_at = CASE WHEN $1 = 'waiting' THEN NULL ELSE {DB_NOW_MS} END,
                    worker_id = CASE WHEN $1 = 'waiting' THEN NULL ELSE worker_id END,
                    not_before = CASE WHEN $1 = 'waiting' THEN {DB_NOW_MS} + $3 ELSE not_before END
             WHERE id = $4 RETURNING {JOB_COLUMNS}"
        )))
        .bind(status)
        .bind(error)
        .bind(retry_after)
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(job_row(&row)))
    }

    async fn cancel_job(&self, job_id: i64) -> Result<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE jobs SET status = CASE status WHEN 'waiting' THEN 'cancelled' ELSE 'cancel_request' END,
                    finished_at = CASE status WHEN 'waiting' THEN {DB_NOW_MS} ELSE finished_at END
             WHERE id = $1 AND status IN ('waiting', 'running')"
        )))
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        let job = get_job(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn job(&self, job_id: i64) -> Result<Option<Job>> {
        let mut c = self.pool.acquire().await?;
        get_job(&mut c, job_id).await
    }

    async fn jobs(
        &self,
        action: Option<&str>,
        status: Option<JobStatus>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::TEXT IS NULL OR action = $1) AND ($2::TEXT IS NULL OR status = $2)
               AND ($3::BIGINT IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        )))
        .bind(action)
        .bind(status.map(|s| s.as_str()))
        .bind(before_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(job_row).collect())
    }

    async fn append_job_log(&self, job_id: i64, attempt: u32, lines: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        append_log(&mut tx, job_id, attempt, lines).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn job_log(&self, job_id: i64, after_seq: i64, limit: usize) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(
            "SELECT seq, at, attempt, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after_seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LogLine {
                seq: r.get(0),
                at_ms: r.get(1),
                attempt: r.get::<i64, _>(2) as u32,
                line: r.get(3),
            })
            .collect())
    }

    async fn reap_dead_jobs(&self, before_ms: i64) -> Result<Vec<Reaped>> {
        let mut tx = self.pool.begin().await?;
        let dead = sqlx::query(
            "SELECT id, worker_id, status, attempts, max_attempts FROM jobs
             WHERE status IN ('running', 'cancel_request') AND heartbeat_at < $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(before_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for row in dead {
            let (id, worker, status, attempts, max): (i64, String, String, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            let next = if status == "cancel_request" {
                JobStatus::Cancelled
            } else if attempts < max {
                JobStatus::Waiting
            } else {
                JobStatus::WorkerDead
            };
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE jobs SET status = $1, worker_id = NULL, not_before = {DB_NOW_MS},
                        finished_at = CASE WHEN $1 = 'waiting' THEN NULL ELSE {DB_NOW_MS} END, last_error = $2
                 WHERE id = $3"
            )))
            .bind(next.as_str())
            .bind(format!("worker_dead: worker {worker} stopped reporting"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let what = match next {
                JobStatus::Waiting => "queued again",
                JobStatus::Cancelled => "cancelled",
                _ => "no attempts left",
            };
            append_log(
                &mut tx,
                id,
                attempts as u32,
                &[format!("worker_dead: worker {worker} stopped reporting during attempt {attempts}; {what}")],
            )
            .await?;
            out.push(Reaped {
                job_id: id,
                worker_id: worker,
                status: next,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn worker_heartbeat(&self, w: &Worker) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO workers (id, address, version, actions, started_at, heartbeat_at, job_id)
             VALUES ($1, $2, $3, $4, $5, {DB_NOW_MS}, $6)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version,
               actions = excluded.actions, heartbeat_at = excluded.heartbeat_at, job_id = excluded.job_id"
        )))
        .bind(&w.id)
        .bind(&w.address)
        .bind(&w.version)
        .bind(&w.actions)
        .bind(w.started_at_ms)
        .bind(w.job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_worker(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn workers(&self) -> Result<(Vec<Worker>, i64)> {
        let rows = sqlx::query(
            "SELECT id, address, version, actions, started_at, heartbeat_at, job_id FROM workers ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let workers = rows
            .iter()
            .map(|r| Worker {
                id: r.get(0),
                address: r.get(1),
                version: r.get(2),
                actions: r.get(3),
                started_at_ms: r.get(4),
                heartbeat_at_ms: r.get(5),
                job_id: r.get(6),
            })
            .collect();
        Ok((workers, self.store_now().await?))
    }

    async fn expire_workers(&self, before_ms: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn put_cron(&self, c: &Cron) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO crons (name, action, params, schedule, run_for_minutes, enabled, next_run_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, {DB_NOW_MS})
             ON CONFLICT (name) DO UPDATE SET action = excluded.action, params = excluded.params,
               schedule = excluded.schedule, run_for_minutes = excluded.run_for_minutes,
               enabled = excluded.enabled, next_run_at = excluded.next_run_at, updated_at = excluded.updated_at"
        )))
        .bind(&c.name)
        .bind(&c.action)
        .bind(&c.params)
        .bind(&c.schedule)
        .bind(c.run_for_minutes.map(|m| m as i64))
        .bind(c.enabled)
        .bind(c.next_run_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_cron(&self, name: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM crons WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    async fn crons(&self) -> Result<Vec<Cron>> {
        let rows = sqlx::query(
            "SELECT name, action, params, schedule, run_for_minutes, enabled, next_run_at, last_job_id
             FROM crons ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(cron_row).collect())
    }

    async fn fire_cron(
        &self,
        name: &str,
        due_ms: i64,
        next_ms: i64,
        job: &NewJob,
    ) -> Result<Option<Job>> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE crons SET next_run_at = $1 WHERE name = $2 AND next_run_at = $3 AND enabled",
        )
        .bind(next_ms)
        .bind(name)
        .bind(due_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let queued = insert_job(&mut tx, job).await?;
        sqlx::query("UPDATE crons SET last_job_id = $1 WHERE name = $2")
            .bind(queued.id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(queued))
    }

    async fn store_now(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT {DB_NOW_MS}")))
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
