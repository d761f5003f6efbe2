//! The one verification path behind Bearer authentication, `validate` and
//! `verify`: token shape and checksum (no I/O) → verify cache → on a miss,
//! one store read per key id however many requests wait for it (single
//! flight), itself batched with the misses of other keys (`KeyLoader`), the
//! SHA-256 digest compared in constant time, and the answer cached unless
//! the key or its tenant changed while it was read.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use keyward_core::digest::{KeyDigest, StoredSecret};
use keyward_core::ids::KeyId;
use keyward_core::password::PasswordHasher;
use keyward_core::rbac::Permissions;
use keyward_core::single_flight::SingleFlight;
use keyward_core::store::{KeyChange, Store};
use keyward_core::token::ApiKeyToken;
use serde::Serialize;

use crate::caller_memo::CallerMemo;
use crate::error::{ApiError, ApiResult, Code};
use crate::fill_gate::FillGates;
use crate::generations::{Generations, Scope, Snapshot};
use crate::interned::Interned;
use crate::key_loader::{KeyLoader, ReadFailed};
use crate::usage::{self, UsageRecorder};
use crate::verify_cache::{DependsOn, Filled, KeyCache, KeyEntry, KeyState, is_current};

/// How often remembered uses are written: a key's first use in a minute
/// (`usage::USAGE_RESOLUTION`) shows in `lastUsedAt` at most this late,
/// plus the spread of a big flush (`usage::write_paced`).
/// Each flush costs one UPDATE per key it writes.
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

/// A key proven valid, with the entry that proved it (cached, or made for
/// this answer alone when the cache would not take it).
#[derive(Clone)]
pub struct VerifiedKey {
    pub key_id: KeyId,
    entry: Arc<Filled<KeyEntry>>,
}

impl VerifiedKey {
    pub fn permissions(&self) -> &Arc<Permissions> {
        &self.entry.value.state.permissions
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.entry.value.state.expires_at
    }

    /// The key's `verify` answer once made (`KeyState::answer`).
    pub fn answer(&self) -> &OnceLock<Bytes> {
        &self.entry.value.state.answer
    }
}

impl std::fmt::Debug for VerifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedKey")
            .field("key_id", &self.key_id)
            .field("tenant", &self.permissions().tenant)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Valid(VerifiedKey),
    Invalid(InvalidReason),
}

/// What the checks before any store read made of a token.
enum Checked {
    Answered(Outcome),
    Miss { key_id: KeyId, offered: KeyDigest },
}

/// What one store read found: the key's row (`None`: no such key), with
/// the snapshot taken before the read.
type Read = Arc<Filled<Option<KeyRow>>>;

struct KeyRow {
    secret_hash: String,
    state: KeyState,
}

impl DependsOn<KeyId> for Option<KeyRow> {
    fn scopes<'a>(&'a self, key: &'a KeyId) -> [Scope<'a>; 2] {
        match self {
            Some(row) => [Scope::Key(*key), Scope::Tenant(row.state.tenant())],
            // No such key: only its own creation could change that.
            None => [Scope::Key(*key), Scope::Key(*key)],
        }
    }
}

impl From<ReadFailed> for ApiError {
    fn from(e: ReadFailed) -> Self {
        match e {
            ReadFailed::Unavailable => ApiError::new(Code::Unavailable),
            ReadFailed::Internal => ApiError::new(Code::Internal),
        }
    }
}

pub struct VerifyService {
    /// Shared with every flight it leads: one reference count to move per
    /// miss, not one per part (each such count is a cache line that both
    /// actix workers write).
    reader: Arc<Reader>,
    /// Only for keys still stored as argon2id by an earlier version.
    passwords: PasswordHasher,
    pub cache: KeyCache,
    /// Each worker's copy of the Bearer callers it answers most.
    callers: CallerMemo,
    flights: SingleFlight<KeyId, Result<Read, ReadFailed>>,
    usage: UsageRecorder,
}

impl VerifyService {
    pub fn new(
        store: Arc<dyn Store>,
        passwords: PasswordHasher,
        cache: KeyCache,
        generations: Arc<Generations>,
        gates: Arc<FillGates>,
    ) -> Self {
        Self {
            reader: Arc::new(Reader {
                loader: KeyLoader::spawn(Arc::clone(&store)),
                store,
                generations,
                gates,
                permissions: Interned::default(),
            }),
            passwords,
            cache,
            callers: CallerMemo::default(),
            flights: SingleFlight::default(),
            usage: UsageRecorder::default(),
        }
    }

