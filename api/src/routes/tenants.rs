//! `POST /api/v1/tenants`, `GET /api/v1/tenants` (superadmin).

use actix_web::{HttpRequest, HttpResponse, web};
use keyward_core::ids::TenantId;
use keyward_core::store::Tenant;
use serde::Deserialize;

use super::{Items, items, path_of, resource};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/tenants")
            .name("keyward.tenants")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    );
}

/// Create a tenant (superadmin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 409, description = "`tenant_exists`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Principal,
    body: Json<CreateTenant>,
) -> ApiResult<HttpResponse> {
    who.require_superadmin()?;
    let id = TenantId::parse(&body.0.id).map_err(|e| ApiError::invalid("id", e.reason))?;
    let name = body
        .0
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
        return Err(ApiError::invalid(
            "name",
            "name must be at most 200 printable characters",
        ));
    }
    let tenant = state.store.create_tenant(&id, name, &who.change()).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("{}/{id}", path_of(&req, "keyward.tenants", &[])?),
        ))
        .json(tenant))
}

/// List tenants (superadmin).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants",
    responses((status = 200, body = Items<Tenant>)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, who: Principal) -> ApiResult<HttpResponse> {
    who.require_superadmin()?;
    Ok(items(state.store.list_tenants().await?))
}
