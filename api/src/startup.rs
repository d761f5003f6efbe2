//! Builds the application from settings, so tests start the very same app
//! on port 0 that `main` starts on the configured address.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use anyhow::Context;
use keyward_core::store;

use crate::embed::KeywardApi;
use crate::fill_gate::FillGates;
use crate::generations::Generations;
use crate::settings::Settings;

pub struct Application {
    server: Server,
    port: u16,
    api: KeywardApi,
}

impl Application {
    /// Opens the store, migrates, bootstraps the first admin and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything else: a certificate that can't be used ends the
        // start, never a fall back to plain HTTP.
        let tls = settings.tls.server_config()?;
        settings.tls.warn_if_plain(settings.listen, "keyward-api");
        // Bad argon2 settings are reported before the database is opened.
        keyward_core::password::PasswordHasher::new(settings.argon2).context("argon2 settings")?;
        let store = store::open(&settings.database.database_url).await?;
        let api = KeywardApi::new(&settings, store).await?;
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let limits = settings.http;
        // `max_connections` is per worker: the setting is for the process.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mounted = api.clone();
        let server = HttpServer::new(move || App::new().service(mounted.scope("")))
            .workers(workers)
            .client_request_timeout(limits.request_timeout())
            .max_connections((limits.max_connections as usize).div_ceil(workers));
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        tracing::info!(port, "keyward-api listening");
        Ok(Self { server, port, api })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The caches' fill gates, for concurrency tests.
    pub fn fill_gates(&self) -> Arc<FillGates> {
        self.api.fill_gates()
    }

    /// The caches' generations, for concurrency tests (has this replica
    /// heard a change yet?).
    pub fn generations(&self) -> Arc<Generations> {
        self.api.generations()
    }

    /// Serves until SIGTERM/SIGINT, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
