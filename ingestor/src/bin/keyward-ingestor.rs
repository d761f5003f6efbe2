//! The reference ingestor (API.md §11).

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use keyward_core::config::parse_or_exit;
use keyward_ingestor::client::{VERIFY_TIMEOUT, VerifyClient};
use keyward_ingestor::consumer::{ConsumerSettings, RevocationConsumer};
use keyward_ingestor::server::{self, IngestState};
use keyward_ingestor::settings::{Cli, Settings};
use keyward_ingestor::verifier::Verifier;
use tokio_util::sync::CancellationToken;

/// Unacked revocations in flight to this node at once.
const PREFETCH: u16 = 64;

#[actix_web::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    keyward_core::telemetry::init(cli.settings.log.log_format);
    match run(cli.settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward-ingestor: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let verifier_key = settings
        .verifier_key
        .clone()
        .context("KEYWARD_VERIFIER_KEY is required (an API key holding the verifier role)")?;
    keyward_core::telemetry::metrics();
    let client = VerifyClient::new(&settings.api_url, verifier_key, VERIFY_TIMEOUT)?;
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
            quorum: settings.quorum_queue,
            prefetch: PREFETCH,
            heartbeat_every: Duration::from_secs(settings.heartbeat_seconds),
        },
        Arc::clone(&verifier),
    );
    let state = web::Data::new(IngestState {
        verifier,
        connected: consumer.connected(),
    });
    let listener = TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(shutdown.clone()));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(server::configure)
    })
    .listen(listener)?
    .run();
    tracing::info!(port, ingestor_id = %ingestor_id, "keyward-ingestor listening");
    // SIGTERM/SIGINT stop the server (actix handles them); then the
    // consumer closes its connection: unacked revocations stay queued.
    let served = server.await;
    shutdown.cancel();
    let _ = consuming.await;
    served.context("serving")
}
