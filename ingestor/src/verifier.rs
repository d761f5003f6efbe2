//! The ingestor's verification: token shape and checksum (no I/O) →
//! tombstones (keys whose `key.revoked` event arrived: refused from memory,
//! API up or not) → local cache → on a miss, one `POST /api/v1/verify`
//! shared by every request for the same key and secret that arrives
//! meanwhile.
//!
//! The cache holds what the API said about a key for the `cacheTtlSeconds`
//! it allowed, keyed by key id, with a keyed BLAKE3 digest of the secret it
//! was asked about (never the secret). While the consumer is disconnected
//! the cache is not trusted at all: revocations may be passing us by, so
//! every request asks the API until the consumer is back and has emptied
//! the cache. Tombstones are trusted always: a revocation is final.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use keyward_core::cache_sweep;
use keyward_core::ids::{KeyId, TenantId};
use keyward_core::single_flight::SingleFlight;
use keyward_core::token::ApiKeyToken;

use crate::client::{Answer, Unavailable, ValidKey, VerifyClient};

/// The verdict on one request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Arc<ValidKey>),
    /// Malformed, unknown, revoked or expired: 401.
    Invalid(String),
    /// The API could not be asked: 503, never "valid".
    Unavailable,
}

impl Verdict {
    /// "May this key ingest into `stream`?" from the privileges verify
    /// returned (`ingestor`/`writer` on a matching stream, or
    /// `editor`/`admin`).
    pub fn may_ingest(&self, stream: &str) -> bool {
        matches!(self, Self::Valid(k) if keyward_core::rbac::may_ingest(&k.privileges, stream))
    }
}

struct Entry {
    digest: blake3::Hash,
    answer: Cached,
    until: Instant,
}

/// What a cache entry remembers: a valid key, or a final refusal.
enum Cached {
    Valid(Arc<ValidKey>),
    /// `expired`: no later answer can differ, so a key hammered after its
    /// expiry costs the API nothing more. (`revoked` becomes a tombstone.)
    Refused(String),
}

/// How long an `expired` answer is remembered (it can't change; this only
/// bounds the memory a stream of dead keys holds).
const REFUSAL_TTL: Duration = Duration::from_secs(300);

/// The longest any entry may live, whatever the API allows.
const MAX_ENTRY_TTL: Duration = Duration::from_secs(3600);

/// A tombstone outlives every positive answer for its key that could still
/// be cached anywhere: at least this, and twice the longest
/// `cacheTtlSeconds` the API has given.
pub const MIN_TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Tombstones kept at most (oldest dropped first): ~100 bytes each. A key
/// whose tombstone was dropped is still refused, by the API.
pub const TOMBSTONE_CAPACITY: usize = 1_000_000;

/// A call's answer, with the eviction epoch when the call began: a caller
/// that joined it later must not cache it under its own, newer epoch.
type Call = (u64, Result<Answer, Unavailable>);

/// Bounded, evicting by S3-FIFO (keys seen once leave first); a hit is a
/// shard read lock and a flag. Each entry carries its own end (`until`).
type Entries = quick_cache::sync::Cache<
    KeyId,
    Arc<Entry>,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

pub struct Verifier {
    client: VerifyClient,
    cache: Entries,
    tombstones: Tombstones,
    digest_key: [u8; 32],
    flights: SingleFlight<(KeyId, [u8; 32]), Call>,
    /// Bumped by every eviction: an answer fetched before one is not
    /// cached, so an event that overtakes a verify call can't be undone.
    evictions: Arc<AtomicU64>,
    /// Held while evicting and while checking the epoch to insert.
    evicting: Mutex<()>,
    trusted: AtomicBool,
    /// Verify calls made to the API (coalesced misses count once).
    api_calls: Arc<AtomicU64>,
    /// The longest `cacheTtlSeconds` seen, in seconds.
    longest_ttl: AtomicU64,
}

