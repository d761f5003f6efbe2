//! The one verification path behind Bearer authentication, `validate` and
//! `verify`: token shape and checksum (no I/O) → verify cache → on a miss,
//! the key row by primary key and an argon2 proof on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::hashing::SecretHasher;
use keyward_core::ids::KeyId;
use keyward_core::rbac::Permissions;
use keyward_core::store::{KeyChange, Store};
use keyward_core::token::ApiKeyToken;
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};
use crate::verify_cache::{CacheEntry, FailureLimiter, UsageRecorder, VerifyCache};

/// How often remembered uses are written. `lastUsedAt` is at most this
/// stale; each flush costs one UPDATE per key used since the last one.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a key is not valid; `verify` answers it as `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvalidReason {
    Unknown,
    Revoked,
    Expired,
    Malformed,
}

#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: KeyId,
    pub permissions: Arc<Permissions>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    Valid(VerifiedKey),
    Invalid(InvalidReason),
}

pub struct Verifier {
    store: Arc<dyn Store>,
    hasher: SecretHasher,
    pub cache: VerifyCache,
    limiter: FailureLimiter,
    usage: UsageRecorder,
}

impl Verifier {
    pub fn new(
        store: Arc<dyn Store>,
        hasher: SecretHasher,
        ttl: Duration,
        capacity: usize,
    ) -> Self {
        Self {
            store,
            hasher,
            cache: VerifyCache::new(capacity, ttl),
            limiter: FailureLimiter::new(10, Duration::from_secs(60)),
            usage: UsageRecorder::default(),
        }
    }

    pub async fn verify(&self, raw: &str) -> ApiResult<Verdict> {
        let Ok(token) = ApiKeyToken::parse(raw) else {
            return Ok(count(Verdict::Invalid(InvalidReason::Malformed), "none"));
        };
        let key_id = token.key_id();
        let digest = self.cache.digest(token.expose_secret());
        if let Some(entry) = self.cache.get(key_id) {
            // One key has one secret: a different digest is a wrong secret.
            let verdict = if entry.digest == digest {
                self.judge(key_id, &entry)
            } else {
                Verdict::Invalid(InvalidReason::Unknown)
            };
            return Ok(count(verdict, "hit"));
        }
        if self.limiter.is_blocked(key_id) {
            metrics::counter!("keyward_verify_total", "result" => "rate_limited", "cache" => "miss")
                .increment(1);
            return Err(ApiError::new(Code::RateLimited));
        }
        let Some(creds) = self.store.key_credentials(key_id).await? else {
            return Ok(count(Verdict::Invalid(InvalidReason::Unknown), "miss"));
        };
        if !self
            .hasher
            .verify(token.expose_secret(), &creds.secret_hash)
            .await?
        {
            self.limiter.record_failure(key_id);
            return Ok(count(Verdict::Invalid(InvalidReason::Unknown), "miss"));
        }
        let permissions = Permissions::from_grants(creds.tenant_id, creds.grants);
        let entry = CacheEntry::new(digest, creds.active, creds.expires_at, permissions);
        self.cache.insert(key_id, entry.clone());
        Ok(count(self.judge(key_id, &entry), "miss"))
    }

    /// Status and expiry at this moment; a valid use is remembered.
    fn judge(&self, key_id: KeyId, entry: &CacheEntry) -> Verdict {
        let now = Utc::now();
        if !entry.active {
            return Verdict::Invalid(InvalidReason::Revoked);
        }
        if entry.expires_at.is_some_and(|exp| exp <= now) {
            return Verdict::Invalid(InvalidReason::Expired);
        }
        self.usage.record(key_id, now);
        Verdict::Valid(VerifiedKey {
            key_id,
            permissions: Arc::clone(&entry.permissions),
            expires_at: entry.expires_at,
        })
    }

    /// Writes remembered uses in one batch.
    pub async fn flush_usage(&self) {
        let batch = self.usage.take();
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_key_usage(&batch).await {
            tracing::warn!(error = %keyward_core::store::error::chain(&e), "lastUsedAt not recorded");
            for (key_id, at) in batch {
                self.usage.record(key_id, at);
            }
        }
    }

    pub fn apply(&self, change: &KeyChange) {
        match change {
            KeyChange::Key(id) => self.cache.evict(*id),
            KeyChange::Tenant(t) => self.cache.evict_tenant(t),
            KeyChange::Lost => self.cache.clear(),
        }
    }
}

fn count(verdict: Verdict, cache: &'static str) -> Verdict {
    let result = match &verdict {
        Verdict::Valid(_) => "valid",
        Verdict::Invalid(InvalidReason::Unknown) => "unknown",
        Verdict::Invalid(InvalidReason::Revoked) => "revoked",
        Verdict::Invalid(InvalidReason::Expired) => "expired",
        Verdict::Invalid(InvalidReason::Malformed) => "malformed",
    };
    keyward_core::telemetry::counter(
        "keyward_verify_total",
        &[("result", result), ("cache", cache)],
    )
    .increment(1);
    verdict
}

/// Background work of the verifier: batched `lastUsedAt` writes every
/// `USAGE_FLUSH_INTERVAL`, and evictions other replicas announce (PostgreSQL NOTIFY).
/// Spawned on tokio, not on actix's local set: a `PgListener` must be
/// dropped inside a tokio context when the server stops.
pub fn spawn_background(verifier: Arc<Verifier>, store: Arc<dyn Store>) {
    let flusher = Arc::clone(&verifier);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            flusher.flush_usage().await;
        }
    });
    tokio::spawn(async move {
        loop {
            match store.key_changes().await {
                Ok(None) => return,
                Ok(Some(mut feed)) => {
                    // Whatever happened before we listened is unknown.
                    verifier.cache.clear();
                    loop {
                        match feed.next().await {
                            Ok(change) => verifier.apply(&change),
                            Err(e) => {
                                tracing::warn!(error = %keyward_core::store::error::chain(&e), "key change feed lost");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %keyward_core::store::error::chain(&e), "cannot listen for key changes");
                }
            }
            verifier.cache.clear();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
