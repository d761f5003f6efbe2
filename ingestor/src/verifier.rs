//! The ingestor's verification: token shape and checksum (no I/O) → local
//! cache → on a miss, one `POST /api/v1/verify` shared by every request
//! for the same key and secret that arrives meanwhile.
//!
//! The cache holds what the API said about a key for the `cacheTtlSeconds`
//! it allowed, keyed by key id, with a keyed BLAKE3 digest of the secret it
//! was asked about (never the secret). A revocation evicts the key at once
//! (`RevocationConsumer`). While the consumer is disconnected the cache is
//! not trusted at all: revocations may be passing us by, so every request
//! asks the API until the consumer is back and has emptied the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use keyward_core::ids::KeyId;
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
    /// `revoked` or `expired`: no later answer can differ, so a key
    /// hammered after its revocation costs the API nothing more.
    Refused(String),
}

/// How long a final refusal is remembered (it can't change; this only
/// bounds the memory a stream of dead keys holds).
const REFUSAL_TTL: std::time::Duration = std::time::Duration::from_secs(300);

type Pending = Shared<BoxFuture<'static, Result<Answer, Unavailable>>>;

pub struct Verifier {
    client: VerifyClient,
    cache: RwLock<HashMap<KeyId, Entry>>,
    capacity: usize,
    digest_key: [u8; 32],
    in_flight: Mutex<HashMap<(KeyId, [u8; 32]), Pending>>,
    /// Bumped by every eviction: an answer fetched before one is not
    /// cached, so a revoke that overtakes a verify call can't be undone.
    evictions: AtomicU64,
    trusted: AtomicBool,
    /// Verify calls made to the API (coalesced misses count once).
    api_calls: Arc<AtomicU64>,
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
            cache: RwLock::new(HashMap::new()),
            capacity: capacity.max(1),
            digest_key,
            in_flight: Mutex::new(HashMap::new()),
            evictions: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            api_calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Verifies the token of an `Authorization: Bearer` header.
    pub async fn verify(&self, raw_token: &str) -> Verdict {
        let Ok(token) = ApiKeyToken::parse(raw_token) else {
            return self.count(Verdict::Invalid("malformed".into()), "checksum");
        };
        let key_id = token.key_id();
        let digest = blake3::keyed_hash(&self.digest_key, token.expose_secret().as_bytes());
        let trusted = self.trusted.load(Ordering::Acquire);
        if trusted && let Some(hit) = self.lookup(key_id, &digest) {
            return self.count(hit, "hit");
        }
        let epoch = self.evictions.load(Ordering::Acquire);
        let answer = self.ask(token, *digest.as_bytes()).await;
        let verdict = match answer {
            Err(e) => {
                tracing::warn!(error = %e, "verify call failed");
                Verdict::Unavailable
            }
            Ok(Answer::Invalid(reason)) => {
                if trusted && (reason == "revoked" || reason == "expired") {
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
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(&key_id).filter(|e| e.until > Instant::now())?;
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
    async fn ask(&self, token: ApiKeyToken, digest: [u8; 32]) -> Result<Answer, Unavailable> {
        let slot = (token.key_id(), digest);
        let pending = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            in_flight
                .entry(slot)
                .or_insert_with(|| {
                    let client = self.client.clone();
                    let calls = Arc::clone(&self.api_calls);
                    async move {
                        calls.fetch_add(1, Ordering::Relaxed);
                        client.verify(&token).await
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let answer = pending.await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot);
        answer
    }

    fn store(
        &self,
        key_id: KeyId,
        digest: blake3::Hash,
        answer: Cached,
        ttl: std::time::Duration,
        epoch: u64,
    ) {
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the write lock: an eviction holds it too.
        if self.evictions.load(Ordering::Acquire) != epoch {
            return;
        }
        if cache.len() >= self.capacity && !cache.contains_key(&key_id) {
            let now = Instant::now();
            cache.retain(|_, e| e.until > now);
            if cache.len() >= self.capacity
                && let Some(victim) = cache.keys().next().copied()
            {
                cache.remove(&victim);
            }
        }
        let until = Instant::now() + ttl;
        cache.insert(
            key_id,
            Entry {
                digest,
                answer,
                until,
            },
        );
        metrics::gauge!("keyward_ingestor_cache_entries").set(cache.len() as f64);
    }

    /// Drops a key: its revocation arrived.
    pub fn evict(&self, key_id: KeyId) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.evictions.fetch_add(1, Ordering::AcqRel);
        cache.remove(&key_id);
        metrics::gauge!("keyward_ingestor_cache_entries").set(cache.len() as f64);
    }

    /// Empties the cache and says whether to serve from it from now on
    /// (`false` while revocations can't reach us).
    pub fn set_trusted(&self, trusted: bool) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.evictions.fetch_add(1, Ordering::AcqRel);
        cache.clear();
        self.trusted.store(trusted, Ordering::Release);
        metrics::gauge!("keyward_ingestor_cache_entries").set(0.0);
    }

    /// How many verify calls reached the API so far.
    pub fn api_calls(&self) -> u64 {
        self.api_calls.load(Ordering::Relaxed)
    }

    pub fn is_trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub fn cached(&self, key_id: KeyId) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key_id)
    }

    fn count(&self, verdict: Verdict, cache: &'static str) -> Verdict {
        let result = match &verdict {
            Verdict::Valid(_) => "valid",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unavailable => "unavailable",
        };
        keyward_core::telemetry::counter(
            "keyward_ingestor_verify_total",
            &[("result", result), ("cache", cache)],
        )
        .increment(1);
        verdict
    }
}
