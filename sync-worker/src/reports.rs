//! The consumer of the reports queue (`keyward.acks` by default): the
//! ingestors' heartbeats and `applied` reports, written to the store.
//!
//! A message is acknowledged to the broker only after the store has it.
//! Only an unavailable database hands it back (requeue, after a pause); a
//! message that is not one of ours (or longer than any of ours), whose
//! fields are not what an ingestor sends (ids of `[A-Za-z0-9._-]`,
//! bounded), or that the database refuses for its content is moved to the
//! queue's dead-letter queue (`{queue}.dead`, bounded) and counted, never
//! requeued: such a message would otherwise come back for ever and starve
//! the real reports.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use keyward_core::amqp;
use keyward_core::events::ReportMessage;
use keyward_core::store::{AppliedReport, IngestorStore, StoreError, StoreResult, error::chain};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{Channel, Consumer};

/// Pause after a database failure before taking the next message.
const STORE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the consumer puts what it cannot take: the reports queue's
/// dead-letter queue, through `channel` (in confirm mode).
pub struct DeadLetters {
    pub channel: Channel,
    pub queue: String,
}

impl DeadLetters {
    async fn put(&self, delivery: &Delivery, reason: &str) -> lapin::Result<bool> {
        amqp::dead_letter(&self.channel, &self.queue, delivery, reason).await
    }
}

/// The most reports written in one transaction.
pub const MAX_BATCH: usize = 256;

/// Consumes until the stream ends or fails (the connection is gone). The
/// reports that have already arrived when one is taken are taken with it
/// (up to `MAX_BATCH`), and their `applied` reports written in one
/// transaction: one commit per report held a storm's reports to ~2,000 a
/// second, behind the events themselves.
pub async fn consume(store: Arc<dyn IngestorStore>, dead: DeadLetters, mut consumer: Consumer) {
    while let Some(first) = consumer.next().await {
        let mut arrived = vec![first];
        while arrived.len() < MAX_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(next)) => arrived.push(next),
                _ => break,
            }
        }
        let deliveries = match arrived.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reports consumer stopped");
                return;
            }
        };
        if let Err(e) = handle_all(store.as_ref(), &dead, &deliveries).await {
            tracing::warn!(error = %e, "answering a report failed");
            return;
        }
    }
}

/// Each delivery answered as `handle` would, the `applied` reports among
/// them written together.
async fn handle_all(
    store: &dyn IngestorStore,
    dead: &DeadLetters,
    deliveries: &[Delivery],
) -> lapin::Result<()> {
    let now = Utc::now();
    let mut applied = Vec::new();
    for delivery in deliveries {
        match decode_report(&delivery.data) {
            Ok(ReportMessage::Applied {
                event_id,
                ingestor_id,
                applied_at,
            }) => applied.push((
                delivery,
                AppliedReport {
                    event_id,
                    ingestor_id,
                    applied_at: not_after(applied_at, now),
                },
            )),
            _ => {
                handle(store, dead, delivery).await?;
            }
        }
    }
    if applied.len() < 2 {
        for (delivery, _) in applied {
            handle(store, dead, delivery).await?;
        }
        return Ok(());
    }
    let reports: Vec<AppliedReport> = applied.iter().map(|(_, r)| r.clone()).collect();
    match store.record_applied_all(&reports).await {
        Ok(new) => {
            let duplicates = reports.len() as u64 - new;
            metrics::counter!("keyward_acks_total", "result" => "applied").increment(new);
            metrics::counter!("keyward_acks_total", "result" => "duplicate").increment(duplicates);
            for (delivery, _) in applied {
                delivery.ack(BasicAckOptions::default()).await?;
            }
        }
        // The database refused one of them for its content: one at a time,
        // so that only that one is dead-lettered.
        Err(e) if !matches!(e, StoreError::Unavailable(_)) => {
            tracing::warn!(error = %chain(&e), reports = reports.len(),
                "the database refused a batch of reports; taking them one at a time");
            for (delivery, _) in applied {
                handle(store, dead, delivery).await?;
            }
        }
        Err(e) => {
            metrics::counter!("keyward_acks_total", "result" => "requeued")
                .increment(reports.len() as u64);
            tracing::warn!(error = %chain(&e), reports = reports.len(),
                "recording reports failed; handed back to the broker");
            tokio::time::sleep(STORE_RETRY_PAUSE).await;
            for (delivery, _) in applied {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
            }
        }
    }
    Ok(())
}

