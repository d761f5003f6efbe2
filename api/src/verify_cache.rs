//! The API's caches of proven credentials: verified keys (the hot path of
//! `POST /api/v1/verify` and Bearer authentication) and proven Basic
//! passwords. Both are [`GuardedCache`]s: bounded (quick_cache: S3-FIFO
//! eviction, so a full cache costs no scan and a one-off scan of keys does
//! not push out the ones in use), each entry lives at most the TTL, and an
//! entry counts only while no scope it depends on changed since its fill
//! began ([`Generations`]): a fill racing a revoke, an RBAC change or a user
//! change can never leave its pre-change answer behind.

use std::hash::Hash;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use keyward_core::cache_sweep;
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, TenantId, Username};
use keyward_core::rbac::Permissions;

use crate::generations::{Generations, Scope, Snapshot};

/// What an entry's truth depends on.
pub trait DependsOn<K> {
    fn scopes<'a>(&'a self, key: &'a K) -> [Scope<'a>; 2];
}

/// The generation check, in one place: whether nothing `filled` depends on
/// changed since its fill's snapshot. Every cache insert, every hit and
/// every answer shared by a single flight passes here; the concurrency
/// tests (`api/tests/it/cache_races.rs`) fail when it always says `true`.
pub fn is_current<K, V: DependsOn<K>>(
    generations: &Generations,
    key: &K,
    filled: &Filled<V>,
) -> bool {
    generations.unchanged_since(filled.filled, &filled.value.scopes(key))
}

/// A value with the snapshot its fill took before reading the store.
pub struct Filled<V> {
    pub value: V,
    pub filled: Snapshot,
}

/// A cached entry with the moment its TTL ends.
struct Held<V> {
    until: Instant,
    entry: Arc<Filled<V>>,
}

impl<V> Clone for Held<V> {
    fn clone(&self) -> Self {
        Self {
            until: self.until,
            entry: Arc::clone(&self.entry),
        }
    }
}

type Entries<K, V> =
    quick_cache::sync::Cache<K, Held<V>, quick_cache::UnitWeighter, foldhash::fast::RandomState>;

pub struct GuardedCache<K, V> {
    /// `None` when the TTL is zero: nothing is cached.
    entries: Option<Entries<K, V>>,
    generations: Arc<Generations>,
    ttl: Duration,
}

impl<K, V> GuardedCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: DependsOn<K> + Send + Sync + 'static,
{
    pub fn new(capacity: u64, ttl: Duration, generations: Arc<Generations>) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            let capacity = capacity.max(1);
            quick_cache::sync::Cache::with(
                // Shards are sized from this; their tables grow as filled.
                usize::try_from(capacity).unwrap_or(usize::MAX),
                capacity,
                quick_cache::UnitWeighter,
                // Seeded at random per cache: keys are not chosen by
                // clients (only proven keys are inserted), and a seed
                // they can't know keeps it so.
                foldhash::fast::RandomState::default(),
                Default::default(),
            )
        });
        Self {
            entries,
            generations,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The entry for `key` if it is still the truth. An expired or retired
    /// entry is left where it is: the fill that follows replaces it, and
    /// `drop_stale` clears the rest.
    pub fn get(&self, key: &K) -> Option<Arc<Filled<V>>> {
        self.get_until(key).map(|(entry, _)| entry)
    }

    /// `get`, with the moment the entry's TTL ends.
    pub fn get_until(&self, key: &K) -> Option<(Arc<Filled<V>>, Instant)> {
        let held = self.entries.as_ref()?.get(key)?;
        (Instant::now() < held.until && self.current(key, &held.entry))
            .then_some((held.entry, held.until))
    }

    /// Caches what a fill read, unless a scope it depends on changed since
    /// the fill's snapshot; `true` when it did.
    pub fn insert(&self, key: K, entry: Arc<Filled<V>>) -> bool {
        let Some(entries) = &self.entries else {
            return false;
        };
        if !self.current(&key, &entry) {
            return false;
        }
        // The TTL is at most an hour (settings), so this cannot overflow.
        let until = Instant::now() + self.ttl;
        entries.insert(key, Held { until, entry });
        true
    }

    pub fn current(&self, key: &K, entry: &Filled<V>) -> bool {
        is_current(&self.generations, key, entry)
    }

    /// Frees the entries that can no longer be answered from: past their
    /// TTL, or filled before a change they depend on. Run now and then, so
    /// that memory goes back without waiting for newer entries to push
    /// them out; one entry at a time (`cache_sweep`), so that lookups never
    /// wait for a whole shard's sweep.
    pub fn drop_stale(&self) {
        self.sweep(|_| {});
    }

    /// `drop_stale`, with `between` called after an entry was found stale
    /// and before its removal (tests change the entry there).
    fn sweep(&self, between: impl FnMut(&K)) {
        let Some(entries) = &self.entries else {
            return;
        };
        let now = Instant::now();
        let stale = |key: &K, held: &Held<V>| now >= held.until || !self.current(key, &held.entry);
        cache_sweep::sweep_with(entries, stale, between);
    }

    /// Entries held, stale ones included until `drop_stale`.
    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, |e| e.len() as u64)
    }
}

