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
use crate::routes;
use crate::settings::Settings;
use crate::state::AppState;

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
        let state = web::Data::new(AppState {
            store,
            hasher,
            key_prefix: settings.key_prefix.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .service(routes::health::healthz)
                .service(routes::health::readyz)
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
