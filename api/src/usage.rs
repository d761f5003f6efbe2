//! `lastUsedAt` kept in memory and written in batches by a background task
//! (`verify::spawn_background`): the hot path never waits for a write.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keyward_core::ids::KeyId;

/// Last use per key, to the second. Sharded by key id so that worker
/// threads recording different keys rarely meet on one lock; a key's
/// cached state (`KeyState::first_use_in`) hands it over at most once a
/// second.
pub struct UsageRecorder {
    shards: Vec<UsageShard>,
    hasher: std::hash::RandomState,
}

#[derive(Default)]
struct UsageShard {
    pending: std::sync::Mutex<HashMap<KeyId, DateTime<Utc>>>,
}

const USAGE_SHARDS: usize = 16;

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..USAGE_SHARDS).map(|_| UsageShard::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl UsageRecorder {
    pub fn record(&self, key_id: KeyId, at: DateTime<Utc>) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key_id);
        let shard = &self.shards[(hash as usize) % USAGE_SHARDS];
        let mut pending = shard.pending.lock().unwrap_or_else(|p| p.into_inner());
        let slot = pending.entry(key_id).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }

    pub fn take(&self) -> Vec<(KeyId, DateTime<Utc>)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let mut pending = shard.pending.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(pending.drain());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_keeps_the_latest_second() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        u.record(k, t - chrono::Duration::seconds(5));
        assert_eq!(u.take(), vec![(k, t)]);
        assert!(u.take().is_empty());
        u.record(k, t + chrono::Duration::seconds(2));
        assert_eq!(u.take(), vec![(k, t + chrono::Duration::seconds(2))]);
    }
}