/// A key's state as the store holds it, with what its cache entry keeps
/// beside it. Held in the entry itself (no `Arc` of its own per part): a
/// cached key costs one allocation for all of this.
pub struct KeyState {
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// Shared by the keys holding equal permissions (`Interned`).
    pub permissions: Arc<Permissions>,
    /// `POST /api/v1/verify`'s body for a valid use of this key, made on
    /// the first such answer: it depends only on what this entry holds, and
    /// serialising it on every hit was a tenth of a cached verify's work.
    pub answer: OnceLock<Bytes>,
    /// The second (since the epoch) of the latest use handed to the usage
    /// recorder: `lastUsedAt` is kept to the second, so a key used many
    /// times a second takes the recorder's lock once a second, not on
    /// every verify.
    last_use_recorded: AtomicI64,
}

impl KeyState {
    pub fn new(
        active: bool,
        expires_at: Option<DateTime<Utc>>,
        permissions: Arc<Permissions>,
    ) -> Self {
        Self {
            active,
            expires_at,
            permissions,
            answer: OnceLock::new(),
            last_use_recorded: AtomicI64::new(0),
        }
    }

    /// The same state, for an entry of its own (nothing answered or used
    /// yet).
    pub fn fresh_copy(&self) -> Self {
        Self::new(self.active, self.expires_at, Arc::clone(&self.permissions))
    }

    pub fn tenant(&self) -> &TenantId {
        &self.permissions.tenant
    }

    /// Whether a use at `second` still has to be recorded: `false` when
    /// one in the same second already was.
    pub fn first_use_in(&self, second: i64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // Read before writing: a hot key is verified on every core, and a
        // write on each verify would bounce its cache line between them.
        self.last_use_recorded.load(Relaxed) != second
            && self.last_use_recorded.swap(second, Relaxed) != second
    }
}

/// What the store said about a key: enough to judge any secret offered for
/// it (one key has one secret: another digest is a wrong secret).
pub struct KeyEntry {
    /// The SHA-256 digest the store holds (never the secret).
    pub digest: KeyDigest,
    pub state: KeyState,
}

impl DependsOn<KeyId> for KeyEntry {
    fn scopes<'a>(&'a self, key: &'a KeyId) -> [Scope<'a>; 2] {
        [Scope::Key(*key), Scope::Tenant(self.state.tenant())]
    }
}

pub type KeyCache = GuardedCache<KeyId, KeyEntry>;

/// A user whose password was proven, keyed by a keyed digest of username
/// and password together, so a dump of the cache is no offline oracle.
pub struct ProvenUser {
    pub username: Username,
    pub permissions: Arc<Permissions>,
}

impl DependsOn<blake3::Hash> for ProvenUser {
    fn scopes<'a>(&'a self, _: &'a blake3::Hash) -> [Scope<'a>; 2] {
        [
            Scope::User(&self.username),
            Scope::Tenant(&self.permissions.tenant),
        ]
    }
}

