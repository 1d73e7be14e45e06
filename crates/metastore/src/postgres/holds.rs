//! Upload sessions held across replicas: a session-level advisory lock, keyed by the
//! upload's id, on a connection kept for as long as the hold lasts.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use wharf_oci::UploadId;

use crate::{Result, UploadHold};

/// Uploads one replica may hold at once (each holds a connection); more wait.
pub const MAX_HELD_UPLOADS: u32 = 64;

/// The advisory-lock key of an upload: a 64-bit FNV-1a hash of its id, in a namespace
/// of its own. Two ids that collide only wait for each other.
fn key(id: &UploadId) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"wharf-upload-hold\0".iter().chain(id.as_str().as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// Waits for the lock in a task of its own: if the caller gives up (its client went
/// away), the task still finishes the wait and lets go at once, so no connection is
/// left half-way through a query or holding a lock nobody owns.
pub async fn hold(pool: &PgPool, id: &UploadId) -> Result<UploadHold> {
    let (pool, key) = (pool.clone(), key(id));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let locked = async {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            Ok::<_, sqlx::Error>(conn)
        }
        .await;
        if let Err(Ok(conn)) = tx.send(locked) {
            release(conn, key); // the caller is gone
        }
    });
    let conn = rx
        .await
        .map_err(|_| crate::MetaError::Backend("the upload hold task failed".into()))??;
    Ok(UploadHold::new(Held {
        conn: Some(conn),
        key,
    }))
}

struct Held {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            release(conn, self.key);
        }
    }
}

/// Unlocks and returns the connection to the pool; if that cannot be done, closes the
/// connection, which releases its locks too.
fn release(mut conn: PoolConnection<Postgres>, key: i64) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await;
                if !matches!(unlocked, Ok(true)) {
                    drop(conn.detach());
                }
            });
        }
        Err(_) => drop(conn.detach()),
    }
}
