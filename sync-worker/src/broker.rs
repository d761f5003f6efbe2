//! One connection to RabbitMQ: a confirm-mode channel publishing to the
//! events exchange, and a channel consuming the reports queue. Reconnecting is
//! the caller's loop (`worker.rs`): a `Broker` that failed is dropped whole
//! and a new one is connected, so no state outlives a lost connection.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use keyward_core::amqp::{self, QueueType};
use keyward_core::config::AmqpUrl;
use keyward_core::events::EventMessage;
use keyward_core::store::OutboxEvent;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, Consumer};
use tokio::sync::watch;

/// Unacked reports in flight to this worker at once: a whole batch
/// (`reports::MAX_BATCH`) can be waiting when one is written.
const REPORTS_PREFETCH: u16 = crate::reports::MAX_BATCH as u16;
/// Connecting (TCP, AMQP handshake, declarations) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `last_error` phrases: client-safe, the cause goes to the log.
const CONNECTION_FAILED: &str = "the broker connection failed";
const NO_CONFIRM: &str = "no confirm from the broker in time";
const REFUSED: &str = "the broker refused the event";

/// What the broker said about one published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed and routed to at least one queue.
    Confirmed,
    /// Confirmed, but no queue was bound for it (returned as `mandatory`):
    /// no ingestor listens for this tenant, so there is nothing to evict.
    Unrouted,
    /// Not confirmed: to be tried again. The phrase is client-safe.
    Failed(&'static str),
    /// Not sent: no message can be made of the row (a type this version
    /// does not know). Trying again would not help: dead-letter it.
    Unpublishable,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

pub struct Broker {
    conn: Connection,
    publish: Channel,
    reports: Channel,
    exchange: ShortString,
    acks_queue: ShortString,
    /// Turns `true` when the connection reports an error.
    lost: watch::Receiver<bool>,
}

/// What the worker declares on the broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub acks_queue: String,
    /// Of the reports queue and its dead-letter queue.
    pub queue_type: QueueType,
}

impl Broker {
    /// Connects, declares the durable topic exchange and the durable reports
    /// queue, and puts the publishing channel in confirm mode. Each broker
    /// address of `url` may take `CONNECT_TIMEOUT`.
    pub async fn connect(
        url: &AmqpUrl,
        topology: &Topology,
        name: &str,
    ) -> Result<Self, ConnectError> {
        let limit = CONNECT_TIMEOUT * u32::try_from(url.len()).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, Self::open(url, topology, name))
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
    }

    async fn open(url: &AmqpUrl, topology: &Topology, name: &str) -> Result<Self, ConnectError> {
        let Topology {
            exchange,
            acks_queue,
            queue_type: kind,
        } = topology;
        let (exchange, acks_queue, kind) = (exchange.as_str(), acks_queue.as_str(), *kind);
        let conn = amqp::connect(url, name).await?;
        let lost = watch_for_loss(&conn);
        let publish = conn.create_channel().await?;
        amqp::declare_exchange(&publish, exchange).await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let reports = conn.create_channel().await?;
        amqp::declare_reports_queue(&reports, acks_queue, kind).await?;
        amqp::declare_dead_letter_queue(&reports, acks_queue, kind).await?;
        // Dead-lettered reports are acknowledged once the broker has them.
        reports
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        reports
            .basic_qos(REPORTS_PREFETCH, BasicQosOptions::default())
            .await?;
        Ok(Self {
            conn,
            publish,
            reports,
            exchange: exchange.into(),
            acks_queue: acks_queue.into(),
            lost,
        })
    }

    /// Publishes every event (persistent, `mandatory`), in order, without
    /// waiting for their confirms: [`SentBatch::confirms`] awaits those, so
    /// the next batch can go out while this one's are still on their way.
    /// Sending is bounded by `timeout` too, and so is each confirm.
    pub async fn send_batch(&self, events: &[OutboxEvent], timeout: Duration) -> SentBatch {
        let sent_at = Utc::now();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut healthy = true;
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            let Ok(message) = EventMessage::try_from(event) else {
                sent.push(Err(Outcome::Unpublishable));
                continue;
            };
            // Sending is under the deadline too: a stalled connection can
            // block the send itself, not only its confirm.
            let one = if healthy {
                match tokio::time::timeout_at(deadline, self.publish_one(event, &message)).await {
                    Ok(Ok(confirm)) => Ok(confirm),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "publish failed; the connection will be replaced");
                        healthy = false;
                        Err(Outcome::Failed(CONNECTION_FAILED))
                    }
                    Err(_) => {
                        healthy = false;
                        Err(Outcome::Failed(NO_CONFIRM))
                    }
                }
            } else {
                Err(Outcome::Failed(CONNECTION_FAILED))
            };
            sent.push(one);
        }
        SentBatch {
            sent_at,
            started,
            deadline,
            sent,
            healthy,
        }
    }

    /// One event: its body, `type` and routing key `{type}.{tenantId}`
    /// (`docs/events.md`).
    async fn publish_one(
        &self,
        event: &OutboxEvent,
        message: &EventMessage,
    ) -> lapin::Result<lapin::PublisherConfirm> {
        let body = serde_json::to_vec(message)
            .unwrap_or_else(|_| unreachable!("a message of ids and a timestamp serializes"));
        let properties = amqp::message_properties()
            .with_message_id(event.event_id.to_string().into())
            .with_type(message.kind().into())
            .with_timestamp(u64::try_from(event.created_at.timestamp()).unwrap_or(0));
        self.publish
            .basic_publish(
                self.exchange.clone(),
                message.routing_key().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await
    }

    /// Where the reports consumer puts what it cannot take.
    pub fn dead_letters(&self) -> crate::reports::DeadLetters {
        crate::reports::DeadLetters {
            channel: self.reports.clone(),
            queue: self.acks_queue.to_string(),
        }
    }

    /// Starts consuming the reports queue (manual acks).
    pub async fn consume_reports(&self, consumer_tag: &str) -> lapin::Result<Consumer> {
        self.reports
            .basic_consume(
                self.acks_queue.clone(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow() || !self.conn.status().connected()
    }

    /// Resolves when the connection reports an error.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // `Err`: the watcher ended with the connection, which is a loss too.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Closes the connection politely, if it is still there to close.
    pub async fn close(self) {
        if self.conn.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.conn.close(200, "shutdown".into()),
            )
            .await;
        }
    }
}

