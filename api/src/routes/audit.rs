//! The audit trail (§10a): `GET /api/v1/tenants/{t}/audit` for those with
//! permission on the tenant, `GET /api/v1/audit` (every tenant, or one with
//! `tenant=`) for superadmins. Newest first, paginated like keys, filtered
//! by `action` and `actor`.

use actix_web::{HttpResponse, web};
use keyward_core::ids::{AuditId, TenantId};
use keyward_core::store::audit::{Action, AuditQuery, AuditRecord};
use serde::{Deserialize, Serialize};

use super::{decode_cursor, encode_cursor, parse_limit, resource};
use crate::auth::{Principal, TenantScope};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct TenantAuditQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
}

#[derive(Deserialize)]
pub struct AllAuditQuery {
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub filters: TenantAuditQuery,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/tenants/{t}/audit").route(web::get().to(list_tenant)))
        .service(resource("/api/v1/audit").route(web::get().to(list_all)));
}

fn parse_query(tenant: Option<TenantId>, q: &TenantAuditQuery) -> ApiResult<AuditQuery> {
    let action = q
        .action
        .as_deref()
        .map(|a| {
            Action::parse(a).ok_or_else(|| {
                ApiError::invalid("action", "action is not one of the audit actions")
            })
        })
        .transpose()?;
    Ok(AuditQuery {
        tenant,
        action,
        actor: q.actor.clone(),
        before: q
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c, AuditId::parse))
            .transpose()?,
        limit: parse_limit(q.limit.as_deref())?,
    })
}

async fn page(state: &AppState, query: &AuditQuery) -> ApiResult<HttpResponse> {
    let items = state.store.list_audit(query).await?;
    let next_cursor = match items.last() {
        Some(last) if items.len() == query.limit as usize => Some(encode_cursor(&last.id)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}

/// The tenant's audit records, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/audit", tag = "audit",
    params(("t" = String, Path, description = "tenant id"),
           ("action" = Option<String>, Query, description = "e.g. `key.revoke`"),
           ("actor" = Option<String>, Query, description = "a username or `apikey:{keyId}`"),
           ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
           ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, body = AuditPage), (status = 400, description = "`invalid_request`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_tenant(
    state: web::Data<AppState>,
    scope: TenantScope,
    query: web::Query<TenantAuditQuery>,
) -> ApiResult<HttpResponse> {
    page(&state, &parse_query(Some(scope.tenant), &query)?).await
}

/// Every tenant's audit records, newest first (superadmin).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("tenant" = Option<String>, Query, description = "one tenant's records only"),
           ("action" = Option<String>, Query, description = "e.g. `key.revoke`"),
           ("actor" = Option<String>, Query, description = "a username or `apikey:{keyId}`"),
           ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
           ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, body = AuditPage), (status = 403, description = "`forbidden`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list_all(
    state: web::Data<AppState>,
    who: Principal,
    query: web::Query<AllAuditQuery>,
) -> ApiResult<HttpResponse> {
    who.require_superadmin()?;
    let tenant = query
        .tenant
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| ApiError::invalid("tenant", e.reason)))
        .transpose()?;
    page(&state, &parse_query(tenant, &query.filters)?).await
}
