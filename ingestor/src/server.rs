//! The reference ingestor's HTTP side (`docs/api.md`, "Reference ingestor"): `POST /ingest/{stream}`
//! behind `Authorization: Bearer <api key>`, next to the ops routes
//! (`keyward_core::ops`; ready while revocations are being received). What it does with the data is not Keyward's business: it
//! reads the body (at most 1 MiB) and accepts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

use crate::guard::{Refusal, admit};
use crate::verifier::Verifier;

/// Largest body `POST /ingest/{stream}` takes.
pub const MAX_BODY: usize = 1024 * 1024;

pub struct IngestState {
    pub verifier: Arc<Verifier>,
    /// How long a client has to send its body (`408` after).
    pub body_timeout: std::time::Duration,
}

/// `POST /ingest/{stream}` and the ops routes; `connected` (the revocation
/// consumer's) makes the node ready.
pub fn configure(cfg: &mut web::ServiceConfig, connected: Arc<AtomicBool>) {
    cfg.route("/ingest/{stream}", web::post().to(ingest));
    keyward_core::ops::configure(cfg, Arc::new(BrokerReadiness(connected)));
}

/// Ready while the revocation consumer is connected: a node that cannot
/// hear revocations must not take traffic.
struct BrokerReadiness(Arc<AtomicBool>);

#[async_trait::async_trait]
impl keyward_core::ops::Readiness for BrokerReadiness {
    async fn check(&self) -> Vec<(&'static str, bool)> {
        vec![("broker", self.0.load(Ordering::Acquire))]
    }
}

async fn ingest(
    req: HttpRequest,
    stream: web::Path<String>,
    mut payload: web::Payload,
    state: web::Data<IngestState>,
) -> HttpResponse {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Decided before the body is read: a stranger can't make us buffer 1 MiB.
    if let Err(refused) = admit(&state.verifier, authorization, Some(&stream)).await {
        count(refused.code);
        return refused.response();
    }
    let size = match tokio::time::timeout(state.body_timeout, read_body(&mut payload)).await {
        Ok(Ok(size)) => size,
        Ok(Err(refused)) => return refused,
        Err(_) => {
            // The rest of the body may still come: close the connection.
            let mut res = refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The body did not arrive in time.",
            );
            res.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return res;
        }
    };
    count("accepted");
    HttpResponse::Accepted().json(serde_json::json!({"accepted": true, "bytes": size}))
}

/// Reads and counts the body, at most `MAX_BODY` bytes.
async fn read_body(payload: &mut web::Payload) -> Result<usize, HttpResponse> {
    let mut size = 0usize;
    while let Some(chunk) = payload.next().await {
        let Ok(bytes) = chunk else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The body could not be read.",
            ));
        };
        size += bytes.len();
        if size > MAX_BODY {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Bodies are limited to 1 MiB.",
            ));
        }
    }
    Ok(size)
}

/// An error answer in the API's shape (`docs/api.md`, "Errors"), counted by code.
fn refuse(status: StatusCode, code: &'static str, message: &'static str) -> HttpResponse {
    count(code);
    Refusal {
        status: status.as_u16(),
        code,
        message,
    }
    .response()
}

fn count(result: &'static str) {
    keyward_core::telemetry::count("keyward_ingest_total", &[("result", result)]);
}
