//! Claim → publish → mark: the outbox delivery of DESIGN.md (Deliver).
//!
//! No transaction is open while the broker is talked to: claiming is one
//! short statement that sets a lease, marking is another. A worker that
//! dies between the two leaves a lease that expires, and the event is
//! published again (at least once; consumers are idempotent by event id).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use keyward_core::store::{OutboxEvent, OutboxStore, StoreError, error::chain};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Outcome};
use crate::retry::{AfterFailure, RetrySchedule};

/// Why draining stopped before the outbox ran dry.
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// The broker connection failed: reconnect before claiming again.
    BrokerLost,
    /// The database failed to claim: wait and try again.
    Database,
}

pub struct Deliverer {
    pub store: Arc<dyn OutboxStore>,
    pub owner: String,
    pub batch: u32,
    pub lease: Duration,
    pub confirm_timeout: Duration,
    pub liveness: Duration,
    pub schedule: RetrySchedule,
}

impl Deliverer {
    /// Delivers batches until none is due, the broker fails, or `shutdown`
    /// is asked for (the batch in hand is always finished first).
    pub async fn drain(
        &self,
        broker: &Broker,
        shutdown: &CancellationToken,
    ) -> Result<(), Interrupted> {
        while !shutdown.is_cancelled() {
            let events = match self
                .store
                .claim_events(&self.owner, self.lease, self.batch, Utc::now())
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "claiming outbox events failed");
                    return Err(Interrupted::Database);
                }
            };
            if events.is_empty() {
                return Ok(());
            }
            let full = events.len() == self.batch as usize;
            if !self.deliver(broker, &events).await {
                return Err(Interrupted::BrokerLost);
            }
            if !full {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Publishes one claimed batch and records what the broker said;
    /// `false` when the broker connection failed.
    async fn deliver(&self, broker: &Broker, events: &[OutboxEvent]) -> bool {
        let (outcomes, healthy) = broker.publish_batch(events, self.confirm_timeout).await;
        let now = Utc::now();
        let mut delivered = Vec::with_capacity(events.len());
        for (event, (outcome, took)) in events.iter().zip(outcomes) {
            match outcome {
                Outcome::Confirmed | Outcome::Unrouted => {
                    delivered.push(event.id);
                    metrics::histogram!("keyward_event_publish_seconds").record(took);
                    let lag = (now - event.created_at).to_std().unwrap_or_default();
                    metrics::histogram!("keyward_event_delivery_lag_seconds").record(lag);
                    if outcome == Outcome::Unrouted {
                        metrics::counter!("keyward_events_unrouted_total").increment(1);
                    }
                }
                Outcome::Failed(reason) => self.failed(event, reason).await,
                Outcome::Unpublishable => self.unpublishable(event).await,
            }
        }
        if !delivered.is_empty() {
            let live_since =
                now - chrono::Duration::from_std(self.liveness).unwrap_or(chrono::Duration::zero());
            match self.store.mark_published(&delivered, now, live_since).await {
                Ok(n) => {
                    metrics::counter!("keyward_events_published_total").increment(n);
                    tracing::debug!(published = n, "batch confirmed");
                }
                // The lease runs out and the batch goes out again: a
                // duplicate, never a loss.
                Err(e) => log_mark_failure(&e, delivered.len()),
            }
        }
        healthy
    }

    /// A row this version cannot make a message of (written by a newer
    /// one): dead-lettered at once, for a newer worker's `retry-dead`.
    async fn unpublishable(&self, event: &OutboxEvent) {
        metrics::counter!("keyward_events_dead_total").increment(1);
        tracing::error!(
            event_id = %event.event_id, kind = %event.kind,
            "event of a type this version cannot publish dead-lettered"
        );
        if let Err(e) = self
            .store
            .mark_dead(&self.owner, event.id, UNPUBLISHABLE, Utc::now())
            .await
        {
            log_mark_failure(&e, 1);
        }
    }

    /// Counts the failed attempt: retry later, or dead-letter.
    async fn failed(&self, event: &OutboxEvent, reason: &'static str) {
        let failures = u32::try_from(event.attempts).unwrap_or(0).saturating_add(1);
        let now = Utc::now();
        let result = match self.schedule.after_failure(failures, event.created_at, now) {
            AfterFailure::RetryAt(at) => {
                metrics::counter!("keyward_event_publish_retries_total").increment(1);
                self.store
                    .schedule_retry(&self.owner, event.id, at, reason)
                    .await
            }
            AfterFailure::Dead => {
                metrics::counter!("keyward_events_dead_total").increment(1);
                tracing::error!(
                    event_id = %event.event_id, attempts = failures, reason,
                    "event dead-lettered; `keyward-sync-worker retry-dead` or the key's \
                     revocation/retry endpoint puts it back"
                );
                self.store
                    .mark_dead(&self.owner, event.id, reason, now)
                    .await
            }
        };
        if let Err(e) = result {
            log_mark_failure(&e, 1);
        }
    }
}

/// `last_error` of an event no message can be made of (client-safe).
const UNPUBLISHABLE: &str = "this version cannot publish events of this type";

fn log_mark_failure(e: &StoreError, events: usize) {
    tracing::warn!(
        error = %chain(e), events,
        "recording the broker's answer failed; the events go out again when their lease ends"
    );
}
