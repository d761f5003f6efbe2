//! `…/tenants/{t}/users[/{u}[/roles|/permissions]]`. Never a password or
//! a hash in any answer: `User` has no field for either.

use actix_web::{HttpResponse, web};
use keyward_core::ids::{Password, Username};
use keyward_core::rbac::Permissions;
use keyward_core::store::NewUser;
use serde::Deserialize;
use serde_json::json;

use super::{items, parse_roles, resource, tenant_param};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRoles {
    pub roles: Vec<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/tenants/{t}/users")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        resource("/api/v1/tenants/{t}/users/{u}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(resource("/api/v1/tenants/{t}/users/{u}/roles").route(web::put().to(put_roles)))
    .service(
        resource("/api/v1/tenants/{t}/users/{u}/permissions").route(web::get().to(permissions)),
    );
}

async fn create(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<String>,
    body: Json<CreateUser>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path)?;
    who.require_tenant(&state, &tenant).await?;
    let body = body.0;
    let username = Username::parse(&body.username)?;
    // Never echo the password, not even in a validation message.
    let password =
        Password::parse(&body.password).map_err(|e| ApiError::invalid("password", e.reason))?;
    let roles = parse_roles(&body.roles)?;
    who.require_may_grant(&tenant, &roles)?;
    let user = NewUser {
        tenant_id: tenant.clone(),
        username,
        password_hash: state.hasher.hash(password.expose()).await?,
        roles,
        created_at: chrono::Utc::now(),
    };
    let created = state.store.create_user(&user).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/api/v1/tenants/{tenant}/users/{}", created.username),
        ))
        .json(created))
}

async fn list(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path)?;
    who.require_tenant(&state, &tenant).await?;
    Ok(items(state.store.list_users(&tenant).await?))
}

async fn get(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let username = Username::parse(&path.1)?;
    Ok(HttpResponse::Ok().json(state.store.get_user(&tenant, &username).await?))
}

async fn put_roles(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
    body: Json<PutRoles>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let username = Username::parse(&path.1)?;
    let roles = parse_roles(&body.0.roles)?;
    who.require_may_grant(&tenant, &roles)?;
    Ok(HttpResponse::Ok().json(
        state
            .store
            .set_user_roles(&tenant, &username, &roles)
            .await?,
    ))
}

async fn delete(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let username = Username::parse(&path.1)?;
    state.store.delete_user(&tenant, &username).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Effective roles with provenance, and the union of their privileges.
async fn permissions(
    state: web::Data<AppState>,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = tenant_param(&path.0)?;
    who.require_tenant(&state, &tenant).await?;
    let username = Username::parse(&path.1)?;
    // 404 for an unknown user rather than an empty answer.
    state.store.get_user(&tenant, &username).await?;
    let grants = state.store.user_grants(&tenant, &username).await?;
    let perms = Permissions::from_grants(tenant.clone(), grants);
    Ok(HttpResponse::Ok().json(json!({
        "tenantId": tenant,
        "username": username,
        "roles": perms.roles,
        "privileges": perms.privileges(),
    })))
}
