//! The event consumer: this ingestor's own durable queue
//! `keyward.ingestor.{id}`, bound to the events exchange. For each event:
//! apply it (`key.revoked`: the key gets a tombstone, refused from memory
//! from now on; `key.updated`: the key's cached answer is dropped;
//! `rbac.changed`: every cached key of the tenant is dropped) →
//! report `applied` to the reports queue (`keyward.acks`) → once the broker
//! confirms the report, ack the event message (the next event is applied
//! while a report's confirm is on its way). A connection lost in between
//! redelivers the event (applying it again is harmless) instead of losing
//! the report. Heartbeats go to the same queue every few seconds.
//!
//! Its own reconnect loop: while disconnected the verifier does not trust
//! its cache (revocations may be passing by); on every (re)connection the
//! cache is emptied before it is trusted again. Events published while we
//! were away wait in the durable queue and are applied on return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use keyward_core::amqp::{self, QueueType};
use keyward_core::config::AmqpUrl;
use keyward_core::events::{EventMessage, ReportMessage, ingestor_queue};
use keyward_core::reconnect::Reconnect;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use tokio_util::sync::CancellationToken;

use crate::verifier::Verifier;

/// Connecting and declaring must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub amqp_url: AmqpUrl,
    pub exchange: String,
    pub ingestor_id: String,
    /// Routing pattern of the binding: `#` for every event of every
    /// tenant, `*.*.acme` for one tenant's.
    pub binding: String,
    pub acks_queue: String,
    /// Declare the queue as a quorum queue (replicated; RabbitMQ cluster).
    pub quorum: bool,
    pub prefetch: u16,
    pub heartbeat_every: Duration,
}

impl ConsumerSettings {
    pub fn queue(&self) -> String {
        ingestor_queue(&self.ingestor_id)
    }
}

pub struct RevocationConsumer {
    settings: ConsumerSettings,
    verifier: Arc<Verifier>,
    connected: Arc<AtomicBool>,
    before_ack: Option<BeforeAck>,
}

/// A test seam: runs after an event's `applied` report was confirmed and
/// before the event is acked (e.g. to cut the connection right there).
pub type BeforeAck = Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

impl RevocationConsumer {
    pub fn new(settings: ConsumerSettings, verifier: Arc<Verifier>) -> Self {
        Self {
            settings,
            verifier,
            connected: Arc::new(AtomicBool::new(false)),
            before_ack: None,
        }
    }

    /// Runs `hook` between each confirmed report and its ack (tests).
    #[doc(hidden)]
    pub fn before_ack(mut self, hook: BeforeAck) -> Self {
        self.before_ack = Some(hook);
        self
    }

