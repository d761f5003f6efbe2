//! Builds the application from settings, so tests start the very same app
//! on port 0 that `main` starts on the configured address.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use keyward_core::hashing::SecretHasher;
use keyward_core::store::{self, Store};

use crate::bootstrap::bootstrap_admin;
use crate::verify::Verifier;

/// How long a proven key is answered from memory. Revocation evicts at
/// once (NOTIFY across replicas); this bounds staleness if a notice is lost.
pub const VERIFY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// How many keys the verify cache holds.
pub const VERIFY_CACHE_CAPACITY: usize = 100_000;
use crate::settings::Settings;
use crate::state::AppState;
use crate::{extract, observe, routes};

pub struct Application {
    server: Server,
    port: u16,
}

impl Application {
    /// Opens the store, migrates, bootstraps the first admin and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hasher = SecretHasher::new(settings.argon2).context("argon2 settings")?;
        let store = open_store(&settings).await?;
        bootstrap_admin(store.as_ref(), &hasher, settings.admin_password.as_ref())
            .await
            .context("bootstrapping the first admin")?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        keyward_core::telemetry::metrics();
        let dummy_hash = hasher.hash(&ulid::Ulid::generate().to_string()).await?;
        let verifier = Arc::new(Verifier::new(
            Arc::clone(&store),
            hasher.clone(),
            VERIFY_CACHE_TTL,
            VERIFY_CACHE_CAPACITY,
        ));
        crate::verify::spawn_background(Arc::clone(&verifier), Arc::clone(&store));
        let state = web::Data::new(AppState {
            store,
            hasher,
            verifier,
            key_prefix: settings.key_prefix.clone(),
            dummy_hash,
            ingestor_liveness: std::time::Duration::from_secs(settings.ingestor_liveness_seconds),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PathConfig::default().error_handler(extract::path_error))
                .app_data(web::QueryConfig::default().error_handler(extract::query_error))
                .wrap(actix_web::middleware::from_fn(observe::observe))
                .configure(routes::keys::configure_verify)
                .configure(routes::health::configure)
                .configure(crate::metrics::configure)
                .configure(routes::tenants::configure)
                .configure(routes::roles::configure)
                .configure(routes::users::configure)
                .configure(routes::groups::configure)
                .configure(routes::keys::configure)
                .configure(routes::ingestors::configure)
                .configure(routes::openapi::configure)
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        .run();
        tracing::info!(port, "keyward-api listening");
        Ok(Self { server, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Connects and applies migrations: `keyward-api migrate` stops here.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::connect(&settings.database.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                settings.database.database_url
            )
        })?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}
