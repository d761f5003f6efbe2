//! The framework's floor for `bench-verify floor`: a bare actix-web server
//! answering `POST /api/v1/verify`'s request shape (a Bearer header, a
//! JSON body read whole and parsed) with a body about as long as a real
//! valid answer, beside `GET /healthz` — on the same actix-web, worker count and
//! allocator as `keyward-api`, with none of Keyward in between (no
//! middleware, no authentication, no verification). What it reaches
//! relative to its own healthz bounds what any verification can reach on
//! this stack and machine.
//!
//! Listens on `KEYWARD_LISTEN` (as the binaries do); `/readyz` answers as
//! soon as it listens.

use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// About as long as `keyward-api`'s answer for a valid key with one role and
/// one privilege (the benches' keys).
const ANSWER: &str = r#"{"valid":true,"tenantId":"bench","keyId":"01KBENCH00000000000000000000","roles":["shippers"],"privileges":[{"privilege":"ingestor","resource":null}],"expiresAt":null,"cacheTtlSeconds":60}"#;

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn verify_shaped(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.get("apiKey").is_some() => HttpResponse::Ok()
            .insert_header(ContentType::json())
            .body(ANSWER),
        _ => HttpResponse::BadRequest().finish(),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("KEYWARD_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    HttpServer::new(|| {
        App::new()
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(healthz))
            .route("/api/v1/verify", web::post().to(verify_shaped))
    })
    .workers(workers)
    .bind(listen)?
    .run()
    .await
}
