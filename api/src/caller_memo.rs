//! Each worker thread's copy of the few Bearer callers it answers most:
//! the caller of every `POST /api/v1/verify` is one of a handful of
//! `verifier` keys (one per ingestor fleet), presented on every request.
//!
//! Why: through the verify cache, the caller's check parsed the token,
//! took a shard lock and cloned the entry's reference count and its
//! permissions' — and because every worker checks the same caller, each of
//! those writes moved a cache line between cores on every request (in a
//! profile of cached verifies, the cache lookup was the costliest symbol of
//! the API's own code, most of it waiting on those lines). A thread's own
//! copy is written by that thread alone.
//!
//! A copy is no looser than the entry it was taken from: it keeps that
//! entry's fill snapshot and end of TTL, answers only while the same
//! generation check passes (`verify_cache::is_current`: a revoke, an RBAC
//! change of the tenant or a lost change feed retires it at once), and the
//! key's status and expiry are judged on every use as for any hit. It is
//! found by the SHA-256 digest of the presented token, compared in constant
//! time: equal digests mean the very token that was proven, so its shape
//! and checksum need no second look.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use keyward_core::digest::KeyDigest;
use keyward_core::ids::KeyId;
use thread_local::ThreadLocal;

use crate::generations::Generations;
use crate::verify_cache::{Filled, KeyEntry, is_current};

/// Callers a thread keeps. A slot is picked by the digest, so a deployment
/// with more verifier keys than this still finds most of them.
const SLOTS: usize = 8;

struct Slot {
    key_id: KeyId,
    entry: Arc<Filled<KeyEntry>>,
    until: Instant,
}

#[derive(Default)]
pub struct CallerMemo {
    threads: ThreadLocal<RefCell<[Option<Slot>; SLOTS]>>,
}

impl CallerMemo {
    /// This thread's copy for the token whose digest is `offered`, while it
    /// is still the truth.
    pub fn get(
        &self,
        offered: &KeyDigest,
        generations: &Generations,
        now: Instant,
    ) -> Option<(KeyId, Arc<Filled<KeyEntry>>)> {
        let slots = self.threads.get()?.borrow();
        let slot = slots[index(offered)].as_ref()?;
        (slot.entry.value.digest.matches(offered)
            && now < slot.until
            && is_current(generations, &slot.key_id, &slot.entry))
        .then(|| (slot.key_id, Arc::clone(&slot.entry)))
    }

    /// Keeps a copy of `entry` (a verify cache hit, current when read) for
    /// this thread, until `until`: the cache entry's own end.
    pub fn keep(&self, key_id: KeyId, entry: &Filled<KeyEntry>, until: Instant) {
        let copy = Arc::new(Filled {
            value: KeyEntry {
                digest: entry.value.digest,
                state: entry.value.state.fresh_copy(),
            },
            filled: entry.filled,
        });
        let slots = self.threads.get_or(Default::default);
        slots.borrow_mut()[index(&entry.value.digest)] = Some(Slot {
            key_id,
            entry: copy,
            until,
        });
    }
}

fn index(digest: &KeyDigest) -> usize {
    usize::from(digest.slot_hint()) % SLOTS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keyward_core::ids::TenantId;
    use keyward_core::rbac::Permissions;

    use super::*;
    use crate::generations::{Scope, Snapshot};
    use crate::verify_cache::KeyState;

    fn entry(secret: &str, filled: Snapshot) -> Filled<KeyEntry> {
        let perms = Permissions::from_grants(TenantId::parse("acme").unwrap(), []);
        Filled {
            value: KeyEntry {
                digest: KeyDigest::of(secret),
                state: KeyState::new(true, None, Arc::new(perms)),
            },
            filled,
        }
    }

    struct Setup {
        g: Generations,
        memo: CallerMemo,
        key: KeyId,
        offered: KeyDigest,
        later: Instant,
    }

    /// A caller kept with a fill snapshot taken now, and a TTL of a minute.
    fn kept() -> Setup {
        let (g, memo, key) = (Generations::default(), CallerMemo::default(), KeyId::new());
        let now = Instant::now();
        memo.keep(
            key,
            &entry("kw_caller", g.snapshot()),
            now + Duration::from_secs(60),
        );
        Setup {
            g,
            memo,
            key,
            offered: KeyDigest::of("kw_caller"),
            later: now,
        }
    }

    #[test]
    fn the_same_token_is_answered_from_this_threads_copy() {
        let s = kept();
        let (key, _) = s.memo.get(&s.offered, &s.g, s.later).expect("kept");
        assert_eq!(key, s.key);
        let other = KeyDigest::of("kw_someone_else");
        assert!(s.memo.get(&other, &s.g, s.later).is_none());
    }

    #[test]
    fn another_thread_has_copies_of_its_own() {
        let s = kept();
        std::thread::scope(|t| {
            t.spawn(|| assert!(s.memo.get(&s.offered, &s.g, s.later).is_none()));
        });
    }

    /// The generation check, as the verify cache's: without it in `get`
    /// each of these is answered from the copy (checked by removing it).
    #[test]
    fn a_change_of_the_key_or_its_tenant_retires_the_copy() {
        let s = kept();
        s.g.bump(Scope::Key(s.key));
        assert!(s.memo.get(&s.offered, &s.g, s.later).is_none(), "key");

        let s = kept();
        s.g.bump(Scope::Tenant(&TenantId::parse("acme").unwrap()));
        assert!(s.memo.get(&s.offered, &s.g, s.later).is_none(), "tenant");

        let s = kept();
        s.g.bump_all();
        assert!(s.memo.get(&s.offered, &s.g, s.later).is_none(), "all");

        let s = kept();
        s.g.see(false);
        assert!(s.memo.get(&s.offered, &s.g, s.later).is_none(), "deaf");
    }

    /// A copy made of an entry read before a change (the change lands
    /// between the cache's answer and `keep`) is never answered: it keeps
    /// the entry's snapshot, not the time it was copied.
    #[test]
    fn a_copy_of_an_entry_read_before_a_change_is_not_answered() {
        let (g, memo, key) = (Generations::default(), CallerMemo::default(), KeyId::new());
        let read = entry("kw_caller", g.snapshot());
        g.bump(Scope::Key(key));
        let now = Instant::now();
        memo.keep(key, &read, now + Duration::from_secs(60));
        assert!(memo.get(&KeyDigest::of("kw_caller"), &g, now).is_none());
    }

    #[test]
    fn a_copy_ends_with_its_entrys_ttl() {
        let s = kept();
        let past = s.later + Duration::from_secs(61);
        assert!(s.memo.get(&s.offered, &s.g, past).is_none());
    }
}
