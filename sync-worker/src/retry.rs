//! The retry schedule of events the broker did not confirm: when one is
//! tried next, or given up on. (How fast a lost broker is reconnected to
//! is `keyward_core::reconnect`, shared with ingestors.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::reconnect::jittered;

/// Exponential backoff with jitter and a cap, and the limits after which
/// an event is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub initial: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Spread of each delay, as a fraction either way (0.2 = ±20 %).
    pub jitter: f64,
    pub max_attempts: u32,
    pub max_age: Duration,
}

/// What becomes of an event whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(DateTime<Utc>),
    Dead,
}

impl RetrySchedule {
    /// The delay after `failures` failed attempts (≥ 1). A pure function of
    /// the attempt count (plus jitter), read back from the outbox row, so
    /// the schedule survives worker restarts and moves between workers.
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let base = Duration::from_secs_f64(base.min(self.max_interval.as_secs_f64()));
        jittered(base, self.jitter).min(self.max_interval)
    }

    /// After the `failures`-th failed attempt of an event written at
    /// `written_at`: when to try again, or give up.
    pub fn after_failure(
        &self,
        failures: u32,
        written_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> AfterFailure {
        let age = (now - written_at).to_std().unwrap_or_default();
        if failures >= self.max_attempts || age >= self.max_age {
            return AfterFailure::Dead;
        }
        let delay =
            chrono::Duration::from_std(self.delay(failures)).unwrap_or(chrono::Duration::MAX);
        AfterFailure::RetryAt(now + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            initial: Duration::from_millis(500),
            multiplier: 2.0,
            max_interval: Duration::from_secs(60),
            jitter: 0.2,
            max_attempts: 10,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn delays_grow_exponentially_within_the_jitter() {
        let s = schedule();
        for (failures, base_ms) in [(1, 500.0), (2, 1000.0), (3, 2000.0), (5, 8000.0)] {
            for _ in 0..50 {
                let ms = s.delay(failures).as_secs_f64() * 1000.0;
                assert!(
                    (base_ms * 0.8 - 1.0..=base_ms * 1.2 + 1.0).contains(&ms),
                    "{failures}: {ms}"
                );
            }
        }
    }

    #[test]
    fn delays_are_capped() {
        let s = schedule();
        for failures in [8, 20, 1000, u32::MAX] {
            assert!(s.delay(failures) <= Duration::from_secs(60));
            assert!(s.delay(failures) >= Duration::from_secs(48));
        }
    }

    #[test]
    fn no_jitter_means_exact_delays() {
        let s = RetrySchedule {
            jitter: 0.0,
            ..schedule()
        };
        assert_eq!(s.delay(1), Duration::from_millis(500));
        assert_eq!(s.delay(4), Duration::from_secs(4));
    }

    #[test]
    fn dead_after_max_attempts_or_age() {
        let s = schedule();
        let now = Utc::now();
        assert!(matches!(s.after_failure(1, now, now), AfterFailure::RetryAt(t) if t > now));
        assert_eq!(s.after_failure(10, now, now), AfterFailure::Dead);
        let old = now - chrono::Duration::hours(2);
        assert_eq!(s.after_failure(1, old, now), AfterFailure::Dead);
    }
}