/// Why a message on the reports queue is not taken.
#[derive(Debug)]
pub enum Unreadable {
    /// Longer than any report (`amqp::MAX_MESSAGE_BYTES`): not read.
    Oversized,
    /// Not a report at all (not JSON, or not of either shape).
    Malformed(serde_json::Error),
    /// A report whose field (named) holds what no ingestor sends.
    Invalid(&'static str),
}

/// A report as the worker takes it: decoded and every field checked
/// before anything reaches the database.
pub fn decode_report(data: &[u8]) -> Result<ReportMessage, Unreadable> {
    if data.len() > amqp::MAX_MESSAGE_BYTES {
        return Err(Unreadable::Oversized);
    }
    let message: ReportMessage = serde_json::from_slice(data).map_err(Unreadable::Malformed)?;
    check(&message).map_err(Unreadable::Invalid)?;
    Ok(message)
}

async fn handle(
    store: &dyn IngestorStore,
    dead: &DeadLetters,
    delivery: &Delivery,
) -> lapin::Result<bool> {
    let message = match decode_report(&delivery.data) {
        Ok(m) => m,
        Err(Unreadable::Oversized) => {
            metrics::counter!("keyward_acks_total", "result" => "oversized").increment(1);
            tracing::warn!(
                bytes = delivery.data.len(),
                "dead-lettering an oversized message on the reports queue"
            );
            return dead.put(delivery, "oversized").await;
        }
        Err(Unreadable::Malformed(e)) => {
            metrics::counter!("keyward_acks_total", "result" => "malformed").increment(1);
            tracing::warn!(error = %e, "dead-lettering a message on the reports queue that is not a report");
            return dead.put(delivery, "malformed").await;
        }
        Err(Unreadable::Invalid(field)) => {
            metrics::counter!("keyward_acks_total", "result" => "invalid").increment(1);
            tracing::warn!(
                field,
                "dead-lettering a report with a field no ingestor sends"
            );
            return dead.put(delivery, &format!("invalid {field}")).await;
        }
    };
    match record(store, &message).await {
        Ok(kind) => {
            metrics::counter!("keyward_acks_total", "result" => kind).increment(1);
            delivery.ack(BasicAckOptions::default()).await
        }
        Err(e) if !matches!(e, StoreError::Unavailable(_)) => {
            metrics::counter!("keyward_acks_total", "result" => "refused").increment(1);
            tracing::warn!(error = %chain(&e), "the database refused a report; dead-lettered");
            dead.put(delivery, "refused by the database").await
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

/// The longest ingestor id (and queue name) a report may carry.
const MAX_ID_LEN: usize = 128;
const MAX_QUEUE_LEN: usize = 255;

/// `Err(field)` for a report whose ids are not what an ingestor sends.
fn check(message: &ReportMessage) -> Result<(), &'static str> {
    fn is_name(s: &str, max: usize) -> bool {
        (1..=max).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
    let (id, queue) = match message {
        ReportMessage::Heartbeat {
            ingestor_id, queue, ..
        } => (ingestor_id, Some(queue)),
        ReportMessage::Applied { ingestor_id, .. } => (ingestor_id, None),
    };
    if !is_name(id, MAX_ID_LEN) {
        return Err("ingestorId");
    }
    if queue.is_some_and(|q| !is_name(q, MAX_QUEUE_LEN)) {
        return Err("queue");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(id: &str, queue: &str) -> ReportMessage {
        ReportMessage::Heartbeat {
            ingestor_id: id.into(),
            queue: queue.into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn only_reports_an_ingestor_could_send_pass() {
        assert_eq!(
            check(&heartbeat("node-1.eu_west", "keyward.ingestor.node-1")),
            Ok(())
        );
        assert_eq!(check(&heartbeat("a\0b", "q")), Err("ingestorId"));
        assert_eq!(
            check(&heartbeat(&"x".repeat(8_000), "q")),
            Err("ingestorId")
        );
        assert_eq!(check(&heartbeat("", "q")), Err("ingestorId"));
        assert_eq!(check(&heartbeat("n", "q u")), Err("queue"));
        let applied = ReportMessage::Applied {
            event_id: keyward_core::ids::EventId::new(),
            ingestor_id: "é".into(),
            applied_at: Utc::now(),
        };
        assert_eq!(check(&applied), Err("ingestorId"));
    }
}
