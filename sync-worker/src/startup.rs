//! Builds the worker from settings, so tests start the very same wiring
//! that `main` starts: the store, the ops listener, the delivery loop.

use std::sync::Arc;

use actix_web::dev::ServerHandle;
use anyhow::Context;
use keyward_core::store;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::settings::Settings;
use crate::worker::Worker;

pub struct Application {
    worker: Worker,
    health: Arc<Health>,
    ops: ServerHandle,
    port: u16,
    shutdown: CancellationToken,
}

impl Application {
    /// Opens and migrates the store, binds the ops listener
    /// (`/healthz`, `/readyz`, `/metrics`); delivery starts with
    /// [`Application::run_until_stopped`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        keyward_core::telemetry::metrics();
        let store = store::open(&settings.database.database_url).await?;
        let health = Arc::new(Health::new(store.clone()));
        let (ops, port) =
            keyward_core::ops::serve(settings.listen, health.clone()).context("ops listener")?;
        tracing::info!(port, "keyward-sync-worker health and metrics listening");
        let worker = Worker::new(
            settings,
            store.clone(),
            store.clone(),
            store,
            Arc::clone(&health),
        );
        Ok(Self {
            worker,
            health,
            ops,
            port,
            shutdown: CancellationToken::new(),
        })
    }

    /// The ops listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Cancelling it asks the worker to finish the batch in hand and stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Delivers until the shutdown token is cancelled, then stops the ops
    /// listener.
    pub async fn run_until_stopped(self) {
        self.worker.run(self.shutdown).await;
        self.ops.stop(true).await;
    }
}