/// A batch on its way: each event's confirm still to come (or why it was
/// not sent).
pub struct SentBatch {
    /// Taken before the first event went out: an ingestor first seen by
    /// then had its queue bound before any of them was routed.
    sent_at: DateTime<Utc>,
    started: Instant,
    deadline: tokio::time::Instant,
    sent: Vec<Result<lapin::PublisherConfirm, Outcome>>,
    healthy: bool,
}

impl SentBatch {
    /// Whether every event went out (a failed or stalled send means the
    /// connection is to be replaced).
    pub fn sent_whole(&self) -> bool {
        self.healthy
    }

    /// When the batch began to go out (its events' `published_at`).
    pub fn sent_at(&self) -> DateTime<Utc> {
        self.sent_at
    }

    /// Awaits every confirm until the batch's deadline. The outcomes are
    /// in the order of the events sent, each with the time from sending to
    /// its answer; the `bool` is `false` when the connection failed on the
    /// way (a confirm that never came counts: the connection can't be
    /// trusted either).
    pub async fn confirms(self, broker: &Broker) -> (Vec<(Outcome, Duration)>, bool) {
        let Self {
            started,
            deadline,
            sent,
            healthy,
            ..
        } = self;
        let outcomes = futures_util::future::join_all(sent.into_iter().map(|sent| async move {
            let outcome = match sent {
                Err(outcome) => outcome,
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => Outcome::Failed(NO_CONFIRM),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "confirm failed");
                        Outcome::Failed(CONNECTION_FAILED)
                    }
                    Ok(Ok(Confirmation::Ack(None))) => Outcome::Confirmed,
                    Ok(Ok(Confirmation::Ack(Some(_)))) => Outcome::Unrouted,
                    Ok(Ok(Confirmation::Nack(_))) => Outcome::Failed(REFUSED),
                    Ok(Ok(Confirmation::NotRequested)) => Outcome::Failed(NO_CONFIRM),
                },
            };
            (outcome, started.elapsed())
        }))
        .await;
        let healthy = healthy
            && !broker.is_lost()
            && outcomes
                .iter()
                .all(|(o, _)| *o != Outcome::Failed(NO_CONFIRM));
        (outcomes, healthy)
    }
}

fn watch_for_loss(conn: &Connection) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event {
                tracing::warn!(error = %e, "broker connection lost");
                let _ = tx.send(true);
                return;
            }
        }
        let _ = tx.send(true);
    });
    rx
}
