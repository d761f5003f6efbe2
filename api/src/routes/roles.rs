//! `…/tenants/{t}/roles[/{name}]`: create or replace, read, list, delete.

use std::str::FromStr;

use actix_web::{HttpRequest, HttpResponse, web};
use keyward_core::ids::RoleName;
use keyward_core::privilege::{Privilege, PrivilegeKind, StreamPattern};
use keyward_core::store::Role;
use serde::Deserialize;

use super::events::announcing;
use super::{
    Items, MAX_PRIVILEGES, created_or_replaced, items, path_of, require_at_most, resource,
};
use crate::auth::TenantScope;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    pub privileges: Vec<RawPrivilege>,
}

/// `privilege`: admin, editor, writer, reader or ingestor; the last three
/// may take `resource.stream`, a stream name or `*` glob.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPrivilege {
    pub privilege: String,
    #[serde(default)]
    pub resource: Option<RawResource>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    pub stream: String,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/tenants/{t}/roles").route(web::get().to(list)))
        .service(
            resource("/api/v1/tenants/{t}/roles/{name}")
                .name("keyward.role")
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        );
}

/// Parses privileges for a tenant role, naming the bad entry.
fn parse_privileges(raw: &[RawPrivilege]) -> ApiResult<Vec<Privilege>> {
    require_at_most("privileges", raw.len(), MAX_PRIVILEGES)?;
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let field = format!("privileges[{i}]");
            let kind = PrivilegeKind::from_str(&p.privilege).map_err(|_| {
                ApiError::invalid(&format!("{field}.privilege"), "unknown privilege")
            })?;
            let stream = match &p.resource {
                Some(r) => Some(StreamPattern::parse(&r.stream).map_err(|e| {
                    ApiError::invalid(&format!("{field}.resource.stream"), e.reason)
                })?),
                None => None,
            };
            let privilege = Privilege::new(kind, stream);
            privilege
                .check_for_tenant_role()
                .map_err(|e| ApiError::invalid(&field, e.reason))?;
            Ok(privilege)
        })
        .collect()
}

/// Create (201) or replace (200) a role. Built-in roles: 409 `invalid_state`.
#[utoipa::path(put, path = "/api/v1/tenants/{t}/roles/{name}", tag = "roles", request_body = PutRole,
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "role name")),
    responses((status = 201, body = Role, headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))), (status = 200, body = Role, headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))),
              (status = 404, description = "`tenant_not_found`", body = ErrorBody),
              (status = 409, description = "`invalid_state` (built-in role)", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
    body: Json<PutRole>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let name = RoleName::parse(&path.1)?;
    let privileges = parse_privileges(&body.0.privileges)?;
    let change = who.change();
    let (role, created) = state
        .store
        .put_role(&tenant, &name, &privileges, &change)
        .await?;
    // Keys holding the role now hold other privileges.
    state
        .generations
        .bump(crate::generations::Scope::Tenant(&tenant));
    Ok(announcing(
        created_or_replaced(
            created,
            path_of(&req, "keyward.role", &[tenant.as_str(), name.as_str()])?,
            role,
        ),
        change.event_id,
    ))
}

/// One role.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/roles/{name}", tag = "roles",
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "role name")),
    responses((status = 200, body = Role), (status = 404, description = "`role_not_found`, `tenant_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let name = RoleName::parse(&path.1)?;
    Ok(HttpResponse::Ok().json(state.store.get_role(&tenant, &name).await?))
}

/// The tenant's roles.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/roles", tag = "roles",
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 200, body = Items<Role>), (status = 404, description = "`tenant_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, scope: TenantScope) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    Ok(items(state.store.list_roles(&tenant).await?))
}

/// Delete a role; 409 `role_in_use` while a user, key or group holds it.
#[utoipa::path(delete, path = "/api/v1/tenants/{t}/roles/{name}", tag = "roles",
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "role name")),
    responses((status = 204, description = "deleted", headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))), (status = 404, description = "`role_not_found`", body = ErrorBody),
              (status = 409, description = "`role_in_use`, `invalid_state`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let name = RoleName::parse(&path.1)?;
    let change = who.change();
    state.store.delete_role(&tenant, &name, &change).await?;
    Ok(announcing(
        HttpResponse::NoContent().finish(),
        change.event_id,
    ))
}
