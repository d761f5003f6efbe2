//! How fast a lost connection (the broker, for the sync worker and for
//! ingestors) is tried again: 100 ms doubling to 5 s, with jitter, for
//! ever: a process without its broker has nothing better to do.
//!
//! Built on the `backoff` crate (RUSTSEC-2025-0012, acknowledged in
//! `deny.toml`); see also the sync worker's `retry.rs`.

use std::time::{Duration, Instant};

use backoff::SystemClock;
use backoff::backoff::Backoff;
use backoff::exponential::ExponentialBackoff;

/// The delays between reconnection attempts.
pub struct Reconnect(ExponentialBackoff<SystemClock>);

impl Default for Reconnect {
    fn default() -> Self {
        Self(ExponentialBackoff {
            current_interval: Duration::from_millis(100),
            initial_interval: Duration::from_millis(100),
            randomization_factor: 0.3,
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            start_time: Instant::now(),
            max_elapsed_time: None,
            clock: SystemClock::default(),
        })
    }
}

impl Reconnect {
    pub fn next_delay(&mut self) -> Duration {
        self.0.next_backoff().unwrap_or(self.0.max_interval)
    }

    /// After a connection that worked: the next loss starts from the start.
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backs_off_and_resets() {
        let mut r = Reconnect::default();
        let first = r.next_delay();
        for _ in 0..20 {
            r.next_delay();
        }
        assert!(r.next_delay() <= Duration::from_secs(5).mul_f64(1.3));
        assert!(r.next_delay() > first);
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(130));
    }
}
