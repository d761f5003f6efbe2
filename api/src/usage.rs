//! `lastUsedAt` kept in memory and written in batches by a background task
//! (`verify::spawn_background`): the hot path never waits for a write.
//!
//! A key's use is written at most once per `USAGE_RESOLUTION`: a key in
//! steady use would otherwise rewrite its row on every flush. Measured
//! with 100,000 keys in use (`bench-verify miss`), those rewrites — every
//! row of `api_keys` every 10 s, and each commit discarding the page cache
//! of every reading connection — took a quarter of the API's CPU; on
//! PostgreSQL each is a dead tuple for vacuum. The first use after a quiet
//! minute is written at the next flush as before.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::ids::KeyId;

/// Least time between two uses of one key written by this replica:
/// `lastUsedAt` may lag a key in steady use by this much (plus the flush
/// interval).
pub const USAGE_RESOLUTION: Duration = Duration::from_secs(60);

/// Last use per key, to the second. Sharded by key id so that worker
/// threads recording different keys rarely meet on one lock; a key's
/// cached state (`KeyState::first_use_in`) hands it over at most once a
/// second.
pub struct UsageRecorder {
    shards: Vec<std::sync::Mutex<UsageShard>>,
    hasher: std::hash::RandomState,
}

#[derive(Default)]
struct UsageShard {
    /// Uses not taken for writing yet, the latest per key.
    pending: HashMap<KeyId, DateTime<Utc>>,
    /// The use last taken per key, for keys taken within the resolution:
    /// a later use before `taken + USAGE_RESOLUTION` is not kept.
    taken: HashMap<KeyId, DateTime<Utc>>,
}

const USAGE_SHARDS: usize = 16;

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..USAGE_SHARDS).map(|_| Default::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl UsageRecorder {
    pub fn record(&self, key_id: KeyId, at: DateTime<Utc>) {
        let mut shard = self.shard(key_id);
        if shard
            .taken
            .get(&key_id)
            .is_some_and(|&taken| at < taken + USAGE_RESOLUTION)
        {
            return;
        }
        keep_latest(&mut shard.pending, key_id, at);
    }

    /// The uses to write now; each key's is remembered until `now` is a
    /// resolution past it.
    pub fn take(&self, now: DateTime<Utc>) -> Vec<(KeyId, DateTime<Utc>)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let UsageShard { pending, taken } = &mut *shard;
            taken.retain(|_, at| now < *at + USAGE_RESOLUTION);
            for (key_id, at) in pending.drain() {
                taken.insert(key_id, at);
                all.push((key_id, at));
            }
        }
        all
    }

    /// Uses taken whose write failed: written at the next flush.
    pub fn restore(&self, batch: Vec<(KeyId, DateTime<Utc>)>) {
        for (key_id, at) in batch {
            keep_latest(&mut self.shard(key_id).pending, key_id, at);
        }
    }

    fn shard(&self, key_id: KeyId) -> std::sync::MutexGuard<'_, UsageShard> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key_id);
        self.shards[(hash as usize) % USAGE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn keep_latest(pending: &mut HashMap<KeyId, DateTime<Utc>>, key_id: KeyId, at: DateTime<Utc>) {
    let slot = pending.entry(key_id).or_insert(at);
    if *slot < at {
        *slot = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    #[test]
    fn usage_keeps_the_latest_second() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        u.record(k, t - secs(5));
        u.record(k, t - secs(2));
        assert_eq!(u.take(t), vec![(k, t)]);
        assert!(u.take(t).is_empty());
    }

    /// A key in steady use is written once a resolution, not every flush;
    /// without the `taken` check every use below would be written.
    #[test]
    fn a_key_in_steady_use_is_written_once_a_resolution() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        assert_eq!(u.take(t), vec![(k, t)]);
        let resolution = secs(USAGE_RESOLUTION.as_secs() as i64);
        for later in [secs(1), secs(30), resolution - secs(1)] {
            u.record(k, t + later);
            assert!(u.take(t + later).is_empty(), "{later} after the write");
        }
        u.record(k, t + resolution);
        assert_eq!(u.take(t + resolution), vec![(k, t + resolution)]);
    }

    /// Keys apart: one key's write holds back no other's.
    #[test]
    fn each_key_has_its_own_resolution() {
        let u = UsageRecorder::default();
        let (a, b) = (KeyId::new(), KeyId::new());
        let t = Utc::now();
        u.record(a, t);
        assert_eq!(u.take(t), vec![(a, t)]);
        u.record(a, t + secs(5));
        u.record(b, t + secs(5));
        assert_eq!(u.take(t + secs(5)), vec![(b, t + secs(5))]);
    }

    /// A failed write is written at the next flush, resolution or not.
    #[test]
    fn a_failed_write_is_kept_for_the_next_flush() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        let failed = u.take(t);
        u.restore(failed);
        assert_eq!(u.take(t + secs(10)), vec![(k, t)]);
    }

    /// What was taken is forgotten a resolution later: memory holds the
    /// keys used in the last minute, not every key ever used.
    #[test]
    fn taken_uses_are_forgotten_a_resolution_later() {
        let u = UsageRecorder::default();
        let t = Utc::now();
        for _ in 0..100 {
            u.record(KeyId::new(), t);
        }
        assert_eq!(u.take(t).len(), 100);
        let remembered = |u: &UsageRecorder| -> usize {
            u.shards.iter().map(|s| s.lock().unwrap().taken.len()).sum()
        };
        assert_eq!(remembered(&u), 100);
        let _ = u.take(t + secs(USAGE_RESOLUTION.as_secs() as i64));
        assert_eq!(remembered(&u), 0);
    }
}
