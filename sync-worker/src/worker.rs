//! The worker's life: connect to the broker (our own reconnect loop, with
//! backoff), deliver the outbox and consume reports while connected, claim
//! nothing while not, and on shutdown finish the batch in hand and leave.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::amqp::QueueType;
use keyward_core::config::AmqpUrl;
use keyward_core::reconnect::Reconnect;
use keyward_core::store::{AuditStore, IngestorStore, OutboxStore, Wakeup, error::chain};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Topology};
use crate::deliver::{Deliverer, Pipeline};
use crate::health::Health;
use crate::settings::Settings;

pub struct Worker {
    deliverer: Deliverer,
    reports: Arc<dyn IngestorStore>,
    audit: Arc<dyn AuditStore>,
    health: Arc<Health>,
    amqp_url: AmqpUrl,
    topology: Topology,
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
            topology: Topology {
                exchange: settings.amqp.exchange.clone(),
                acks_queue: d.acks_queue.clone(),
                queue_type: QueueType::quorum_if(settings.amqp.quorum_queue),
            },
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
            crate::housekeeping::Chores {
                outbox: Arc::clone(&store),
                ingestors: Arc::clone(&self.reports),
                audit: Arc::clone(&self.audit),
                retention: crate::housekeeping::Retention {
                    events: self.retention,
                    audit: self.audit_retention,
                },
                liveness: self.deliverer.liveness,
            },
            shutdown.clone(),
        ));
        let wakeups = Wakeups::new(store, self.poll_interval);
        let mut reconnect = Reconnect::default();
        tracing::info!(owner = %self.deliverer.owner, exchange = %self.topology.exchange, "sync worker started");
        while !shutdown.is_cancelled() {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = Broker::connect(&self.amqp_url, &self.topology, &self.deliverer.owner) => r,
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
            let end = self.session(&broker, &wakeups, &shutdown).await;
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
    /// shutdown is asked for. Ready (`/readyz`) only once the reports
    /// consumer is up: until the broker has answered that, the connection
    /// may yet hang, and nothing would be delivered.
    async fn session(
        &self,
        broker: &Broker,
        wakeups: &Wakeups,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let consumer = match broker.consume_reports(&self.deliverer.owner).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume the reports queue");
                return SessionEnd::Lost;
            }
        };
        self.health.set_broker_connected(true);
        let reports = tokio::spawn(crate::reports::consume(
            Arc::clone(&self.reports),
            broker.dead_letters(),
            consumer,
        ));
        // Aborting the consumer hands its unacked messages back to the
        // broker when the channel closes: nothing is lost.
        let _abort_reports = AbortOnDrop(reports.abort_handle());
        let mut reports = reports;
        let mut pipeline = Pipeline::new(&self.deliverer, broker);
        let end = loop {
            if !pipeline.fill().await {
                break SessionEnd::Lost;
            }
            if shutdown.is_cancelled() {
                break SessionEnd::Shutdown;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break SessionEnd::Shutdown,
                _ = broker.lost() => break SessionEnd::Lost,
                _ = &mut reports => break SessionEnd::Lost,
                healthy = pipeline.settled() => if !healthy {
                    break SessionEnd::Lost;
                },
                () = wakeups.wait() => pipeline.wake(),
            }
        };
        // The batches in hand are finished either way: on shutdown their
        // confirms are recorded; on a lost connection they fail at once.
        pipeline.finish().await;
        end
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wake-ups to claim: an outbox NOTIFY (PostgreSQL) or the poll interval,
/// whichever comes first. The feed is read by a task of its own that turns
/// each notification into a stored permit, so waiting can be given up at
/// any moment (the session waits for confirms at the same time) without
/// losing one. A lost feed degrades to polling and is reopened.
struct Wakeups {
    notified: Arc<Notify>,
    poll: Duration,
    _feed: AbortOnDrop,
}

impl Wakeups {
    fn new(store: Arc<dyn OutboxStore>, poll: Duration) -> Self {
        let notified = Arc::new(Notify::new());
        let feed = tokio::spawn(listen(store, Arc::clone(&notified), poll));
        Self {
            notified,
            poll,
            _feed: AbortOnDrop(feed.abort_handle()),
        }
    }

    async fn wait(&self) {
        tokio::select! {
            () = self.notified.notified() => {}
            () = tokio::time::sleep(self.poll) => {}
        }
    }
}

/// Reads the outbox feed for ever, reopening it after a loss; returns at
/// once where the store has none (SQLite: polling only).
async fn listen(store: Arc<dyn OutboxStore>, notified: Arc<Notify>, poll: Duration) {
    loop {
        let mut feed = match store.outbox_wakeups().await {
            Ok(Some(feed)) => feed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot listen for outbox events; polling");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        loop {
            match feed.next().await {
                Ok(Wakeup::Committed) => notified.notify_one(),
                // Whatever was committed meanwhile is claimed right now.
                Ok(Wakeup::Lost) => notified.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "outbox notifications lost; polling");
                    notified.notify_one();
                    break;
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}
