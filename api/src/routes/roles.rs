//! `…/tenants/{t}/roles[/{name}]`: create or replace, read, list, delete.

use std::str::FromStr;

use actix_web::{HttpResponse, web};
use keyward_core::ids::RoleName;
use keyward_core::privilege::{Privilege, PrivilegeKind, StreamPattern};
use serde::Deserialize;

use super::{items, resource, tenant_param};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    pub privileges: Vec<RawPrivilege>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivilege {
    pub privilege: String,
    #[serde(default)]
    pub resource: Option<RawResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    pub stream: String,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/tenants/{t}/roles").route(web::get().to(list)))
        .service(
            resource("/api/v1/tenants/{t}/roles/{name}")
                .route(web::put().to(put))
                .route(web::get().to(get))
                .route(web::delete().to(delete)),
        );
}

/// Parses privileges for a tenant role, naming the bad entry.
fn parse_privileges(raw: &[RawPrivilege]) -> ApiResult<Vec<Privilege>> {
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

async fn put(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
    body: Json<PutRole>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let name = RoleName::parse(&path.1)?;
    let privileges = parse_privileges(&body.0.privileges)?;
    let (role, created) = state
        .store
        .put_role(&tenant, &name, &privileges, chrono::Utc::now())
        .await?;
    Ok(if created {
        HttpResponse::Created()
            .insert_header(("Location", format!("/api/v1/tenants/{tenant}/roles/{name}")))
            .json(role)
    } else {
        HttpResponse::Ok().json(role)
    })
}

async fn get(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let name = RoleName::parse(&path.1)?;
    Ok(HttpResponse::Ok().json(state.store.get_role(&tenant, &name).await?))
}

async fn list(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path)?;
    who.require_tenant(&state, &tenant).await?;
    Ok(items(state.store.list_roles(&tenant).await?))
}

async fn delete(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let name = RoleName::parse(&path.1)?;
    state.store.delete_role(&tenant, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}
