//! `GET /api/v1/events/{eventId}`: where an event is on its way to the
//! ingestors, for superadmins and those with permission on its tenant.
//! The id is the one a change's answer carries in `Keyward-Event-Id`.

use actix_web::{HttpRequest, HttpResponse, web};
use keyward_core::ids::EventId;
use keyward_core::store::EventStatus;

use super::resource;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::state::AppState;

/// The header on every answer whose change emitted an event
/// (`Keyward-Event-Id`; header names are case-insensitive).
pub const EVENT_ID_HEADER: &str = "keyward-event-id";

/// `answer` naming the event its change emitted.
pub fn announcing(mut answer: HttpResponse, event: EventId) -> HttpResponse {
    // A ULID is always a valid header value.
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&event.to_string()) {
        answer.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(EVENT_ID_HEADER),
            value,
        );
    }
    answer
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/events/{eventId}").route(web::get().to(get)));
}

/// One event's delivery state. An event of a tenant the caller may not act
/// on answers as one that does not exist: event ids say nothing of which
/// tenants are busy.
#[utoipa::path(get, path = "/api/v1/events/{eventId}", tag = "events",
    params(("eventId" = String, Path, description = "event id (ULID), as in `Keyward-Event-Id`")),
    responses((status = 200, body = EventStatus),
              (status = 404, description = "`event_not_found`: none by that id, not yours, or purged after the worker's retention", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Principal,
) -> ApiResult<HttpResponse> {
    let raw = req.match_info().get("eventId").unwrap_or_default();
    let event_id = EventId::parse(raw).map_err(|e| ApiError::invalid("eventId", e.reason))?;
    match state.store.event_status(event_id).await? {
        Some(event) if who.permissions.may_act_on_tenant(&event.tenant_id) => {
            Ok(HttpResponse::Ok().json(event))
        }
        _ => Err(ApiError::new(Code::EventNotFound)),
    }
}
