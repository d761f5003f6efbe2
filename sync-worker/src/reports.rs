//! The consumer of the reports queue (`keyward.acks` by default): the
//! ingestors' heartbeats and `applied` reports, written to the store.
//!
//! A message is acknowledged to the broker only after the store has it; a
//! database failure hands it back (requeue), a message that is not one of
//! ours is dropped with a warning, never retried for ever.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use keyward_core::events::ReportMessage;
use keyward_core::store::{IngestorStore, StoreResult, error::chain};
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

/// Pause after a database failure before taking the next message.
const STORE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Consumes until the stream ends or fails (the connection is gone).
pub async fn consume(store: Arc<dyn IngestorStore>, mut consumer: Consumer) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reports consumer stopped");
                return;
            }
        };
        if let Err(e) = handle(store.as_ref(), &delivery).await {
            tracing::warn!(error = %e, "answering a report failed");
            return;
        }
    }
}

async fn handle(store: &dyn IngestorStore, delivery: &Delivery) -> lapin::Result<bool> {
    let message: ReportMessage = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            metrics::counter!("keyward_acks_total", "result" => "malformed").increment(1);
            tracing::warn!(error = %e, "dropping a message on the reports queue that is not a report");
            return delivery.reject(BasicRejectOptions { requeue: false }).await;
        }
    };
    match record(store, &message).await {
        Ok(kind) => {
            metrics::counter!("keyward_acks_total", "result" => kind).increment(1);
            delivery.ack(BasicAckOptions::default()).await
        }
        Err(e) => {
            metrics::counter!("keyward_acks_total", "result" => "requeued").increment(1);
            tracing::warn!(error = %chain(&e), "recording a report failed; handed back to the broker");
            tokio::time::sleep(STORE_RETRY_PAUSE).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
    }
}

async fn record(store: &dyn IngestorStore, message: &ReportMessage) -> StoreResult<&'static str> {
    let now = Utc::now();
    match message {
        ReportMessage::Heartbeat {
            ingestor_id,
            queue,
            at,
        } => {
            store
                .ingestor_heartbeat(ingestor_id, queue, not_after(*at, now))
                .await?;
            Ok("heartbeat")
        }
        ReportMessage::Applied {
            event_id,
            ingestor_id,
            applied_at,
        } => {
            let new = store
                .record_applied(*event_id, ingestor_id, not_after(*applied_at, now))
                .await?;
            Ok(if new { "applied" } else { "duplicate" })
        }
    }
}

/// An ingestor's clock ahead of ours must not make it look alive (or an
/// event applied) in our future.
fn not_after(at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    at.min(now)
}
