//! Freeing a quick_cache's stale entries without stalling its readers.
//!
//! quick_cache's `retain` holds a shard's write lock while it walks the
//! shard and frees what it drops: a full cache of 100,000 keys (8 shards
//! on 2 cores) kept every lookup of a shard waiting ~2 ms while it was
//! swept, and for a whole scheduler slice when the sweeping thread lost
//! its core meanwhile (`cargo bench -p keyward-api --bench cache_sweep`).
//! Here each look is a short read lock; each removal a short write lock
//! that judges the entry again, so that one refilled since the look stays;
//! and what is removed is freed after that lock is released.

use std::hash::{BuildHasher, Hash};

use quick_cache::UnitWeighter;
use quick_cache::sync::Cache;

/// Removes the entries `stale` says are, one at a time.
pub fn sweep<K, V, B>(cache: &Cache<K, V, UnitWeighter, B>, stale: impl Fn(&K, &V) -> bool)
where
    K: Eq + Hash + Clone,
    V: Clone,
    B: BuildHasher + Clone,
{
    sweep_with(cache, stale, |_| {});
}

/// `sweep`, with `between` called after an entry was found stale and
/// before its removal (tests change the entry there).
pub fn sweep_with<K, V, B>(
    cache: &Cache<K, V, UnitWeighter, B>,
    stale: impl Fn(&K, &V) -> bool,
    mut between: impl FnMut(&K),
) where
    K: Eq + Hash + Clone,
    V: Clone,
    B: BuildHasher + Clone,
{
    for (key, value) in cache.iter() {
        if stale(&key, &value) {
            drop(value);
            between(&key);
            let removed = cache.remove_if(&key, |value| stale(&key, value));
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache<u32, u32, UnitWeighter, std::hash::RandomState> {
        Cache::with(
            100,
            100,
            UnitWeighter,
            Default::default(),
            Default::default(),
        )
    }

    #[test]
    fn stale_entries_go_and_the_rest_stay() {
        let c = cache();
        for k in 0..10 {
            c.insert(k, k);
        }
        sweep(&c, |_, v| v % 2 == 0);
        let mut left: Vec<u32> = c.iter().map(|(k, _)| k).collect();
        left.sort_unstable();
        assert_eq!(left, [1, 3, 5, 7, 9]);
    }

    /// No lock is held between the look and the removal (an insert there
    /// would deadlock), and an entry refilled in between stays. Checked:
    /// with the removal unconditional, this fails.
    #[test]
    fn an_entry_refilled_between_look_and_removal_stays() {
        let c = cache();
        c.insert(1, 0);
        c.insert(2, 0);
        let mut found = Vec::new();
        sweep_with(
            &c,
            |_, v| *v == 0,
            |k| {
                found.push(*k);
                if *k == 1 {
                    c.insert(1, 7);
                }
            },
        );
        found.sort_unstable();
        assert_eq!(found, [1, 2]);
        assert_eq!(c.get(&1), Some(7), "the refill stays");
        assert_eq!(c.get(&2), None);
    }
}
