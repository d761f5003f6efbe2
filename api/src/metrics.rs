//! `/metrics`: the Prometheus exposition of the process's recorder
//! (`keyward_core::telemetry::metrics`).

use actix_web::{HttpResponse, web};

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "metrics", content_type = "text/plain")))]
pub async fn render() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(keyward_core::telemetry::render_metrics())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(render));
}