    /// The answer for the caller of a request (`Authorization: Bearer`)
    /// when it needs no store read (a malformed token, or a key the cache
    /// holds): no I/O, nothing to await, so the hot path needs no future of
    /// its own; `None`: ask `verify`. From this thread's copy of the
    /// caller's entry when it has one (`caller_memo`), else from the cache,
    /// keeping a copy of a valid answer's entry for the next request.
    pub fn verify_caller_cached(&self, raw: &str) -> Option<Outcome> {
        let offered = KeyDigest::of(raw);
        let now = Instant::now();
        if let Some((key_id, entry)) = self.callers.get(&offered, &self.reader.generations, now) {
            return Some(count(self.judge(key_id, entry, &offered), "hit"));
        }
        let Ok(key_id) = ApiKeyToken::key_id_of(raw) else {
            return Some(count(Outcome::Invalid(InvalidReason::Malformed), "none"));
        };
        let (entry, until) = self.cache.get_until(&key_id)?;
        let verdict = self.judge(key_id, Arc::clone(&entry), &offered);
        if matches!(verdict, Outcome::Valid(_)) {
            self.callers.keep(key_id, &entry, until);
        }
        Some(count(verdict, "hit"))
    }

    pub async fn verify(&self, raw: &str) -> ApiResult<Outcome> {
        let (key_id, offered) = match self.check(raw) {
            Checked::Answered(outcome) => return Ok(outcome),
            Checked::Miss { key_id, offered } => (key_id, offered),
        };
        let reader = Arc::clone(&self.reader);
        let mut read = self
            .flights
            .run(key_id, move || reader.read(key_id))
            .await?;
        if !self.reader.is_current(key_id, &read) {
            // The flight began before a change of this key or its tenant
            // and this request may have come after that change's commit:
            // read again rather than answer from before it.
            read = Arc::clone(&self.reader).read(key_id).await?;
        }
        let Some(row) = &read.value else {
            return Ok(count(Outcome::Invalid(InvalidReason::Unknown), "miss"));
        };
        let verdict = match StoredSecret::classify(&row.secret_hash) {
            StoredSecret::Sha256(stored) => {
                let entry = self.remember(key_id, stored, row, read.filled);
                self.judge(key_id, entry, &offered)
            }
            StoredSecret::Argon2(phc) => {
                if self.prove_legacy(key_id, raw, phc).await? {
                    let entry = self.remember(key_id, offered, row, read.filled);
                    self.judge(key_id, entry, &offered)
                } else {
                    Outcome::Invalid(InvalidReason::Unknown)
                }
            }
            StoredSecret::Unreadable => {
                tracing::error!(key_id = %key_id, "stored secret hash is unreadable");
                Outcome::Invalid(InvalidReason::Unknown)
            }
        };
        Ok(count(verdict, "miss"))
    }

    /// Token shape and checksum, then the cache. The token is checked in
    /// place, not copied: a well-formed `raw` is the whole secret.
    fn check(&self, raw: &str) -> Checked {
        let Ok(key_id) = ApiKeyToken::key_id_of(raw) else {
            return Checked::Answered(count(Outcome::Invalid(InvalidReason::Malformed), "none"));
        };
        let offered = KeyDigest::of(raw);
        match self.cache.get(&key_id) {
            Some(entry) => Checked::Answered(count(self.judge(key_id, entry, &offered), "hit")),
            None => Checked::Miss { key_id, offered },
        }
    }

    /// The entry for what a read found, cached unless the key or its
    /// tenant changed since the read's snapshot (then it serves this
    /// answer alone).
    fn remember(
        &self,
        key_id: KeyId,
        digest: KeyDigest,
        row: &KeyRow,
        filled: Snapshot,
    ) -> Arc<Filled<KeyEntry>> {
        // Every request of a flight gets here with the same read: the
        // first one caches it, the others find it there.
        if let Some(cached) = self.cache.get(&key_id)
            && cached.filled >= filled
        {
            return cached;
        }
        let entry = Arc::new(Filled {
            value: KeyEntry {
                digest,
                state: row.state.fresh_copy(),
            },
            filled,
        });
        self.cache.insert(key_id, Arc::clone(&entry));
        entry
    }

    /// A key written as argon2id by an earlier version: proven on the
    /// password pool, then stored as its SHA-256 digest. `secret` is the
    /// whole token, which `check` found well-formed.
    async fn prove_legacy(&self, key_id: KeyId, secret: &str, phc: &str) -> ApiResult<bool> {
        if !self.passwords.verify(secret, phc).await? {
            return Ok(false);
        }
        let digest = KeyDigest::of(secret).encode();
        if self
            .reader
            .store
            .upgrade_key_hash(key_id, phc, &digest)
            .await?
        {
            tracing::info!(key_id = %key_id, "key hash rewritten as SHA-256");
        }
        Ok(true)
    }

    /// The offered secret against the key's digest, then status and expiry
    /// at this moment; a valid use is remembered.
    fn judge(&self, key_id: KeyId, entry: Arc<Filled<KeyEntry>>, offered: &KeyDigest) -> Outcome {
        let state = &entry.value.state;
        // One key has one secret: another digest is a wrong secret, and
        // a wrong secret learns nothing about the key's state.
        if !entry.value.digest.matches(offered) {
            return Outcome::Invalid(InvalidReason::Unknown);
        }
        let now = Utc::now();
        if !state.active {
            return Outcome::Invalid(InvalidReason::Revoked);
        }
        if state.expires_at.is_some_and(|exp| exp <= now) {
            return Outcome::Invalid(InvalidReason::Expired);
        }
        if state.first_use_in(now.timestamp()) {
            self.usage.record(key_id, now);
        }
        Outcome::Valid(VerifiedKey { key_id, entry })
    }

