//! Generations: how a cache fill knows whether what it read is still the
//! truth when it is about to be cached.
//!
//! A change to a key, a tenant's RBAC or a user — seen locally after its
//! commit, or from another replica by NOTIFY — bumps the generation of its
//! scope; losing the NOTIFY feed bumps all of them. A fill takes a
//! [`Snapshot`] before it reads the store, and its answer counts only while
//! no scope it depends on was bumped since: otherwise a verify in flight
//! across a revoke would put the pre-revoke answer in the cache for a whole
//! TTL. Entries keep their snapshot, so a later bump also retires every
//! entry filled before it, without a scan (a tenant change is O(1)).
//!
//! Memory stays bounded whatever the number of keys, tenants and users:
//! scopes hash into fixed tables of slots. Two scopes sharing a slot only
//! cost an extra store read, never a stale answer.
//!
//! Each slot remembers the clock value of its latest bump. A bump first
//! advances the clock, then raises the slot; a snapshot reads the clock. A
//! snapshot taken before a bump is therefore older than the slot after it,
//! and one taken after the clock moved was taken after the change had
//! committed (bumps follow commits), so what it reads is already fresh.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use keyward_core::ids::{KeyId, TenantId, Username};

const KEY_SLOTS: usize = 8192;
const TENANT_SLOTS: usize = 1024;
const USER_SLOTS: usize = 1024;

/// The clock when a fill began reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Snapshot(u64);

/// What a cached answer depends on.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Key(KeyId),
    Tenant(&'a TenantId),
    User(&'a Username),
}

pub struct Generations {
    /// `false` while changes made elsewhere cannot be heard (the NOTIFY
    /// feed is down): then nothing counts as unchanged, so every answer
    /// comes from the store.
    seeing: AtomicBool,
    clock: AtomicU64,
    all: AtomicU64,
    keys: Box<[AtomicU64]>,
    tenants: Box<[AtomicU64]>,
    users: Box<[AtomicU64]>,
    /// Every hit checks two slots: a fast hash, seeded at random so that
    /// which scopes share a slot can't be chosen from outside.
    hasher: foldhash::fast::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        let slots = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            seeing: AtomicBool::new(true),
            clock: AtomicU64::new(0),
            all: AtomicU64::new(0),
            keys: slots(KEY_SLOTS),
            tenants: slots(TENANT_SLOTS),
            users: slots(USER_SLOTS),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl Generations {
    /// Taken by a fill before it reads the store.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.clock.load(SeqCst))
    }

    /// `scope` changed (after its commit).
    pub fn bump(&self, scope: Scope<'_>) {
        self.raise(self.slot(scope));
    }

    /// Anything may have changed (the change feed was lost).
    pub fn bump_all(&self) {
        self.raise(&self.all);
    }

    /// Whether changes made by other replicas are being heard.
    pub fn see(&self, seeing: bool) {
        self.seeing.store(seeing, SeqCst);
    }

    /// Whether none of `scopes`, nor everything, was bumped since `since`.
    pub fn unchanged_since(&self, since: Snapshot, scopes: &[Scope<'_>]) -> bool {
        self.seeing.load(SeqCst)
            && self.all.load(SeqCst) <= since.0
            && scopes.iter().all(|s| self.slot(*s).load(SeqCst) <= since.0)
    }

    fn raise(&self, slot: &AtomicU64) {
        let now = self.clock.fetch_add(1, SeqCst) + 1;
        slot.fetch_max(now, SeqCst);
    }

    fn slot(&self, scope: Scope<'_>) -> &AtomicU64 {
        match scope {
            Scope::Key(k) => pick(&self.keys, &self.hasher, k),
            Scope::Tenant(t) => pick(&self.tenants, &self.hasher, t.as_str()),
            Scope::User(u) => pick(&self.users, &self.hasher, u.as_str()),
        }
    }
}

fn pick<'a>(
    slots: &'a [AtomicU64],
    hasher: &foldhash::fast::RandomState,
    x: impl Hash,
) -> &'a AtomicU64 {
    &slots[(hasher.hash_one(x) as usize) % slots.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_after_the_snapshot_is_seen_and_only_where_it_applies() {
        let g = Generations::default();
        let (k1, k2) = (KeyId::new(), KeyId::new());
        let t = TenantId::parse("acme").unwrap();
        let s = g.snapshot();
        assert!(g.unchanged_since(s, &[Scope::Key(k1), Scope::Tenant(&t)]));
        g.bump(Scope::Key(k1));
        assert!(!g.unchanged_since(s, &[Scope::Key(k1)]));
        assert!(!g.unchanged_since(s, &[Scope::Key(k2), Scope::Key(k1)]));
        // A fill that starts after the bump is current.
        let later = g.snapshot();
        assert!(g.unchanged_since(later, &[Scope::Key(k1), Scope::Tenant(&t)]));
        g.bump(Scope::Tenant(&t));
        assert!(!g.unchanged_since(later, &[Scope::Key(k2), Scope::Tenant(&t)]));
        let u = Username::parse("ann").unwrap();
        let s = g.snapshot();
        g.bump(Scope::User(&u));
        assert!(!g.unchanged_since(s, &[Scope::User(&u)]));
        let s = g.snapshot();
        g.bump_all();
        assert!(!g.unchanged_since(s, &[]));
        let s = g.snapshot();
        g.see(false);
        assert!(!g.unchanged_since(s, &[]), "blind: nothing counts");
        g.see(true);
        assert!(g.unchanged_since(s, &[]));
    }

    #[test]
    fn other_keys_mostly_stay_current() {
        let g = Generations::default();
        let s = g.snapshot();
        g.bump(Scope::Key(KeyId::new()));
        let unaffected = (0..1000)
            .filter(|_| g.unchanged_since(s, &[Scope::Key(KeyId::new())]))
            .count();
        assert!(unaffected > 990, "{unaffected}");
    }
}
