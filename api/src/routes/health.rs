//! `/healthz` (the process is up) and `/readyz` (the database answers).

use actix_web::{HttpResponse, get, web};

use crate::state::AppState;

#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(error = %keyward_core::store::error::chain(&e), "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "1"))
                .json(serde_json::json!({"status": "unavailable"}))
        }
    }
}