impl Verifier {
    /// A verifier whose cache holds at most `capacity` keys. It starts
    /// untrusted: `set_trusted(true)` once revocations are being received.
    pub fn new(client: VerifyClient, capacity: usize) -> Self {
        let mut digest_key = [0u8; 32];
        if getrandom::fill(&mut digest_key).is_err() {
            tracing::warn!("no OS randomness for the cache digest key");
        }
        Self {
            client,
            cache: Entries::with(
                capacity.max(1),
                capacity.max(1) as u64,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
            tombstones: Tombstones::new(TOMBSTONE_CAPACITY),
            digest_key,
            flights: SingleFlight::default(),
            evictions: Arc::new(AtomicU64::new(0)),
            evicting: Mutex::new(()),
            trusted: AtomicBool::new(false),
            api_calls: Arc::new(AtomicU64::new(0)),
            longest_ttl: AtomicU64::new(0),
        }
    }

    /// Verifies the token of an `Authorization: Bearer` header.
    pub async fn verify(&self, raw_token: &str) -> Verdict {
        let Ok(token) = ApiKeyToken::parse(raw_token) else {
            return self.count(Verdict::Invalid("malformed".into()), "checksum");
        };
        let key_id = token.key_id();
        if self.tombstones.contains(key_id) {
            return self.count(Verdict::Invalid("revoked".into()), "tombstone");
        }
        let digest = blake3::keyed_hash(&self.digest_key, token.expose_secret().as_bytes());
        let trusted = self.trusted.load(Ordering::Acquire);
        if trusted && let Some(hit) = self.lookup(key_id, &digest) {
            return self.count(hit, "hit");
        }
        let (epoch, answer) = self.ask(token, *digest.as_bytes()).await;
        // A revocation that arrived while we asked wins over the answer.
        if self.tombstones.contains(key_id) {
            return self.count(Verdict::Invalid("revoked".into()), "tombstone");
        }
        let verdict = match answer {
            Err(e) => {
                tracing::warn!(error = %e, "verify call failed");
                Verdict::Unavailable
            }
            Ok(Answer::Invalid(reason)) => {
                if reason == "revoked" {
                    self.bury(key_id);
                } else if trusted && reason == "expired" {
                    self.store(
                        key_id,
                        digest,
                        Cached::Refused(reason.clone()),
                        REFUSAL_TTL,
                        epoch,
                    );
                }
                Verdict::Invalid(reason)
            }
            Ok(Answer::Valid(key)) => {
                let key = Arc::new(key);
                self.longest_ttl
                    .fetch_max(key.cache_ttl.as_secs(), Ordering::AcqRel);
                if trusted {
                    let ttl = key.cache_ttl;
                    self.store(key_id, digest, Cached::Valid(Arc::clone(&key)), ttl, epoch);
                }
                Verdict::Valid(key)
            }
        };
        self.count(verdict, "miss")
    }

    fn lookup(&self, key_id: KeyId, digest: &blake3::Hash) -> Option<Verdict> {
        let entry = self
            .cache
            .get(&key_id)
            .filter(|e| e.until > Instant::now())?;
        if entry.digest != *digest {
            // One key, one secret: a different one is wrong.
            return Some(Verdict::Invalid("unknown".into()));
        }
        Some(match &entry.answer {
            Cached::Refused(reason) => Verdict::Invalid(reason.clone()),
            Cached::Valid(key) if key.expires_at.is_some_and(|t| t <= Utc::now()) => {
                Verdict::Invalid("expired".into())
            }
            Cached::Valid(key) => Verdict::Valid(Arc::clone(key)),
        })
    }

    /// One API call per (key, secret) at a time; later callers share it.
    async fn ask(&self, token: ApiKeyToken, digest: [u8; 32]) -> Call {
        let client = self.client.clone();
        let calls = Arc::clone(&self.api_calls);
        let evictions = Arc::clone(&self.evictions);
        self.flights
            .run((token.key_id(), digest), move || async move {
                let epoch = evictions.load(Ordering::Acquire);
                calls.fetch_add(1, Ordering::Relaxed);
                (epoch, client.verify(&token).await)
            })
            .await
    }

    fn store(
        &self,
        key_id: KeyId,
        digest: blake3::Hash,
        answer: Cached,
        ttl: Duration,
        epoch: u64,
    ) {
        if ttl.is_zero() {
            return;
        }
        let until = Instant::now() + ttl.min(MAX_ENTRY_TTL);
        let entry = Arc::new(Entry {
            digest,
            answer,
            until,
        });
        // Checked under the eviction lock: an eviction that overtook this
        // answer has bumped the epoch, or will remove the entry after us.
        let _guard = self.eviction_lock();
        if self.evictions.load(Ordering::Acquire) == epoch {
            self.cache.insert(key_id, entry);
        }
    }

    /// Drops a key's cached answers: it changed (roles, name, expiry).
    pub fn evict(&self, key_id: KeyId) {
        let _guard = self.eviction_lock();
        self.evictions.fetch_add(1, Ordering::AcqRel);
        self.cache.remove(&key_id);
    }

    /// Drops every cached answer for keys of `tenant`: its roles, groups or
    /// memberships changed (`rbac.changed`). Refusals (`expired`) stay: no
    /// role change can revive an expired key. Under the eviction lock, like
    /// every eviction: an answer fetched before it is not cached after it.
    ///
    /// One entry at a time (`cache_sweep`), so that checks of other
    /// tenants' keys never wait for a whole shard's walk. Complete all the
    /// same: nothing is stored while the eviction lock is held, and the
    /// sweep visits every entry present from its start to its end (entries
    /// are walked by slot, which removals elsewhere do not move).
    pub fn evict_tenant(&self, tenant: &TenantId) {
        let _guard = self.eviction_lock();
        self.evictions.fetch_add(1, Ordering::AcqRel);
        cache_sweep::sweep(
            &self.cache,
            |_, entry| matches!(&entry.answer, Cached::Valid(k) if k.tenant_id == *tenant),
        );
    }

    /// A key's `key.revoked` event arrived: it is refused from memory from
    /// now on, without asking the API, for as long as a positive answer for
    /// it could still be cached anywhere.
    pub fn bury(&self, key_id: KeyId) {
        let longest = Duration::from_secs(self.longest_ttl.load(Ordering::Acquire));
        self.tombstones
            .insert(key_id, MIN_TOMBSTONE_TTL.max(longest * 2));
        self.evict(key_id);
        metrics::gauge!("keyward_ingestor_tombstones").set(self.tombstones.len() as f64);
    }

    /// Empties the cache and says whether to serve from it from now on
    /// (`false` while revocations can't reach us). Tombstones stay: a
    /// revocation is final.
    pub fn set_trusted(&self, trusted: bool) {
        let _guard = self.eviction_lock();
        self.evictions.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
        self.trusted.store(trusted, Ordering::Release);
    }

    fn eviction_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.evicting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many verify calls reached the API so far.
    pub fn api_calls(&self) -> u64 {
        self.api_calls.load(Ordering::Relaxed)
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub fn cached(&self, key_id: KeyId) -> bool {
        self.cache.contains_key(&key_id)
    }

    /// Whether `key_id` is refused from memory as revoked.
    pub fn is_buried(&self, key_id: KeyId) -> bool {
        self.tombstones.contains(key_id)
    }

    /// Frees the answers past their end: they are never served, and would
    /// otherwise stay until newer ones pushed them out. Run now and then;
    /// one entry at a time (`cache_sweep`), so that checks never wait for
    /// a whole shard's sweep.
    pub fn drop_expired(&self) {
        let now = Instant::now();
        cache_sweep::sweep(&self.cache, |_, entry| entry.until <= now);
    }

    /// Cached answers (expired ones included until `drop_expired`) and
    /// tombstones, for the gauges.
    pub fn sizes(&self) -> (u64, usize) {
        (self.cache.len() as u64, self.tombstones.len())
    }

    fn count(&self, verdict: Verdict, cache: &'static str) -> Verdict {
        let result = match &verdict {
            Verdict::Valid(_) => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unavailable => "unavailable",
        };
        keyward_core::telemetry::count(
            "keyward_ingestor_verify_total",
            &[("result", result), ("cache", cache)],
        );
        verdict
    }
}

/// Keys whose revocation arrived, each until its own deadline; at most
/// `capacity`, oldest dropped first.
struct Tombstones {
    inner: RwLock<TombstoneSet>,
    capacity: usize,
}

#[derive(Default)]
struct TombstoneSet {
    until: HashMap<KeyId, Instant>,
    /// Insertion order: deadlines grow along it (the TTL only grows), so
    /// expired ones are at the front.
    order: VecDeque<KeyId>,
}

impl Tombstones {
    fn new(capacity: usize) -> Self {
        Self {
            inner: RwLock::default(),
            capacity: capacity.max(1),
        }
    }

    fn contains(&self, key_id: KeyId) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .until
            .get(&key_id)
            .is_some_and(|until| *until > Instant::now())
    }

    fn insert(&self, key_id: KeyId, ttl: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let TombstoneSet { until, order } = &mut *inner;
        // A redelivered event extends the deadline, in its old place.
        if let Some(deadline) = until.get_mut(&key_id) {
            *deadline = (*deadline).max(now + ttl);
            return;
        }
        while let Some(oldest) = order.front().copied() {
            let expired = until.get(&oldest).is_none_or(|u| *u <= now);
            if !expired && until.len() < self.capacity {
                break;
            }
            order.pop_front();
            until.remove(&oldest);
        }
        until.insert(key_id, now + ttl);
        order.push_back(key_id);
    }

    fn len(&self) -> usize {
        self.inner.read().map(|i| i.until.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifier of `capacity` answers whose API is never reached: these
    /// tests fill its cache themselves.
    fn offline(capacity: usize) -> Verifier {
        let api = url::Url::parse("http://127.0.0.1:9").unwrap();
        let key = ApiKeyToken::generate(&Default::default(), KeyId::new()).unwrap();
        let client = VerifyClient::new(&api, key, Duration::from_secs(1)).unwrap();
        Verifier::new(client, capacity)
    }

    #[test]
    fn answers_past_their_end_are_not_served_and_are_swept() {
        let verifier = offline(100);
        let (short, long) = (KeyId::new(), KeyId::new());
        let digest = blake3::hash(b"secret");
        let refused = || Cached::Refused("expired".into());
        verifier.store(short, digest, refused(), Duration::from_millis(50), 0);
        verifier.store(long, digest, refused(), Duration::from_secs(60), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(verifier.lookup(short, &digest).is_none(), "past its end");
        assert!(verifier.lookup(long, &digest).is_some());
        assert_eq!(verifier.sizes().0, 2, "held until swept");
        verifier.drop_expired();
        assert_eq!(verifier.sizes().0, 1);
        assert!(verifier.cached(long));
    }

    /// An `rbac.changed` leaves no answer of its tenant behind, refusals
    /// and other tenants' answers stay, and a sweep of expired answers
    /// running at the same time (removing entries around the eviction's
    /// walk) does not make it skip any.
    #[test]
    fn a_tenant_eviction_is_complete_while_expired_answers_are_swept() {
        let verifier = Arc::new(offline(20_000));
        let changed = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("globex").unwrap();
        let digest = blake3::hash(b"secret");
        let valid = |tenant: &TenantId, key_id| {
            Cached::Valid(Arc::new(ValidKey {
                tenant_id: tenant.clone(),
                key_id,
                privileges: Vec::new(),
                expires_at: None,
                cache_ttl: Duration::from_secs(60),
            }))
        };
        let mut kept = Vec::new();
        for i in 0..12_000 {
            let key_id = KeyId::new();
            // A third of them already past their end: the sweep's work.
            let expired = i % 3 == 0;
            let ttl = if expired {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(60)
            };
            let answer = match i % 4 {
                0 | 1 => valid(&changed, key_id),
                2 => valid(&other, key_id),
                _ => Cached::Refused("expired".into()),
            };
            if i % 4 >= 2 && !expired {
                kept.push(key_id);
            }
            verifier.store(key_id, digest, answer, ttl, 0);
        }
        std::thread::sleep(Duration::from_millis(5));
        let sweeping = {
            let verifier = Arc::clone(&verifier);
            std::thread::spawn(move || verifier.drop_expired())
        };
        verifier.evict_tenant(&changed);
        sweeping.join().unwrap();
        let of_changed = verifier
            .cache
            .iter()
            .filter(|(_, e)| matches!(&e.answer, Cached::Valid(k) if k.tenant_id == changed))
            .count();
        assert_eq!(of_changed, 0, "an answer of the changed tenant stayed");
        for key_id in &kept {
            assert!(
                verifier.cached(*key_id),
                "another tenant's answer or a refusal went"
            );
        }
    }

    #[test]
    fn tombstones_expire_and_stay_bounded() {
        let t = Tombstones::new(3);
        let keys: Vec<KeyId> = (0..5).map(|_| KeyId::new()).collect();
        t.insert(keys[0], Duration::ZERO);
        assert!(!t.contains(keys[0]), "expired");
        for k in &keys[1..] {
            t.insert(*k, Duration::from_secs(60));
        }
        assert_eq!(t.len(), 3);
        assert!(!t.contains(keys[1]), "the oldest went first");
        assert!(keys[2..].iter().all(|k| t.contains(*k)));
        t.insert(keys[4], Duration::from_secs(60));
        assert_eq!(t.len(), 3, "a duplicate takes no second place");
    }
}
