//! A value split into shards, each behind its own lock, a key's shard
//! picked by a hash: threads working on different keys rarely meet on one
//! lock, and no one lock is a cache line that every thread writes.

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};

use foldhash::quality::RandomState;

/// More than the threads that ask at once (an API has one per core).
const SHARDS: usize = 16;

pub struct Sharded<T> {
    /// Seeded per process (keys may be chosen by whoever sends a token),
    /// and apart from any hasher inside a shard, so that the keys of one
    /// shard still spread over a map there.
    hasher: RandomState,
    shards: [Mutex<T>; SHARDS],
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self {
            hasher: RandomState::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl<T> Sharded<T> {
    /// The shard of `key`, locked. A shard whose holder panicked is used
    /// as it was left: each holds plain data, never half of an invariant.
    pub fn lock(&self, key: &impl Hash) -> MutexGuard<'_, T> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[i])
    }

    /// Every shard, one at a time, locked.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards.iter().map(lock)
    }
}

fn lock<T>(shard: &Mutex<T>) -> MutexGuard<'_, T> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}
