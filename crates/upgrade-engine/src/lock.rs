//! The upgrade lock: one upgrade at a time, whatever node runs it.

use anyhow::bail;
use wharf_metastore::MetaStore;

use crate::{Engine, Event};

/// A holder that has not renewed the lock for this long is presumed gone.
const LEASE_MS: i64 = 5 * 60_000;

impl Engine {
    /// Takes the upgrade lock for this process; returns the holder name.
    pub(crate) async fn take_lock(&self, meta: &dyn MetaStore) -> anyhow::Result<String> {
        let holder = format!("{}:{}", hostname(), std::process::id());
        if let Err(other) = meta.take_upgrade_lock(&holder, LEASE_MS).await? {
            // A holder on this host whose process is gone (killed, crashed) is taken
            // over at once; elsewhere, when it has not renewed the lock for 5 minutes.
            if holder_is_gone(&other) {
                self.emit(Event::LockTakenOver {
                    from: other.to_string(),
                });
                if let Err(again) = meta.take_upgrade_lock(&holder, 0).await? {
                    bail!("could not take over the upgrade lock from {again}");
                }
            } else {
                bail!("another upgrade holds the lock ({other}); it is taken over when it has not renewed it for 5 minutes");
            }
        }
        Ok(holder)
    }
}

impl Engine {
    /// Runs `work` (given the holder's name) holding the upgrade lock, renewed in the
    /// background all along; releases it afterwards, whatever `work` returned.
    pub(crate) async fn with_lock<T, F, Fut>(
        &self,
        meta: std::sync::Arc<dyn MetaStore>,
        work: F,
    ) -> anyhow::Result<T>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let holder = self.take_lock(meta.as_ref()).await?;
        let renewing = keep_renewed(meta.clone(), holder.clone());
        let result = work(holder.clone()).await;
        renewing.abort();
        meta.release_upgrade_lock(&holder).await?;
        result
    }
}

/// Renews the lock in the background, every fifth of its lease, while a step waits a
/// long time (a background migration may take hours): a run that is working is never
/// taken for gone. Stops at a takeover (the next step's [`renew`] then fails); abort
/// the task when the lock is released.
fn keep_renewed(
    meta: std::sync::Arc<dyn MetaStore>,
    holder: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = std::time::Duration::from_millis(LEASE_MS as u64 / 5);
        loop {
            tokio::time::sleep(every).await;
            match meta.take_upgrade_lock(&holder, LEASE_MS).await {
                Ok(Ok(())) => {}
                Ok(Err(other)) => {
                    tracing::warn!(%other, "the upgrade lock was taken over");
                    return;
                }
                // A failed renewal is retried; the lease outlasts several of them.
                Err(e) => tracing::warn!(error = %e, "could not renew the upgrade lock"),
            }
        }
    })
}

/// Renews the lock before a step: a holder that stops renewing is presumed gone.
pub(crate) async fn renew(meta: &dyn MetaStore, holder: &str) -> anyhow::Result<()> {
    if let Err(other) = meta.take_upgrade_lock(holder, LEASE_MS).await? {
        bail!("the upgrade lock was taken over by {other}");
    }
    Ok(())
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lock holder `HOST:PID` is a process of this host that no longer runs.
fn holder_is_gone(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == hostname()
        && pid
            .parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
}
