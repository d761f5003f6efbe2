//! A seeded generator (SplitMix64): the same seed picks the same faults,
//! delays and operations, so a failing run can be replayed. Timing still
//! differs between runs; the seed fixes the choices, not the interleaving.

use std::sync::Mutex;
use std::time::Duration;

pub struct Rng(Mutex<u64>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(seed))
    }

    pub fn next_u64(&self) -> u64 {
        let mut s = self.0.lock().expect("rng lock");
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A duration between `lo` and `hi`.
    pub fn between(&self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next_u64() % span })
    }

    /// A generator of its own, seeded from this one: each task draws from
    /// its own stream, so one task's pace does not shift another's picks.
    pub fn fork(&self) -> Self {
        Self::new(self.next_u64())
    }
}
