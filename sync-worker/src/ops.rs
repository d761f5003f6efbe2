//! `/healthz`, `/readyz` and `/metrics` on `KEYWARD_LISTEN`.
//!
//! Ready means: connected to the broker, and the database answers. A
//! worker that is reconnecting says 503 so an orchestrator can tell.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use keyward_core::store::{Store, error::chain};

/// What `/readyz` reports, shared with the delivery loop.
pub struct Health {
    pub store: Arc<dyn Store>,
    broker_connected: AtomicBool,
}

impl Health {
    pub fn new(store: Arc<dyn Store>) -> Self {
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

/// Binds `listen` (failing at once, with one line, if it is taken) and
/// serves until the handle is stopped.
pub fn serve(listen: SocketAddr, health: Arc<Health>) -> anyhow::Result<(ServerHandle, u16)> {
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let port = listener.local_addr()?.port();
    let health = web::Data::from(health);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(health.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    // The worker owns signal handling: it must finish its batch first.
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((handle, port))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let database = match health.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "readiness: the database does not answer");
            false
        }
    };
    let broker = health.broker_connected();
    let body = serde_json::json!({
        "status": if database && broker { "ready" } else { "unavailable" },
        "database": database,
        "broker": broker,
    });
    if database && broker {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(keyward_core::telemetry::render_metrics())
}