pub type ProvenPasswords = GuardedCache<blake3::Hash, ProvenUser>;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, filled: Snapshot) -> Arc<Filled<KeyEntry>> {
        let perms = Permissions::from_grants(TenantId::parse(tenant).unwrap(), []);
        Arc::new(Filled {
            value: KeyEntry {
                digest: KeyDigest::of("s"),
                state: KeyState::new(true, None, Arc::new(perms)),
            },
            filled,
        })
    }

    #[test]
    fn entries_filled_before_a_change_do_not_count() {
        let g = Arc::new(Generations::default());
        let cache = KeyCache::new(100, Duration::from_secs(60), Arc::clone(&g));
        let a = KeyId::new();
        let before = g.snapshot();
        g.bump(Scope::Key(a));
        // Another key in a slot of its own: one random id in 8,192 shares
        // a's, and would (rightly) be refused too.
        let b = std::iter::repeat_with(KeyId::new)
            .find(|b| g.unchanged_since(before, &[Scope::Key(*b)]))
            .unwrap();
        assert!(!cache.insert(a, entry("t1", before)), "stale fill refused");
        assert!(cache.insert(b, entry("t1", before)));
        assert!(cache.get(&b).is_some());
        g.bump(Scope::Tenant(&TenantId::parse("t1").unwrap()));
        assert!(cache.get(&b).is_none(), "retired by its tenant's change");
        assert!(cache.insert(a, entry("t1", g.snapshot())));
        assert!(cache.get(&a).is_some());
    }

    #[test]
    fn entries_past_their_ttl_are_not_answered_and_are_swept() {
        let g = Arc::new(Generations::default());
        let cache = KeyCache::new(100, Duration::from_millis(50), Arc::clone(&g));
        let key = KeyId::new();
        assert!(cache.insert(key, entry("t", g.snapshot())));
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key).is_none(), "past its TTL");
        assert_eq!(cache.entry_count(), 1, "held until swept");
        cache.drop_stale();
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn retired_entries_are_swept_and_current_ones_kept() {
        let g = Arc::new(Generations::default());
        let cache = KeyCache::new(100, Duration::from_secs(60), Arc::clone(&g));
        let (retired, kept) = (KeyId::new(), KeyId::new());
        assert!(cache.insert(retired, entry("t", g.snapshot())));
        g.bump(Scope::Key(retired));
        // Filled after the change: current whichever slot its key shares.
        assert!(cache.insert(kept, entry("t", g.snapshot())));
        assert!(cache.get(&retired).is_none(), "retired by its key's change");
        assert_eq!(cache.entry_count(), 2, "held until swept");
        cache.drop_stale();
        assert_eq!(cache.entry_count(), 1);
        assert!(cache.get(&kept).is_some());
    }

    /// The sweep holds no lock between finding an entry stale and removing
    /// it (an insert there would deadlock), and judges the entry again
    /// under the lock that removes it: one refilled in between stays.
    /// Checked: with the removal unconditional, this fails.
    #[test]
    fn an_entry_refilled_during_the_sweep_is_kept() {
        let g = Arc::new(Generations::default());
        let cache = KeyCache::new(100, Duration::from_secs(60), Arc::clone(&g));
        let (refilled, retired) = (KeyId::new(), KeyId::new());
        assert!(cache.insert(refilled, entry("t", g.snapshot())));
        assert!(cache.insert(retired, entry("t", g.snapshot())));
        g.bump(Scope::Tenant(&TenantId::parse("t").unwrap()));
        let mut found = Vec::new();
        cache.sweep(|key| {
            found.push(*key);
            if *key == refilled {
                assert!(cache.insert(refilled, entry("t", g.snapshot())));
            }
        });
        found.sort();
        let mut both = vec![refilled, retired];
        both.sort();
        assert_eq!(found, both, "both found stale");
        assert!(cache.get(&refilled).is_some(), "the refill stays");
        assert!(cache.get(&retired).is_none());
        assert_eq!(cache.entry_count(), 1);
    }

    #[test]
    fn a_use_is_handed_over_once_a_second() {
        let entry = entry("t", Generations::default().snapshot());
        let state = &entry.value.state;
        assert!(state.first_use_in(100));
        assert!(!state.first_use_in(100), "same second: already recorded");
        assert!(state.fresh_copy().first_use_in(100), "a copy starts afresh");
        assert!(state.first_use_in(101));
    }

    #[test]
    fn bounded_and_ttl_zero_caches_nothing() {
        let g = Arc::new(Generations::default());
        let cache = KeyCache::new(10, Duration::from_secs(60), Arc::clone(&g));
        for _ in 0..1000 {
            cache.insert(KeyId::new(), entry("t", g.snapshot()));
        }
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
        let off = KeyCache::new(10, Duration::ZERO, Arc::clone(&g));
        let k = KeyId::new();
        assert!(!off.insert(k, entry("t", g.snapshot())));
        assert!(off.get(&k).is_none());
    }
}
