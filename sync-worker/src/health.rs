//! The worker's readiness (`/readyz` on `KEYWARD_LISTEN`): connected to the
//! broker (its reports consumer up, so it is delivering), and the database
//! answers. A worker that is reconnecting says 503
//! so an orchestrator can tell.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use keyward_core::ops::{Readiness, database_answers};
use keyward_core::store::OutboxStore;

/// What `/readyz` reports, shared with the delivery loop.
pub struct Health {
    store: Arc<dyn OutboxStore>,
    broker_connected: AtomicBool,
}

impl Health {
    pub fn new(store: Arc<dyn OutboxStore>) -> Self {
        Self {
            store,
            broker_connected: AtomicBool::new(false),
        }
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.store(connected, Ordering::Relaxed);
        metrics::gauge!("keyward_broker_connected").set(if connected { 1.0 } else { 0.0 });
    }

    pub fn broker_connected(&self) -> bool {
        self.broker_connected.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Readiness for Health {
    async fn check(&self) -> Vec<(&'static str, bool)> {
        let database = database_answers(self.store.as_ref()).await;
        vec![("database", database), ("broker", self.broker_connected())]
    }
}
