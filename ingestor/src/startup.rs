//! Builds the reference ingestor from settings, so tests and benches start
//! the very same wiring the binary starts: the verify client and cache, the
//! revocation consumer, and the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{VERIFY_TIMEOUT, VerifyClient};
use crate::consumer::{ConsumerSettings, RevocationConsumer};
use crate::server::{self, IngestState};
use crate::settings::Settings;
use crate::verifier::Verifier;

/// Unacked revocations in flight to this node at once.
const PREFETCH: u16 = 64;

pub struct Application {
    server: Server,
    port: u16,
    shutdown: CancellationToken,
    consuming: JoinHandle<()>,
}

impl Application {
    /// Binds the listener and starts consuming revocations.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let verifier_key = settings
            .verifier_key
            .clone()
            .context(
                "KEYWARD_VERIFIER_KEY or KEYWARD_VERIFIER_KEY_FILE is required (an API key holding the verifier role)",
            )?;
        keyward_core::telemetry::metrics();
        let client = VerifyClient::with_api_ca(
            &settings.api_url,
            verifier_key,
            VERIFY_TIMEOUT,
            settings.api_ca_file.as_deref(),
        )?;
        let tls = settings.tls.server_config()?;
        settings
            .tls
            .warn_if_plain(settings.listen, "keyward-ingestor");
        let verifier = Arc::new(Verifier::new(
            client,
            usize::try_from(settings.cache_capacity).unwrap_or(usize::MAX),
        ));
        let ingestor_id = settings.ingestor_id();
        let consumer = RevocationConsumer::new(
            ConsumerSettings {
                amqp_url: settings.amqp.amqp_url.clone(),
                exchange: settings.amqp.exchange.clone(),
                ingestor_id: ingestor_id.clone(),
                binding: settings.binding.clone(),
                acks_queue: settings.acks_queue.clone(),
                quorum: settings.amqp.quorum_queue,
                prefetch: PREFETCH,
                heartbeat_every: Duration::from_secs(settings.heartbeat_seconds),
            },
            Arc::clone(&verifier),
        );
        let connected = consumer.connected();
        let limits = settings.http;
        let state = web::Data::new(IngestState {
            verifier,
            body_timeout: limits.request_timeout(),
        });
        // `max_connections` is per worker: the setting is for the process.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let shutdown = CancellationToken::new();
        let consuming = tokio::spawn(consumer.run(shutdown.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(|cfg| server::configure(cfg, Arc::clone(&connected)))
        })
        .workers(workers)
        .client_request_timeout(limits.request_timeout())
        .max_connections((limits.max_connections as usize).div_ceil(workers));
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(port, ingestor_id = %ingestor_id, "keyward-ingestor listening");
        Ok(Self {
            server,
            port,
            shutdown,
            consuming,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT (actix handles them) or the server is
    /// stopped; then the consumer closes its connection: unacked
    /// revocations stay queued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.shutdown.cancel();
        let _ = self.consuming.await;
        served.context("serving")
    }
}