    /// Writes remembered uses, paced (`usage::write_paced`); what a failed
    /// write left is written at the next flush.
    pub async fn flush_usage(&self) {
        let batch = self.usage.take(Utc::now());
        let store = &self.reader.store;
        let written = usage::write_paced(batch, |chunk| async move {
            store.record_key_usage(&chunk).await
        });
        if let Err((e, unwritten)) = written.await {
            tracing::warn!(error = %keyward_core::store::error::chain(&e), "lastUsedAt not recorded");
            self.usage.restore(unwritten);
        }
    }
}

/// Reads a key's row for a fill; held by an `Arc`, so that a flight
/// outlives the request that led it.
struct Reader {
    store: Arc<dyn Store>,
    loader: KeyLoader,
    generations: Arc<Generations>,
    gates: Arc<FillGates>,
    /// Keys of a tenant mostly hold equal permissions: cached, they share
    /// one copy.
    permissions: Interned<Permissions>,
}

impl Reader {
    /// Snapshot, then the row by primary key.
    async fn read(self: Arc<Self>, key_id: KeyId) -> Result<Read, ReadFailed> {
        let filled = self.generations.snapshot();
        metrics::counter!("keyward_verify_store_reads_total").increment(1);
        let creds = self.loader.load(key_id).await?;
        self.gates.key.pass().await;
        Ok(Arc::new(Filled {
            value: creds.map(|c| KeyRow {
                state: KeyState::new(
                    c.active,
                    c.expires_at,
                    self.permissions
                        .share(Permissions::from_grants(c.tenant_id, c.grants)),
                ),
                secret_hash: c.secret_hash,
            }),
            filled,
        }))
    }

    /// Whether no change of the key or its tenant came after the read's
    /// snapshot.
    fn is_current(&self, key_id: KeyId, read: &Read) -> bool {
        is_current(&self.generations, &key_id, read)
    }
}

/// Applies a change (local, or heard from another replica) to every cache
/// that may hold an answer depending on it.
pub fn apply_change(generations: &Generations, change: &KeyChange) {
    match change {
        KeyChange::Key(id) => generations.bump(Scope::Key(*id)),
        KeyChange::Tenant(t) => generations.bump(Scope::Tenant(t)),
        KeyChange::User(u) => generations.bump(Scope::User(u)),
        KeyChange::Lost => generations.bump_all(),
    }
}

fn count(verdict: Outcome, cache: &'static str) -> Outcome {
    let result = match &verdict {
        Outcome::Valid(_) => "valid",
        Outcome::Invalid(InvalidReason::Unknown) => "unknown",
        Outcome::Invalid(InvalidReason::Revoked) => "revoked",
        Outcome::Invalid(InvalidReason::Expired) => "expired",
        Outcome::Invalid(InvalidReason::Malformed) => "malformed",
    };
    keyward_core::telemetry::count(
        "keyward_verify_total",
        &[("result", result), ("cache", cache)],
    );
    verdict
}

/// Background work of the verifier: batched `lastUsedAt` writes every
/// `USAGE_FLUSH_INTERVAL`, with stale cache entries freed and the cache
/// gauge, and the changes other replicas announce (PostgreSQL NOTIFY).
/// Spawned on tokio, not on actix's local set: a `PgListener` must be
/// dropped inside a tokio context when the server stops.
pub fn spawn_background(
    verifier: Arc<VerifyService>,
    generations: Arc<Generations>,
    store: Arc<dyn Store>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            verifier.flush_usage().await;
            verifier.cache.drop_stale();
            metrics::gauge!("keyward_verify_cache_entries")
                .set(verifier.cache.entry_count() as f64);
        }
    });
    // Until the feed listens, changes made on other replicas go unheard.
    if store.backend() != "sqlite" {
        generations.see(false);
    }
    tokio::spawn(async move {
        loop {
            match store.key_changes().await {
                // SQLite: one process owns the file; nobody else to hear.
                Ok(None) => return generations.see(true),
                Ok(Some(mut feed)) => {
                    // Whatever changed before we listened is unknown.
                    generations.bump_all();
                    generations.see(true);
                    loop {
                        match feed.next().await {
                            // Listen anew, so that we know when we hear
                            // again: what was sent meanwhile is gone.
                            Ok(KeyChange::Lost) => {
                                tracing::warn!("key change feed lost its connection");
                                break;
                            }
                            Ok(change) => {
                                apply_change(&generations, &change);
                                metrics::counter!("keyward_cache_changes_heard_total").increment(1);
                            }
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
            // Blind until listening again: nothing cached counts meanwhile.
            generations.see(false);
            generations.bump_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
