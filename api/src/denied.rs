//! Refused attempts at state-changing endpoints (401, 403) go to the audit
//! trail with `"outcome": "denied"` (`docs/api.md`, "Audit"): best effort, outside any
//! transaction, after the answer is made. A refusal is recorded under the
//! tenant it aimed at (the path's `{t}`, or the caller's own on the
//! `/api/v1/apikeys…` aliases); one whose tenant is unknown (no valid
//! credentials on an alias) has nowhere to be listed and is only logged.
//! At most `RECORDED_PER_CLIENT_PER_MINUTE` are written per client address.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};
use keyward_core::ids::TenantId;
use keyward_core::store::audit::{Action, DeniedAttempt};

use crate::request_id;
use crate::state::AppState;

/// Who was refused, as far as authentication got: set by the extractors
/// once a caller is authenticated (a 403 knows it; a 401 does not).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub tenant: TenantId,
}

/// Which audited action a (method, route pattern) is, and the path
/// parameter naming its target.
fn action_of(method: &Method, pattern: &str) -> Option<(Action, Option<&'static str>)> {
    let rest = pattern
        .strip_prefix("/api/v1/tenants/{t}")
        .or_else(|| pattern.strip_prefix("/api/v1"))?;
    let m = method.as_str();
    Some(match (m, rest) {
        ("POST", "/tenants") => (Action::TenantCreate, None),
        ("PUT", "/roles/{name}") => (Action::RolePut, Some("name")),
        ("DELETE", "/roles/{name}") => (Action::RoleDelete, Some("name")),
        ("POST", "/users") => (Action::UserCreate, None),
        ("DELETE", "/users/{u}") => (Action::UserDelete, Some("u")),
        ("PUT", "/users/{u}/roles") => (Action::UserRoles, Some("u")),
        ("PUT", "/groups/{name}") => (Action::GroupPut, Some("name")),
        ("DELETE", "/groups/{name}") => (Action::GroupDelete, Some("name")),
        ("POST", "/apikeys") => (Action::KeyCreate, None),
        ("DELETE", "/apikeys/{keyId}") => (Action::KeyRevoke, Some("keyId")),
        ("PATCH", "/apikeys/{keyId}") => (Action::KeyUpdate, Some("keyId")),
        ("POST", "/apikeys/{keyId}/rotate") => (Action::KeyRotate, Some("keyId")),
        ("POST", "/apikeys/{keyId}/revocation/retry") => (Action::RevocationRetry, Some("keyId")),
        _ => return None,
    })
}

/// The record of a refused request, if it is one to record.
fn attempt(req: &HttpRequest, status: StatusCode) -> Option<DeniedAttempt> {
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return None;
    }
    let (action, target) = action_of(req.method(), &req.match_pattern()?)?;
    let caller = req.extensions().get::<Caller>().cloned();
    // Path segments are the caller's bytes: only well-formed ones are kept.
    let tenant = match req.match_info().get("t") {
        Some(raw) => TenantId::parse(raw).ok(),
        None => caller.as_ref().map(|c| c.tenant.clone()),
    }?;
    let target = target
        .and_then(|name| req.match_info().get(name))
        .filter(|t| t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_default()
        .to_owned();
    Some(DeniedAttempt {
        tenant_id: tenant,
        actor: caller.map_or_else(|| "anonymous".to_owned(), |c| c.name),
        action,
        target,
        request_id: request_id::current(),
        at: chrono::Utc::now(),
    })
}

pub async fn record_denied(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let res = next.call(req).await?;
    if let Some(attempt) = attempt(res.request(), res.status())
        && let Some(state) = res.request().app_data::<web::Data<AppState>>()
        && within_limit(state, res.request())
        && let Err(e) = state.store.record_denied(&attempt).await
    {
        tracing::warn!(error = %keyward_core::store::error::chain(&e),
            action = attempt.action.as_str(), "a refused attempt could not be audited");
    }
    Ok(res)
}

/// Refusals recorded per client address and minute. Each is a database
/// write that costs the caller nothing (a request without credentials):
/// past this, refusals from that address are counted in
/// `keyward_audit_denied_unrecorded_total`, not written.
pub const RECORDED_PER_CLIENT_PER_MINUTE: u32 = 60;

fn within_limit(state: &AppState, req: &HttpRequest) -> bool {
    let client = req
        .peer_addr()
        .map_or_else(String::new, |a| a.ip().to_string());
    match state.denied_audit.take(&client) {
        Ok(_counted) => true,
        Err(_) => {
            metrics::counter!("keyward_audit_denied_unrecorded_total").increment(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_changing_route_names_its_action() {
        let post = Method::POST;
        assert_eq!(
            action_of(&Method::DELETE, "/api/v1/tenants/{t}/apikeys/{keyId}"),
            Some((Action::KeyRevoke, Some("keyId")))
        );
        assert_eq!(
            action_of(&post, "/api/v1/apikeys/{keyId}/rotate"),
            Some((Action::KeyRotate, Some("keyId")))
        );
        assert_eq!(
            action_of(&post, "/api/v1/tenants"),
            Some((Action::TenantCreate, None))
        );
        assert_eq!(action_of(&Method::GET, "/api/v1/tenants/{t}/apikeys"), None);
        assert_eq!(action_of(&post, "/api/v1/verify"), None);
        assert_eq!(
            action_of(&post, "/api/v1/tenants/{t}/apikeys/validate"),
            None
        );
    }
}
