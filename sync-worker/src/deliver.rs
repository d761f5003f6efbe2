//! Claim → publish → mark: the outbox delivery
//! (`docs/architecture.md`, "A revocation, file by file").
//!
//! No transaction is open while the broker is talked to: claiming is one
//! short statement that sets a lease, marking is another. A worker that
//! dies between the two leaves a lease that expires, and the event is
//! published again (at least once; consumers are idempotent by event id).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use keyward_core::store::{OutboxEvent, OutboxStore, StoreError, error::chain};

use crate::broker::{Broker, Outcome, SentBatch};
use crate::retry::{AfterFailure, RetrySchedule};

/// Batches whose confirms may be outstanding at once. A confirm waits for
/// the broker to write the message to disk; were the next batch held until
/// then, one slow write would delay every revocation behind it (measured:
/// events waiting 20–90 ms behind the confirm of the one before).
pub const PIPELINE_DEPTH: usize = 4;

pub struct Deliverer {
    pub store: Arc<dyn OutboxStore>,
    pub owner: String,
    pub batch: u32,
    pub lease: Duration,
    pub confirm_timeout: Duration,
    pub liveness: Duration,
    pub schedule: RetrySchedule,
}

/// Delivery on one broker connection: claim a due batch (a lease on each
/// row), publish it, and claim and publish the next while the broker's
/// confirms for up to [`PIPELINE_DEPTH`] batches are on their way; each
/// batch's confirms are recorded as they arrive. Every event is still
/// marked published only after its own confirm, so nothing is given up:
/// a batch whose confirms never come keeps its lease and goes out again.
pub struct Pipeline<'a> {
    deliverer: &'a Deliverer,
    broker: &'a Broker,
    in_flight: FuturesUnordered<BoxFuture<'a, bool>>,
    /// Whether events may be due: set by a wake-up or a full batch,
    /// cleared when a claim finds none (or fails: the next wake-up is the
    /// database's back-off).
    due: bool,
}

impl<'a> Pipeline<'a> {
    pub fn new(deliverer: &'a Deliverer, broker: &'a Broker) -> Self {
        Self {
            deliverer,
            broker,
            in_flight: FuturesUnordered::new(),
            due: true,
        }
    }

    /// Events may have been committed: claim at the next `fill`.
    pub fn wake(&mut self) {
        self.due = true;
    }

    /// Claims and publishes batches while some are due and the pipeline
    /// has room; `false` when the connection failed while sending.
    pub async fn fill(&mut self) -> bool {
        let d = self.deliverer;
        while self.due && self.in_flight.len() < PIPELINE_DEPTH {
            let events = match d
                .store
                .claim_events(&d.owner, d.lease, d.batch, Utc::now())
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "claiming outbox events failed");
                    self.due = false;
                    break;
                }
            };
            self.due = events.len() == d.batch as usize;
            if events.is_empty() {
                break;
            }
            let sent = self.broker.send_batch(&events, d.confirm_timeout).await;
            let sent_whole = sent.sent_whole();
            let broker = self.broker;
            self.in_flight.push(Box::pin(
                async move { d.settle(broker, &events, sent).await },
            ));
            if !sent_whole || self.broker.is_lost() {
                return false;
            }
        }
        true
    }

    /// Resolves when a batch in flight has its confirms recorded: `false`
    /// when the connection failed on the way. Never, while none is in
    /// flight.
    pub async fn settled(&mut self) -> bool {
        match self.in_flight.next().await {
            Some(healthy) => healthy,
            None => std::future::pending().await,
        }
    }

    /// Settles every batch in flight (on shutdown, or once the connection
    /// is gone: their confirms fail fast, and what was not confirmed keeps
    /// its lease or is scheduled again).
    pub async fn finish(mut self) {
        while self.in_flight.next().await.is_some() {}
    }
}

impl Deliverer {
    /// Records what the broker said about one sent batch; `false` when the
    /// broker connection failed.
    async fn settle(&self, broker: &Broker, events: &[OutboxEvent], sent: SentBatch) -> bool {
        let sent_at = sent.sent_at();
        let (outcomes, healthy) = sent.confirms(broker).await;
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
            // Live and receiving when the batch went out: a node that
            // joined while its confirms were on their way does not have it.
            let live_since = sent_at
                - chrono::Duration::from_std(self.liveness).unwrap_or(chrono::Duration::zero());
            match self
                .store
                .mark_published(&delivered, sent_at, live_since)
                .await
            {
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
