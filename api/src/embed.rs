//! Keyward's API as a part of another actix-web application: a platform
//! with a server of its own mounts the API-key admin routes, verification
//! and the probes inside it, under a prefix of its choosing. `keyward-api`
//! itself is this, mounted at the root of a server of its own
//! ([`crate::startup::Application`]).
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use keyward_api::embed::KeywardApi;
//! use keyward_api::settings::Settings;
//! use keyward_core::config::DatabaseUrl;
//!
//! # async fn serve() -> anyhow::Result<()> {
//! let url: DatabaseUrl = "sqlite://platform.db?mode=rwc".parse().map_err(anyhow::Error::msg)?;
//! let settings = Settings::local(url.clone());
//! let store = keyward_core::store::open(&url).await?;
//! // Migrated, the first admin bootstrapped, caches and background work
//! // started: once per process, not per worker.
//! let keyward = KeywardApi::new(&settings, store).await?;
//! HttpServer::new(move || {
//!     App::new()
//!         // The platform's own routes, beside Keyward's.
//!         .route("/", web::get().to(|| async { HttpResponse::Ok().body("my platform") }))
//!         // `/keyward/api/v1/tenants/…`, `/keyward/api/v1/verify`, …
//!         .service(keyward.scope("/keyward"))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Everything under the prefix is Keyward's: an unknown path there gets
//! Keyward's `404 not_found` body. `Location` headers carry the prefix.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::HttpServiceFactory;
use actix_web::web;
use anyhow::Context;
use keyward_core::ops::Readiness;
use keyward_core::password::PasswordHasher;
use keyward_core::store::Store;

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

/// Keyward's routes with the state they share, ready to mount. Cheap to
/// clone: an actix server builds its app once per worker thread, and every
/// worker must share one state (one verify cache, one set of generations).
#[derive(Clone)]
pub struct KeywardApi {
    state: web::Data<AppState>,
    readiness: Arc<dyn Readiness>,
    body_timeout: extract::BodyTimeout,
    gates: Arc<FillGates>,
    generations: Arc<Generations>,
}

impl KeywardApi {
    /// Migrates `store`'s database (the store opens migrated), creates the
    /// first `admin` on an empty one, and starts the background work (the
    /// verifier's usage writes and change feed of other replicas, the
    /// expired keys' sweep). Call it once per process, inside the runtime
    /// that serves.
    pub async fn new(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(settings.argon2).context("argon2 settings")?;
        bootstrap_admin(store.as_ref(), &hasher, settings.admin_password.as_ref())
            .await
            .context("bootstrapping the first admin")?;
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
        crate::expiry_sweep::spawn(Arc::clone(&store));
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
            proof_turns: Default::default(),
            failed_proofs: FailedProofs::new(settings.failed_proof_limits()),
            denied_audit: crate::fixed_window::Counter::new(
                denied::RECORDED_PER_CLIENT_PER_MINUTE,
                Duration::from_secs(60),
            ),
            generations: Arc::clone(&generations),
            gates: Arc::clone(&gates),
            verifier,
            key_prefix: settings.key_prefix.clone(),
            dummy_hash,
            ingestor_liveness: Duration::from_secs(settings.ingestor_liveness_seconds),
        });
        // Proven passwords past their minute, or of a user changed since,
        // are freed once a minute (the verify cache is swept by the
        // verifier's own background task).
        let sweeping = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROVEN_PASSWORD_TTL);
            loop {
                tick.tick().await;
                sweeping.proven.drop_stale();
            }
        });
        Ok(Self {
            state,
            readiness,
            body_timeout: extract::BodyTimeout(settings.http.request_timeout()),
            gates,
            generations,
        })
    }

    /// Every route of Keyward under `prefix` (`""` for the root: then it
    /// answers every path nobody registered before it).
    pub fn scope(&self, prefix: &str) -> impl HttpServiceFactory + 'static {
        let api = self.clone();
        web::scope(prefix)
            .app_data(api.state.clone())
            .app_data(api.body_timeout)
            .app_data(web::PathConfig::default().error_handler(extract::path_error))
            .app_data(web::QueryConfig::default().error_handler(extract::query_error))
            .wrap(actix_web::middleware::from_fn(observe::observe))
            .configure(routes::keys::configure_verify)
            .configure(|cfg| keyward_core::ops::configure(cfg, Arc::clone(&api.readiness)))
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
