//! `GET /api/v1/ingestors` (superadmin): the ingestors the sync worker has
//! heard from, whether each is live, and how far behind its acks are.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Items, items, resource};
use crate::auth::Principal;
use crate::error::ApiResult;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ingestor {
    pub id: String,
    /// Its durable queue, `keyward.ingestor.{id}`.
    pub queue: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Heard from within the liveness window (default 30 s): it counts
    /// towards `revocation.ingestors` of events published now.
    pub live: bool,
    /// Published events (since it was first seen) it has not acked yet.
    pub unacked: i64,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/ingestors").route(web::get().to(list)));
}

/// List ingestors (superadmin).
#[utoipa::path(get, path = "/api/v1/ingestors", tag = "ingestors",
    responses((status = 200, body = Items<Ingestor>)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, who: Principal) -> ApiResult<HttpResponse> {
    who.require_superadmin()?;
    let live_since = Utc::now()
        - chrono::Duration::from_std(state.ingestor_liveness).unwrap_or(chrono::Duration::zero());
    let all = state.store.list_ingestors().await?;
    Ok(items(
        all.into_iter()
            .map(|i| Ingestor {
                live: i.last_seen_at >= live_since,
                id: i.id,
                queue: i.queue,
                first_seen_at: i.first_seen_at,
                last_heartbeat_at: i.last_seen_at,
                unacked: i.unacked,
            })
            .collect(),
    ))
}
