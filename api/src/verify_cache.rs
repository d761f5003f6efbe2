//! The verify cache: what one argon2 proof established about a key, kept in
//! memory so later checks of the same secret cost a hash and a map lookup.
//!
//! An entry holds a keyed BLAKE3 digest of the proven secret (never the
//! secret), the key's tenant, status, expiry and effective permissions. The
//! digest key is random per process, so a memory dump of the cache is no
//! offline oracle. Entries live at most `ttl`; the map holds at most
//! `capacity`; revocation and RBAC changes evict.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keyward_core::ids::{KeyId, TenantId};
use keyward_core::rbac::Permissions;

#[derive(Clone)]
pub struct CacheEntry {
    pub digest: blake3::Hash,
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub permissions: Arc<Permissions>,
    inserted: Instant,
}

impl CacheEntry {
    pub fn new(
        digest: blake3::Hash,
        active: bool,
        expires_at: Option<DateTime<Utc>>,
        permissions: Permissions,
    ) -> Self {
        Self {
            digest,
            active,
            expires_at,
            permissions: Arc::new(permissions),
            inserted: Instant::now(),
        }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.permissions.tenant
    }
}

pub struct VerifyCache {
    entries: RwLock<HashMap<KeyId, CacheEntry>>,
    capacity: usize,
    ttl: Duration,
    digest_key: [u8; 32],
}

impl VerifyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let mut digest_key = [0u8; 32];
        // Without OS randomness a fixed key still keeps secrets out of
        // memory; it only loses the per-process unpredictability.
        if getrandom::fill(&mut digest_key).is_err() {
            tracing::warn!("no OS randomness for the verify cache key");
        }
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
            digest_key,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keyed digest of a secret; `blake3::Hash` compares in constant time.
    pub fn digest(&self, secret: &str) -> blake3::Hash {
        blake3::keyed_hash(&self.digest_key, secret.as_bytes())
    }

    pub fn get(&self, key_id: KeyId) -> Option<CacheEntry> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&key_id)
            .filter(|e| e.inserted.elapsed() < self.ttl)
            .cloned()
    }

    pub fn insert(&self, key_id: KeyId, entry: CacheEntry) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key_id) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.inserted.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop one; it costs one argon2.
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key_id, entry);
        metrics::gauge!("keyward_verify_cache_entries").set(entries.len() as f64);
    }

    pub fn evict(&self, key_id: KeyId) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.remove(&key_id);
        metrics::gauge!("keyward_verify_cache_entries").set(entries.len() as f64);
    }

    /// Drops every entry of `tenant`: its roles or groups changed, so any of
    /// its keys may hold other permissions now.
    pub fn evict_tenant(&self, tenant: &TenantId) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.tenant() != tenant);
        metrics::gauge!("keyward_verify_cache_entries").set(entries.len() as f64);
    }

    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.clear();
        metrics::gauge!("keyward_verify_cache_entries").set(0.0);
    }

    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Failed argon2 proofs per key id in a sliding minute: past the limit a
/// cache miss for that key is refused (`429`) instead of burning a core.
pub struct FailureLimiter {
    failures: RwLock<HashMap<KeyId, (Instant, u32)>>,
    limit: u32,
    window: Duration,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            failures: RwLock::new(HashMap::new()),
            limit,
            window,
        }
    }

    pub fn is_blocked(&self, key_id: KeyId) -> bool {
        let failures = self.failures.read().unwrap_or_else(|p| p.into_inner());
        failures
            .get(&key_id)
            .is_some_and(|(since, n)| since.elapsed() < self.window && *n >= self.limit)
    }

    pub fn record_failure(&self, key_id: KeyId) {
        let mut failures = self.failures.write().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        if failures.len() > 100_000 {
            failures.retain(|_, (since, _)| since.elapsed() < window);
        }
        let entry = failures.entry(key_id).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// `lastUsedAt` kept in memory and written in batches by a background task:
/// the hot path never waits for a write. Sharded by key id so that worker
/// threads recording different keys rarely meet on one lock.
pub struct UsageRecorder {
    shards: Vec<std::sync::Mutex<HashMap<KeyId, DateTime<Utc>>>>,
}

const USAGE_SHARDS: usize = 16;

impl Default for UsageRecorder {
    fn default() -> Self {
        Self {
            shards: (0..USAGE_SHARDS).map(|_| Default::default()).collect(),
        }
    }
}

impl UsageRecorder {
    fn shard(&self, key_id: KeyId) -> &std::sync::Mutex<HashMap<KeyId, DateTime<Utc>>> {
        use std::hash::{BuildHasher, RandomState};
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let hash = HASHER.get_or_init(RandomState::new).hash_one(key_id);
        &self.shards[(hash as usize) % USAGE_SHARDS]
    }

    pub fn record(&self, key_id: KeyId, at: DateTime<Utc>) {
        let mut pending = self.shard(key_id).lock().unwrap_or_else(|p| p.into_inner());
        let slot = pending.entry(key_id).or_insert(at);
        if *slot < at {
            *slot = at;
        }
    }

    pub fn take(&self) -> Vec<(KeyId, DateTime<Utc>)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let mut pending = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(pending.drain());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cache: &VerifyCache, secret: &str, tenant: &str) -> CacheEntry {
        let perms = Permissions::from_grants(TenantId::parse(tenant).unwrap(), []);
        CacheEntry::new(cache.digest(secret), true, None, perms)
    }

    #[test]
    fn bounded_ttl_and_evictions() {
        let cache = VerifyCache::new(2, Duration::from_secs(60));
        let (a, b, c) = (KeyId::new(), KeyId::new(), KeyId::new());
        cache.insert(a, entry(&cache, "a", "t1"));
        cache.insert(b, entry(&cache, "b", "t2"));
        cache.insert(c, entry(&cache, "c", "t2"));
        assert_eq!(cache.len(), 2, "bounded");
        assert!(cache.get(c).is_some());
        cache.evict_tenant(&TenantId::parse("t2").unwrap());
        assert!(cache.get(c).is_none());
        let short = VerifyCache::new(10, Duration::ZERO);
        short.insert(a, entry(&short, "a", "t1"));
        assert!(short.get(a).is_none(), "expired by TTL");
    }

    #[test]
    fn digests_are_keyed_per_process() {
        let (x, y) = (
            VerifyCache::new(1, Duration::ZERO),
            VerifyCache::new(1, Duration::ZERO),
        );
        assert_eq!(x.digest("s"), x.digest("s"));
        assert_ne!(x.digest("s"), y.digest("s"));
        assert_ne!(x.digest("s"), x.digest("t"));
    }

    #[test]
    fn limiter_blocks_after_the_limit() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let k = KeyId::new();
        for _ in 0..3 {
            assert!(!l.is_blocked(k));
            l.record_failure(k);
        }
        assert!(l.is_blocked(k));
        assert!(!l.is_blocked(KeyId::new()));
    }

    #[test]
    fn usage_keeps_the_latest() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        u.record(k, t - chrono::Duration::seconds(5));
        assert_eq!(u.take(), vec![(k, t)]);
        assert!(u.take().is_empty());
    }
}
