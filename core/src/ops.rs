//! `/healthz`, `/readyz` and `/metrics`, the same in all three binaries
//! (feature `ops`). `/healthz`: the process is up. `/readyz`: every
//! dependency the binary names answers — `200 {"status": "ready", <name>:
//! true, …}`, else `503` with `Retry-After: 1`, `"status": "unavailable"`
//! and which one does not (the cause goes to the log). `/metrics`: the
//! Prometheus exposition of the process's recorder.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use async_trait::async_trait;

use crate::store::Backend;
use crate::store::error::chain;

/// What a binary's readiness depends on.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// Each dependency's name and whether it answers now.
    async fn check(&self) -> Vec<(&'static str, bool)>;
}

/// The database check every binary's readiness includes: one round trip;
/// a failure is logged (the cause never reaches the answer).
pub async fn database_answers(store: &dyn Backend) -> bool {
    match store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "readiness: the database does not answer");
            false
        }
    }
}

/// Registers the three routes; `readiness` decides `/readyz`.
pub fn configure(cfg: &mut web::ServiceConfig, readiness: Arc<dyn Readiness>) {
    cfg.app_data(web::Data::from(readiness))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Serves the three routes alone on `listen` (one worker thread, no signal
/// handling: the binary owns shutdown) until the handle is stopped. Binds
/// at once, failing with one line if the address is taken.
pub fn serve(
    listen: SocketAddr,
    readiness: Arc<dyn Readiness>,
) -> std::io::Result<(ServerHandle, u16)> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
    let port = listener.local_addr()?.port();
    let server =
        HttpServer::new(move || App::new().configure(|cfg| configure(cfg, Arc::clone(&readiness))))
            .workers(1)
            .disable_signals()
            .listen(listener)?
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((handle, port))
}

/// The process is up.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "up"))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Every dependency answers.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"),
              (status = 503, description = "a dependency does not answer"))))]
pub async fn readyz(readiness: web::Data<dyn Readiness>) -> HttpResponse {
    let checks = readiness.check().await;
    let ready = checks.iter().all(|(_, ok)| *ok);
    let mut body = serde_json::Map::new();
    body.insert(
        "status".into(),
        (if ready { "ready" } else { "unavailable" }).into(),
    );
    for (name, ok) in checks {
        body.insert(name.into(), ok.into());
    }
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

/// Prometheus text format.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "metrics", content_type = "text/plain"))))]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::render_metrics())
}
