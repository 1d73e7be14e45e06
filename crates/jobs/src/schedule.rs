//! Schedules: a cron expression (minute hour day-of-month month day-of-week, in UTC)
//! that queues a job each time it comes round, run until done or for N minutes.

use chrono::{DateTime, TimeZone, Utc};
use wharf_metastore::jobs::NewJob;
use wharf_metastore::MetaStore;

use crate::DEFAULT_ATTEMPTS;

/// The first time after `after_ms` that `schedule` names, in ms; an error says what is
/// wrong with the expression.
pub fn next_after(schedule: &str, after_ms: i64) -> anyhow::Result<i64> {
    let cron = croner::Cron::new(schedule).parse().map_err(|e| {
        anyhow::anyhow!(
            "{schedule:?} is not a cron expression (minute hour day month weekday): {e}"
        )
    })?;
    let after: DateTime<Utc> = Utc
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or_else(|| anyhow::anyhow!("time {after_ms} is out of range"))?;
    let next = cron
        .find_next_occurrence(&after, false)
        .map_err(|e| anyhow::anyhow!("{schedule:?} never comes round: {e}"))?;
    Ok(next.timestamp_millis())
}

/// Queues the job of every schedule that is due at `now_ms` (store clock). Replicas
/// all do this; the store lets one of them win each time.
pub async fn fire_due(store: &dyn MetaStore, now_ms: i64) {
    let crons = match store.crons().await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "cannot read schedules"),
    };
    for c in crons
        .into_iter()
        .filter(|c| c.enabled && c.next_run_at_ms <= now_ms)
    {
        let next = match next_after(&c.schedule, now_ms) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(cron = %c.name, error = %e, "schedule cannot be computed");
                continue;
            }
        };
        let job = NewJob {
            action: c.action.clone(),
            params: c.params.clone(),
            max_attempts: DEFAULT_ATTEMPTS,
            deadline_ms: c.run_for_minutes.map(|m| now_ms + m as i64 * 60_000),
            cron: Some(c.name.clone()),
        };
        match store.fire_cron(&c.name, c.next_run_at_ms, next, &job).await {
            Ok(Some(j)) => tracing::info!(cron = %c.name, job = j.id, "schedule queued a job"),
            Ok(None) => {}
            Err(e) => tracing::warn!(cron = %c.name, error = %e, "could not fire a schedule"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_times_and_bad_expressions() {
        // 2026-11-24 02:00:00 UTC
        let t = Utc
            .with_ymd_and_hms(2026, 11, 24, 2, 0, 0)
            .unwrap()
            .timestamp_millis();
        let next = next_after("0 3 * * *", t).unwrap();
        assert_eq!(next - t, 3_600_000);
        assert_eq!(next_after("*/15 * * * *", t).unwrap() - t, 15 * 60_000);
        let err = next_after("every day", t).unwrap_err().to_string();
        assert!(err.contains("not a cron expression"), "{err}");
    }
}
