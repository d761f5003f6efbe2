//! `…/tenants/{t}/groups[/{name}]`: create or replace, read, list, delete.

use actix_web::{HttpRequest, HttpResponse, web};
use keyward_core::ids::{GroupName, KeyId, Username};
use keyward_core::store::{Group, GroupSpec};
use serde::Deserialize;

use super::events::announcing;
use super::{
    Items, MAX_MEMBERS, created_or_replaced, items, parse_list, parse_roles, path_of, resource,
};
use crate::auth::TenantScope;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PutGroup {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub api_keys: Vec<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/tenants/{t}/groups").route(web::get().to(list)))
        .service(
            resource("/api/v1/tenants/{t}/groups/{name}")
                .name("keyward.group")
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        );
}

/// Create (201) or replace (200) a group with its roles and members.
/// Unknown users or keys: 400 with `details.users` / `details.apiKeys`.
#[utoipa::path(put, path = "/api/v1/tenants/{t}/groups/{name}", tag = "groups", request_body = PutGroup,
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "group name")),
    responses((status = 201, body = Group, headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))), (status = 200, body = Group, headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))),
              (status = 422, description = "`unknown_roles`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
    body: Json<PutGroup>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let name = GroupName::parse(&path.1)?;
    let body = body.0;
    let spec = GroupSpec {
        roles: parse_roles(&body.roles)?,
        users: parse_list("users", &body.users, MAX_MEMBERS, Username::parse)?,
        api_keys: parse_list("apiKeys", &body.api_keys, MAX_MEMBERS, KeyId::parse)?,
    };
    who.require_may_grant(&tenant, &spec.roles)?;
    let change = who.change();
    let (group, created) = state
        .store
        .put_group(&tenant, &name, &spec, &change)
        .await?;
    // Keys joining or leaving the group gain or lose its roles.
    state
        .generations
        .bump(crate::generations::Scope::Tenant(&tenant));
    Ok(announcing(
        created_or_replaced(
            created,
            path_of(&req, "keyward.group", &[tenant.as_str(), name.as_str()])?,
            group,
        ),
        change.event_id,
    ))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/groups/{name}", tag = "groups",
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "group name")),
    responses((status = 200, body = Group), (status = 404, description = "`group_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let name = GroupName::parse(&path.1)?;
    Ok(HttpResponse::Ok().json(state.store.get_group(&tenant, &name).await?))
}

/// The tenant's groups.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/groups", tag = "groups",
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 200, body = Items<Group>)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, scope: TenantScope) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    Ok(items(state.store.list_groups(&tenant).await?))
}

/// Delete a group.
#[utoipa::path(delete, path = "/api/v1/tenants/{t}/groups/{name}", tag = "groups",
    params(("t" = String, Path, description = "tenant id"), ("name" = String, Path, description = "group name")),
    responses((status = 204, description = "deleted", headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))), (status = 404, description = "`group_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let name = GroupName::parse(&path.1)?;
    let change = who.change();
    state.store.delete_group(&tenant, &name, &change).await?;
    state
        .generations
        .bump(crate::generations::Scope::Tenant(&tenant));
    Ok(announcing(
        HttpResponse::NoContent().finish(),
        change.event_id,
    ))
}
