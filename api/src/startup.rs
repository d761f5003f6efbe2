//! Builds the application from settings, so tests start the very same app
//! on port 0 that `main` starts on the configured address.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use keyward_core::ops::Readiness;
use keyward_core::password::PasswordHasher;
use keyward_core::store;

use crate::bootstrap::bootstrap_admin;
use crate::failed_proofs::FailedProofs;
use crate::fill_gate::FillGates;
use crate::generations::Generations;
use crate::routes::health::DatabaseReadiness;
use crate::settings::Settings;
use crate::state::AppState;
use crate::verify::VerifyService;
use crate::verify_cache::{KeyCache, ProvenPasswords};
use crate::{denied, extract, observe, routes};

/// The longest a proven Basic password is remembered.
pub const PROVEN_PASSWORD_TTL: Duration = Duration::from_secs(60);

pub struct Application {
    server: Server,
    port: u16,
    gates: Arc<FillGates>,
    generations: Arc<Generations>,
}

impl Application {
    /// Opens the store, migrates, bootstraps the first admin and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(settings.argon2).context("argon2 settings")?;
        // Before anything else: a certificate that can't be used ends the
        // start, never a fall back to plain HTTP.
        let tls = settings.tls.server_config()?;
        settings.tls.warn_if_plain(settings.listen, "keyward-api");
        let store = store::open(&settings.database.database_url).await?;
        bootstrap_admin(store.as_ref(), &hasher, settings.admin_password.as_ref())
            .await
            .context("bootstrapping the first admin")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        keyward_core::telemetry::metrics();
        let dummy_hash = hasher.hash(&ulid::Ulid::generate().to_string()).await?;
        let generations = Arc::new(Generations::default());
        let gates = Arc::new(FillGates::default());
        let ttl = Duration::from_secs(settings.verify_cache_ttl_seconds);
        let capacity = settings.verify_cache_capacity;
        let verifier = Arc::new(VerifyService::new(
            Arc::clone(&store),
            hasher.clone(),
            KeyCache::new(capacity, ttl, Arc::clone(&generations)),
            Arc::clone(&generations),
            Arc::clone(&gates),
        ));
        crate::verify::spawn_background(
            Arc::clone(&verifier),
            Arc::clone(&generations),
            Arc::clone(&store),
        );
        let handle = Arc::clone(&generations);
        let readiness: Arc<dyn Readiness> = Arc::new(DatabaseReadiness(Arc::clone(&store)));
        let state = web::Data::new(AppState {
            store,
            passwords: hasher,
            // A proven password is remembered a minute at most, however
            // long keys are: a password is a weaker secret than a key.
            proven: ProvenPasswords::new(
                capacity,
                ttl.min(PROVEN_PASSWORD_TTL),
                Arc::clone(&generations),
            ),
            proof_key: random_key(),
            failed_proofs: FailedProofs::new(settings.failed_proof_limits()),
            denied_audit: crate::fixed_window::Counter::new(
                denied::RECORDED_PER_CLIENT_PER_MINUTE,
                Duration::from_secs(60),
            ),
            generations,
            gates: Arc::clone(&gates),
            verifier,
            key_prefix: settings.key_prefix.clone(),
            dummy_hash,
            ingestor_liveness: std::time::Duration::from_secs(settings.ingestor_liveness_seconds),
        });
        let limits = settings.http;
        let body_timeout = extract::BodyTimeout(limits.request_timeout());
        // `max_connections` is per worker: the setting is for the process.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(body_timeout)
                .app_data(web::PathConfig::default().error_handler(extract::path_error))
                .app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .wrap(actix_web::middleware::from_fn(observe::observe))
                .configure(routes::keys::configure_verify)
                .configure(|cfg| keyward_core::ops::configure(cfg, Arc::clone(&readiness)))
                .configure(routes::openapi::configure)
                // The admin routes, inside the layer that audits refusals.
                // Verify and the probes stay outside it: they change nothing,
                // and a layer costs every request it wraps (the hot path's
                // budget, docs/BENCHMARKS.md).
                .service(
                    web::scope("")
                        .wrap(actix_web::middleware::from_fn(denied::record_denied))
                        .configure(routes::tenants::configure)
                        .configure(routes::roles::configure)
                        .configure(routes::users::configure)
                        .configure(routes::groups::configure)
                        .configure(routes::keys::configure)
                        .configure(routes::events::configure)
                        .configure(routes::audit::configure)
                        .configure(routes::ingestors::configure)
                        .default_service(web::to(routes::not_found)),
                )
                .default_service(web::to(routes::not_found))
        })
        .workers(workers)
        .client_request_timeout(limits.request_timeout())
        .max_connections((limits.max_connections as usize).div_ceil(workers));
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(port, "keyward-api listening");
        Ok(Self {
            server,
            port,
            gates,
            generations: handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The caches' fill gates, for concurrency tests.
    pub fn fill_gates(&self) -> Arc<FillGates> {
        Arc::clone(&self.gates)
    }

    /// The caches' generations, for concurrency tests (has this replica
    /// heard a change yet?).
    pub fn generations(&self) -> Arc<Generations> {
        Arc::clone(&self.generations)
    }

    /// Serves until SIGTERM/SIGINT, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// 32 bytes from the OS CSPRNG. Without one, a fixed key still keeps
/// passwords out of memory; it only loses per-process unpredictability.
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        tracing::warn!("no OS randomness for the proven-password cache key");
    }
    key
}
