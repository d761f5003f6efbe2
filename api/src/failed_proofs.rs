//! Limits on failed password proofs (Basic auth), per username and per
//! client address, so guessing passwords costs the guesser time, not the
//! server argon2 work without end.
//!
//! Each attempt takes a slot *before* its proof and gives it back when the
//! proof succeeds: 60 concurrent wrong passwords cannot all pass a check
//! made before any of them was recorded. A name or address out of slots
//! gets `429 rate_limited` with `Retry-After` (its window's remaining
//! seconds) and no proof is run. A credential proven within the last
//! minute is answered from memory before this limiter is asked, so its
//! holder keeps working while someone else guesses at the same username.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{ApiError, Code};
use crate::fixed_window::{Counter, Slot};

/// Failed proofs allowed per window and the window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_username: u32,
    pub per_client: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_username: 10,
            per_client: 50,
            window: Duration::from_secs(60),
        }
    }
}

/// The two limits together.
pub struct FailedProofs {
    by_username: Counter,
    by_client: Counter,
}

/// Slots held by one attempt: kept when it is dropped (a failed proof
/// counts), given back by `uncounted`.
#[must_use]
pub struct Attempt {
    slots: [Slot; 2],
}

impl Attempt {
    /// The attempt does not count against either limit: its proof
    /// succeeded, or it could not be made (the database was down).
    pub fn uncounted(self) {
        for slot in self.slots {
            slot.give_back();
        }
    }
}

impl FailedProofs {
    pub fn new(limits: Limits) -> Self {
        Self {
            by_username: Counter::new(limits.per_username, limits.window),
            by_client: Counter::new(limits.per_client, limits.window),
        }
    }

    /// Takes a slot for `username` and for `client`, or answers `429` with
    /// the longer wait. Usernames are compared as sent (at most their first
    /// 128 bytes: a longer one cannot exist anyway).
    pub fn attempt(&self, username: &str, client: Option<IpAddr>) -> Result<Attempt, ApiError> {
        let client = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let username = truncated(username, 128);
        let by_client = self.by_client.take(&client).map_err(limited)?;
        match self.by_username.take(username) {
            Ok(by_username) => Ok(Attempt {
                slots: [by_client, by_username],
            }),
            Err(wait) => {
                by_client.give_back();
                Err(limited(wait))
            }
        }
    }
}

fn limited(wait: Duration) -> ApiError {
    // Whole seconds, at least one: `Retry-After: 0` would invite a retry
    // that is refused again.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(Code::RateLimited).with_retry_after(secs.max(1))
}

fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn failures_count_successes_do_not() {
        let limits = Limits {
            per_username: 3,
            per_client: 100,
            window: Duration::from_secs(60),
        };
        let f = FailedProofs::new(limits);
        for _ in 0..10 {
            f.attempt("alice", ip(1)).unwrap().uncounted();
        }
        for _ in 0..3 {
            drop(f.attempt("alice", ip(1)).unwrap());
        }
        let e = f.attempt("alice", ip(2)).err().unwrap();
        assert_eq!(e.code, Code::RateLimited);
        assert!((59..=60).contains(&e.retry_after.unwrap()));
        // Another username from the same client is not affected.
        drop(f.attempt("bob", ip(1)).unwrap());
    }

    #[test]
    fn per_client_limit_spans_usernames_and_refunds_when_the_name_is_full() {
        let limits = Limits {
            per_username: 1,
            per_client: 3,
            window: Duration::from_secs(60),
        };
        let f = FailedProofs::new(limits);
        drop(f.attempt("a", ip(1)).unwrap());
        // "a" is full: refused, and the client's slot is given back.
        assert!(f.attempt("a", ip(1)).is_err());
        drop(f.attempt("b", ip(1)).unwrap());
        drop(f.attempt("c", ip(1)).unwrap());
        assert!(f.attempt("d", ip(1)).is_err(), "client used 3");
        drop(f.attempt("d", ip(2)).unwrap());
    }

    #[test]
    fn concurrent_attempts_hold_slots_before_their_proofs_end() {
        let limits = Limits {
            per_username: 5,
            per_client: 100,
            window: Duration::from_secs(60),
        };
        let f = FailedProofs::new(limits);
        let held: Vec<Attempt> = (0..5).map(|_| f.attempt("x", ip(1)).unwrap()).collect();
        assert!(f.attempt("x", ip(1)).is_err(), "five in flight fill it");
        for a in held {
            a.uncounted();
        }
        drop(f.attempt("x", ip(1)).unwrap());
    }

    #[test]
    fn windows_end() {
        let limits = Limits {
            per_username: 1,
            per_client: 100,
            window: Duration::from_millis(50),
        };
        let f = FailedProofs::new(limits);
        drop(f.attempt("x", ip(1)).unwrap());
        assert!(f.attempt("x", ip(1)).is_err());
        std::thread::sleep(Duration::from_millis(80));
        drop(f.attempt("x", ip(1)).unwrap());
    }
}
