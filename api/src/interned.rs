//! Equal values shared: one `Arc` per distinct value among those in use.
//!
//! Why: every cached key held its own copy of its permissions (tenant id,
//! roles, privileges, provenance: several allocations), though the keys of
//! a tenant mostly hold the same roles. With 100,000 keys cached that copy
//! was a large share of the API's memory (docs/BENCHMARKS.md, "Scale").
//!
//! Nothing here can be stale: a value is found only by being equal to the
//! one asked for, so a changed role makes a different value, never a hit
//! on the old one. What the permissions *mean* for a cached key stays
//! guarded by the verify cache's generations, as before.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Values held only by the set itself are dropped once the set has grown
/// to twice what was in use at the last sweep (at least this many).
const FIRST_SWEEP_AT: usize = 1_024;

pub struct Interned<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    values: HashSet<Arc<T>, foldhash::fast::RandomState>,
    sweep_at: usize,
}

impl<T: Hash + Eq> Default for Interned<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                values: HashSet::default(),
                sweep_at: FIRST_SWEEP_AT,
            }),
        }
    }
}

impl<T: Hash + Eq> Interned<T> {
    /// The shared `Arc` of a value equal to `value`, made from it if none
    /// is in use.
    pub fn share(&self, value: T) -> Arc<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = inner.values.get(&value) {
            return Arc::clone(shared);
        }
        if inner.values.len() >= inner.sweep_at {
            // Under the lock, a count of one is the set's own: nobody can
            // take a new reference to such a value but through `share`.
            inner.values.retain(|v| Arc::strong_count(v) > 1);
            inner.sweep_at = (inner.values.len() * 2).max(FIRST_SWEEP_AT);
        }
        let shared = Arc::new(value);
        inner.values.insert(Arc::clone(&shared));
        shared
    }

    /// Distinct values held (some may no longer be in use).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_arc_and_different_ones_do_not() {
        let set = Interned::default();
        let a = set.share(String::from("t001/reader"));
        let b = set.share(String::from("t001/reader"));
        let c = set.share(String::from("t001/writer"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn values_no_longer_in_use_are_swept_and_those_in_use_are_kept() {
        let set = Interned::default();
        let kept = set.share(0_usize);
        for i in 1..FIRST_SWEEP_AT {
            drop(set.share(i));
        }
        assert_eq!(set.len(), FIRST_SWEEP_AT);
        // The next new value sweeps: only `kept` was still in use.
        let new = set.share(FIRST_SWEEP_AT);
        assert_eq!(set.len(), 2);
        assert!(Arc::ptr_eq(&kept, &set.share(0)));
        assert!(Arc::ptr_eq(&new, &set.share(FIRST_SWEEP_AT)));
    }
}
