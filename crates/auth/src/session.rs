//! Web UI sessions. A session is a short-lived credential of one user, kept like an
//! access token (a row of `access_tokens` holding only the SHA-256 of its secret, with
//! an expiry, a last-use time and a revocation time), so every replica sees it, disabling
//! the user or revoking the row ends it at once, and no schema change was needed.
//!
//! Two things keep sessions and API tokens apart: the secret's prefix
//! ([`SESSION_PREFIX`], which is not [`secret::TOKEN_PREFIX`], so a session's secret is
//! never taken as an access token) and the row's label ([`SESSION_LABEL`], which access
//! tokens may not use, so an access token is never taken as a session).

use wharf_metastore::accounts::User;
use wharf_metastore::now_ms;

use crate::secret;

/// The secret in the session cookie starts with this.
pub const SESSION_PREFIX: &str = "wharfsession_";
/// The label of a session's row; refused for access tokens.
pub const SESSION_LABEL: &str = "web session";
/// A session ends this long after sign-in, whatever happens.
pub const ABSOLUTE_LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// … or after this long without a request.
pub const IDLE_LIFETIME_MS: i64 = 2 * 3600 * 1000;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// The row in `access_tokens`.
    pub id: i64,
    /// The per-session anti-CSRF token that forms carry (derived from the secret, which
    /// only the browser holds, in an HttpOnly cookie).
    pub csrf: String,
    pub expires_at_ms: i64,
}

pub(crate) fn new_secret() -> String {
    format!(
        "{SESSION_PREFIX}{}",
        hex::encode(secret::random_bytes::<32>())
    )
}

/// The CSRF token of the session whose secret is `secret_`: a hash under its own
/// domain, so it reveals nothing of the secret.
pub(crate) fn csrf_token(secret_: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"wharf csrf\0")
        .chain_update(secret_.as_bytes())
        .finalize();
    hex::encode(&digest[..20])
}

/// Compares two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a session row is still good at `now`: not revoked, not past its expiry, and
/// used recently enough.
pub(crate) fn alive(t: &wharf_metastore::accounts::AccessToken, user: &User, now: i64) -> bool {
    let last = t.last_used_at_ms.unwrap_or(t.created_at_ms);
    t.label == SESSION_LABEL
        && t.revoked_at_ms.is_none()
        && t.expires_at_ms.is_some_and(|e| e > now)
        && now - last < IDLE_LIFETIME_MS
        && !user.disabled
}

pub(crate) fn expiry_from(now: i64) -> i64 {
    now + ABSOLUTE_LIFETIME_MS
}

pub(crate) fn now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(SESSION_PREFIX) && !a.starts_with(secret::TOKEN_PREFIX));
        assert_ne!(csrf_token(&a), csrf_token(&b));
        assert!(constant_time_eq(&csrf_token(&a), &csrf_token(&a)));
        assert!(!constant_time_eq(&csrf_token(&a), &csrf_token(&b)));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
