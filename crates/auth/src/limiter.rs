//! Failed-login rate limits, per account and per client address, so passwords cannot be
//! guessed at speed. Counted per replica, in memory: behind a balancer with N replicas
//! an attacker gets at most N times the budget, which still stops guessing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_account: u32,
    pub per_address: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_account: 10,
            per_address: 50,
            window: Duration::from_secs(300),
        }
    }
}

/// Keeps at most this many counters; expired ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

pub struct FailedLogins {
    limits: Limits,
    counters: Mutex<HashMap<String, (u32, Instant)>>,
}

impl FailedLogins {
    pub fn new(limits: Limits) -> Self {
        FailedLogins {
            limits,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// The counters an attempt counts against; an empty key counts nothing. An access
    /// token presented alone names no account (its 256 random bits cannot be guessed),
    /// so only its address is limited: one client's bad token must not lock out every
    /// other token holder.
    fn keys(account: &str, addr: Option<IpAddr>) -> [(String, bool); 2] {
        let a = addr.map(|a| format!("ip:{a}")).unwrap_or_default();
        let u = if account.is_empty() {
            String::new()
        } else {
            format!("user:{account}")
        };
        [(u, true), (a, false)]
    }

    /// `Err(seconds to wait)` when the account or the address has failed too often.
    pub fn check(&self, account: &str, addr: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        let map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (key, is_account) in Self::keys(account, addr) {
            let limit = if is_account {
                self.limits.per_account
            } else {
                self.limits.per_address
            };
            if let Some((count, start)) = map.get(&key) {
                let age = now.duration_since(*start);
                if age < self.limits.window && *count >= limit {
                    return Err((self.limits.window - age).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, account: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            let window = self.limits.window;
            map.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
        for (key, _) in Self::keys(account, addr) {
            if key.is_empty() {
                continue;
            }
            let entry = map.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) >= self.limits.window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    /// A successful login clears the account's count (not the address's).
    pub fn succeeded(&self, account: &str) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("user:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_account_and_address() {
        let l = FailedLogins::new(Limits {
            per_account: 3,
            per_address: 5,
            window: Duration::from_secs(60),
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check("alice", Some(ip)).is_ok());
            l.failed("alice", Some(ip));
        }
        assert!(l.check("alice", Some(ip)).is_err(), "account limit");
        assert!(l.check("bob", Some(ip)).is_ok());
        l.failed("bob", Some(ip));
        l.failed("carol", Some(ip));
        assert!(l.check("dave", Some(ip)).is_err(), "address limit");
        assert!(l.check("dave", Some("127.0.0.2".parse().unwrap())).is_ok());
        l.succeeded("alice");
        assert!(l.check("alice", Some("127.0.0.2".parse().unwrap())).is_ok());
        // Attempts that name no account count only against their address.
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..10 {
            l.failed("", Some(other));
        }
        assert!(l.check("", Some(other)).is_err(), "address limit");
        assert!(l.check("", Some("127.0.0.4".parse().unwrap())).is_ok());
    }
}