    /// `true` while revocations are being received (the node is ready).
    pub fn connected(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.connected)
    }

    /// Consumes until `shutdown`, reconnecting with backoff whenever the
    /// broker is lost.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reconnect = Reconnect::default();
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout(CONNECT_TIMEOUT, self.open()) => r,
            };
            match opened {
                Ok(Ok(session)) => {
                    reconnect.reset();
                    self.serve(session, &shutdown).await;
                    self.set_connected(false);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the broker"),
                Err(_) => tracing::warn!("the broker did not answer in time"),
            }
            let delay = reconnect.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn set_connected(&self, connected: bool) {
        // Either way the cache starts empty: going down, it may miss
        // revocations; coming up, it may hold keys revoked meanwhile.
        self.verifier.set_trusted(connected);
        self.connected.store(connected, Ordering::Release);
        metrics::gauge!("keyward_broker_connected").set(if connected { 1.0 } else { 0.0 });
    }

    async fn open(&self) -> lapin::Result<Session> {
        let s = &self.settings;
        let conn = amqp::connect(&s.amqp_url, &format!("ingestor-{}", s.ingestor_id)).await?;
        let channel = conn.create_channel().await?;
        // Publisher confirms: an `applied` report counts once the broker
        // has it, and only then is the event acked.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        amqp::declare_exchange(&channel, &s.exchange).await?;
        let queue = s.queue();
        let kind = QueueType::quorum_if(s.quorum);
        amqp::declare_bound_queue(&channel, &queue, &s.exchange, &s.binding, kind).await?;
        amqp::declare_dead_letter_queue(&channel, &queue, kind).await?;
        amqp::declare_reports_queue(&channel, &s.acks_queue, kind).await?;
        channel
            .basic_qos(s.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("ingestor-{}", s.ingestor_id).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Session {
            conn,
            channel,
            consumer,
        })
    }

    async fn serve(&self, mut session: Session, shutdown: &CancellationToken) {
        self.set_connected(true);
        tracing::info!(queue = %self.settings.queue(), "receiving events");
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_every);
        // Reports sent whose confirms are still to come, each with its ack
        // to send after it. The next event is applied meanwhile: waiting
        // for a report's confirm (the broker's disk write) before taking
        // the next event delayed that event by as long (measured: 20–30 ms
        // now and then). At most `prefetch` events are unacked, so this is
        // bounded by the broker.
        let mut reports: FuturesUnordered<BoxFuture<'_, Result<(), Lost>>> =
            FuturesUnordered::new();
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => {
                    // Reports on their way are given a moment; an event
                    // whose ack is not sent comes again at the next start.
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                        while reports.next().await.is_some() {}
                    })
                    .await;
                    let _ = session.conn.close(200, "shutdown".into()).await;
                    return;
                }
                Some(settled) = reports.next(), if !reports.is_empty() => settled,
                _ = heartbeat.tick() => match self.heartbeat(&session.channel).await {
                    Ok(confirm) => {
                        reports.push(Box::pin(async move { confirmed(confirm).await }));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                next = session.consumer.next() => match next {
                    Some(Ok(delivery)) => match self.apply(&session.channel, delivery).await {
                        Ok(Some(settle)) => {
                            reports.push(settle);
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    },
                    Some(Err(e)) => Err(e.into()),
                    None => {
                        tracing::warn!("the broker ended the consumer");
                        return;
                    }
                },
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "broker connection lost");
                return;
            }
        }
    }

    /// Apply → report → (its confirm) → ack. The returned future, when
    /// there is one, awaits the report's confirm and then acks the event:
    /// a connection lost before that redelivers the event instead of
    /// losing the report. Applying twice is harmless: a tombstone stays a
    /// tombstone, an eviction of what is gone changes nothing, and the
    /// worker counts one ack per ingestor and event.
    async fn apply(
        &self,
        channel: &Channel,
        delivery: Delivery,
    ) -> Result<Option<BoxFuture<'_, Result<(), Lost>>>, Lost> {
        let decoded = if delivery.data.len() > amqp::MAX_MESSAGE_BYTES {
            Err("oversized".to_owned())
        } else {
            serde_json::from_slice::<EventMessage>(&delivery.data).map_err(|e| e.to_string())
        };
        let event = match decoded {
            Ok(e) => e,
            Err(why) => {
                // Not requeued: it would come back for ever. An event type
                // newer than this node is kept for a look, not guessed at.
                metrics::counter!("keyward_events_dead_lettered_total").increment(1);
                tracing::warn!(error = %why, bytes = delivery.data.len(), "dead-lettering a message that is not a known event");
                amqp::dead_letter(
                    channel,
                    &self.settings.queue(),
                    &delivery,
                    "not a known event",
                )
                .await?;
                return Ok(None);
            }
        };
        match &event {
            EventMessage::KeyRevoked { key_id, .. } => self.verifier.bury(*key_id),
            EventMessage::KeyUpdated { key_id, .. } => self.verifier.evict(*key_id),
            EventMessage::RbacChanged { tenant_id, .. } => self.verifier.evict_tenant(tenant_id),
        }
        let now = Utc::now();
        let lag = (now - event.at()).to_std().unwrap_or_default();
        let redelivered = if delivery.redelivered {
            "true"
        } else {
            "false"
        };
        if let EventMessage::KeyRevoked { .. } = event {
            metrics::histogram!("keyward_revocation_propagation_seconds").record(lag);
            metrics::counter!("keyward_revocations_applied_total", "redelivered" => redelivered)
                .increment(1);
        }
        metrics::counter!("keyward_events_applied_total", "type" => event.kind(), "redelivered" => redelivered)
            .increment(1);
        match &event {
            EventMessage::KeyRevoked { key_id, .. } | EventMessage::KeyUpdated { key_id, .. } => {
                tracing::info!(key_id = %key_id, event_id = %event.event_id(), kind = event.kind(), "event applied");
            }
            EventMessage::RbacChanged { tenant_id, .. } => {
                tracing::info!(tenant_id = %tenant_id, event_id = %event.event_id(), kind = event.kind(), "event applied");
            }
        }
        let confirm = self
            .report(
                channel,
                &ReportMessage::Applied {
                    event_id: event.event_id(),
                    ingestor_id: self.settings.ingestor_id.clone(),
                    applied_at: now,
                },
            )
            .await?;
        let before_ack = self.before_ack.clone();
        Ok(Some(Box::pin(async move {
            confirmed(confirm).await?;
            if let Some(hook) = before_ack {
                hook().await;
            }
            delivery.ack(BasicAckOptions::default()).await?;
            Ok(())
        })))
    }

    /// Sends a heartbeat; its confirm is returned to be awaited.
    async fn heartbeat(&self, channel: &Channel) -> Result<PublisherConfirm, Lost> {
        self.verifier.drop_expired();
        let (cached, tombstones) = self.verifier.sizes();
        metrics::gauge!("keyward_ingestor_cache_entries").set(cached as f64);
        metrics::gauge!("keyward_ingestor_tombstones").set(tombstones as f64);
        self.report(
            channel,
            &ReportMessage::Heartbeat {
                ingestor_id: self.settings.ingestor_id.clone(),
                queue: self.settings.queue(),
                at: Utc::now(),
            },
        )
        .await
    }

    /// Publishes to the reports queue; the broker's confirm is returned, to
    /// be awaited with [`confirmed`].
    async fn report(
        &self,
        channel: &Channel,
        message: &ReportMessage,
    ) -> Result<PublisherConfirm, Lost> {
        let body = serde_json::to_vec(message)
            .unwrap_or_else(|_| unreachable!("an ack of ids and timestamps serializes"));
        Ok(channel
            .basic_publish(
                "".into(),
                self.settings.acks_queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                amqp::message_properties(),
            )
            .await?)
    }
}

/// A report counts once the broker confirms it; a nack is an error (the
/// connection is dropped and the event, not yet acked, comes again).
async fn confirmed(confirm: PublisherConfirm) -> Result<(), Lost> {
    match confirm.await? {
        Confirmation::Nack(_) => Err(Lost::Nacked),
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
    }
}

/// How long a stopping node waits for the confirms of reports it sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a session ends: the connection is then dropped and opened anew.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused a report")]
    Nacked,
}

struct Session {
    conn: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}
