//! How fast a lost connection (the broker, for the sync worker and for
//! ingestors) is tried again: 100 ms doubling to 5 s, with jitter, for
//! ever: a process without its broker has nothing better to do. Also the
//! jitter the sync worker's retry schedule spreads its delays with.
//! (Written here rather than taken from the `backoff` crate, which is
//! unmaintained and pulled in the unmaintained `instant`.)

use std::time::Duration;

const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);
/// ±30 %: processes that lost the broker together do not all come back
/// in the same millisecond.
const JITTER: f64 = 0.3;

/// `base` spread uniformly by ± `factor` (0.2 = ±20 %).
pub fn jittered(base: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return base;
    }
    let mut bytes = [0u8; 8];
    // Should the system's source fail, no spread: jitter only spreads load.
    let unit = match getrandom::fill(&mut bytes) {
        // 53 random bits as a fraction in [0, 1).
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    base.mul_f64((1.0 - factor + 2.0 * factor * unit).max(0.0))
}

/// The delays between reconnection attempts.
pub struct Reconnect {
    next: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self { next: INITIAL }
    }
}

impl Reconnect {
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.next, JITTER);
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// After a connection that worked: the next loss starts from the start.
    pub fn reset(&mut self) {
        self.next = INITIAL;
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

    #[test]
    fn jitter_stays_within_its_spread() {
        let base = Duration::from_secs(10);
        let got: Vec<Duration> = (0..200).map(|_| jittered(base, 0.2)).collect();
        assert!(got.iter().all(|d| (8.0..=12.0).contains(&d.as_secs_f64())));
        assert!(got.iter().any(|d| *d != got[0]), "it spreads");
        assert_eq!(jittered(base, 0.0), base);
    }
}
