//! The worker's life: connect to the broker (our own reconnect loop, with
//! backoff), deliver the outbox and consume reports while connected, claim
//! nothing while not, and on shutdown finish the batch in hand and leave.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::config::AmqpUrl;
use keyward_core::reconnect::Reconnect;
use keyward_core::store::{
    AuditStore, IngestorStore, OutboxStore, OutboxWakeups, Wakeup, error::chain,
};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::deliver::{Deliverer, Interrupted};
use crate::health::Health;
use crate::settings::Settings;

pub struct Worker {
    deliverer: Deliverer,
    reports: Arc<dyn IngestorStore>,
    audit: Arc<dyn AuditStore>,
    health: Arc<Health>,
    amqp_url: AmqpUrl,
    exchange: String,
    acks_queue: String,
    poll_interval: Duration,
    retention: Duration,
    audit_retention: Duration,
}

/// How a broker session ended.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Lost,
    Shutdown,
}

impl Worker {
    pub fn new(
        settings: &Settings,
        store: Arc<dyn OutboxStore>,
        reports: Arc<dyn IngestorStore>,
        audit: Arc<dyn AuditStore>,
        health: Arc<Health>,
    ) -> Self {
        let d = &settings.delivery;
        let sqlite = settings.database.database_url.is_sqlite();
        Self {
            deliverer: Deliverer {
                store,
                owner: d.worker_id(),
                batch: d.batch,
                lease: d.lease(),
                confirm_timeout: d.confirm_timeout(),
                liveness: d.ingestor_liveness(),
                schedule: settings.retry.schedule(),
            },
            reports,
            audit,
            health,
            amqp_url: settings.amqp.amqp_url.clone(),
            exchange: settings.amqp.exchange.clone(),
            acks_queue: d.acks_queue.clone(),
            poll_interval: d.poll_interval(sqlite),
            retention: d.retention(),
            audit_retention: d.audit_retention(),
        }
    }

    /// Runs until `shutdown` is cancelled; then returns once the batch in
    /// hand is settled and the broker connection closed.
    pub async fn run(self, shutdown: CancellationToken) {
        let store = Arc::clone(&self.deliverer.store);
        let chores = tokio::spawn(crate::housekeeping::run(
            Arc::clone(&store),
            Arc::clone(&self.audit),
            crate::housekeeping::Retention {
                events: self.retention,
                audit: self.audit_retention,
            },
            shutdown.clone(),
        ));
        let mut wakeups = Wakeups::new(store, self.poll_interval);
        let mut reconnect = Reconnect::default();
        tracing::info!(owner = %self.deliverer.owner, exchange = %self.exchange, "sync worker started");
        while !shutdown.is_cancelled() {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = Broker::connect(&self.amqp_url, &self.exchange, &self.acks_queue, &self.deliverer.owner) => r,
            };
            let broker = match connected {
                Ok(broker) => broker,
                Err(e) => {
                    let delay = reconnect.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot reach the broker");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            tracing::info!("connected to the broker");
            self.health.set_broker_connected(true);
            let end = self.session(&broker, &mut wakeups, &shutdown).await;
            self.health.set_broker_connected(false);
            broker.close().await;
            if end == SessionEnd::Shutdown {
                break;
            }
            reconnect.reset();
            let delay = reconnect.next_delay();
            tracing::warn!(retry_in = ?delay, "broker connection lost; reconnecting");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        let _ = chores.await;
        tracing::info!("sync worker stopped");
    }

    /// Delivers and consumes reports on one connection until it fails or
    /// shutdown is asked for.
    async fn session(
        &self,
        broker: &Broker,
        wakeups: &mut Wakeups,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let consumer = match broker.consume_reports(&self.deliverer.owner).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume the reports queue");
                return SessionEnd::Lost;
            }
        };
        let reports = tokio::spawn(crate::reports::consume(
            Arc::clone(&self.reports),
            broker.dead_letters(),
            consumer,
        ));
        // Aborting the consumer hands its unacked messages back to the
        // broker when the channel closes: nothing is lost.
        let _abort_reports = AbortOnDrop(reports.abort_handle());
        let mut reports = reports;
        loop {
            match self.deliverer.drain(broker, shutdown).await {
                Ok(()) => {}
                Err(Interrupted::BrokerLost) => return SessionEnd::Lost,
                // Waiting for the next poll is the database back-off.
                Err(Interrupted::Database) => {}
            }
            if shutdown.is_cancelled() {
                return SessionEnd::Shutdown;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = broker.lost() => return SessionEnd::Lost,
                _ = &mut reports => return SessionEnd::Lost,
                _ = wakeups.wait() => {}
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the next reason to claim: an outbox NOTIFY (PostgreSQL) or
/// the poll interval, whichever comes first. A lost feed degrades to
/// polling and is reopened at the next wait.
struct Wakeups {
    store: Arc<dyn OutboxStore>,
    feed: Option<Box<dyn OutboxWakeups>>,
    poll: Duration,
    listens: bool,
}

impl Wakeups {
    fn new(store: Arc<dyn OutboxStore>, poll: Duration) -> Self {
        Self {
            store,
            feed: None,
            poll,
            listens: true,
        }
    }

    async fn wait(&mut self) {
        if self.feed.is_none() && self.listens {
            match self.store.outbox_wakeups().await {
                Ok(Some(feed)) => self.feed = Some(feed),
                Ok(None) => self.listens = false,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot listen for outbox events; polling")
                }
            }
        }
        let Some(feed) = self.feed.as_mut() else {
            tokio::time::sleep(self.poll).await;
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(self.poll) => {}
            next = feed.next() => match next {
                Ok(Wakeup::Committed) => {}
                // Whatever was committed meanwhile is claimed right now.
                Ok(Wakeup::Lost) => {}
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "outbox notifications lost; polling");
                    self.feed = None;
                }
            }
        }
    }
}
