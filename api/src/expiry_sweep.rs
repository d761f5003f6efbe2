//! Once a minute, the keys whose expiry has passed are marked as swept, so
//! that a page of a tenant's expired keys is one index range, as for the
//! other status filters (migration 0008). The mark says which index holds a
//! key, never whether it has expired: listings test the expiry themselves,
//! so a sweep that is late, missed or run by a replica whose clock is ahead
//! changes no answer, only how much an `expired` page sorts. Nothing cached
//! depends on it, and it writes no event or audit record.
//!
//! Every API replica sweeps: the batches skip rows another sweeper holds,
//! and an API on its own (the embedded default) needs no other process.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::store::{KeyStore, Store, error::chain};

const EVERY: Duration = Duration::from_secs(60);
/// Keys marked per statement (one short write transaction each).
const BATCH: u32 = 1_000;
/// Statements per round at most: a backlog (the first sweep after an
/// upgrade over years of expired keys) is worked off over several minutes
/// rather than holding SQLite's writer turn for long.
const BATCHES_PER_ROUND: usize = 100;

/// Sweeps now and then every minute, for as long as the runtime runs.
pub fn spawn(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sweep(store.as_ref()).await;
        }
    });
}

/// One round: batches until one comes back short, an error, or the
/// round's limit; how many keys it marked.
pub async fn sweep(store: &dyn KeyStore) -> u64 {
    let mut marked = 0;
    for _ in 0..BATCHES_PER_ROUND {
        match store.sweep_expired_keys(chrono::Utc::now(), BATCH).await {
            Ok(n) => {
                marked += n;
                if n < u64::from(BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "marking expired keys failed");
                break;
            }
        }
    }
    if marked > 0 {
        tracing::debug!(keys = marked, "marked expired keys for listing");
    }
    marked
}
