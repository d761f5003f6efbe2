//! `…/tenants/{t}/users[/{u}[/roles|/permissions]]`. Never a password or
//! a hash in any answer: `User` has no field for either.

use actix_web::{HttpRequest, HttpResponse, web};
use keyward_core::ids::{Password, TenantId, Username};
use keyward_core::privilege::Privilege;
use keyward_core::rbac::{EffectiveRole, Permissions};
use keyward_core::secret::SecretString;
use keyward_core::store::{NewUser, User};
use serde::{Deserialize, Serialize};

use super::events::announcing;
use super::{Items, items, parse_roles, path_of, resource};
use crate::auth::TenantScope;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Json;
use crate::generations::Scope;
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[schema(value_type = String)]
    pub password: SecretString,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRoles {
    pub roles: Vec<String>,
}

/// A user's effective roles (direct and through groups) and privileges.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionsView {
    pub tenant_id: TenantId,
    pub username: Username,
    pub roles: Vec<EffectiveRole>,
    pub privileges: Vec<Privilege>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/tenants/{t}/users")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        resource("/api/v1/tenants/{t}/users/{u}")
            .name("keyward.user")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(resource("/api/v1/tenants/{t}/users/{u}/roles").route(web::put().to(put_roles)))
    .service(
        resource("/api/v1/tenants/{t}/users/{u}/permissions").route(web::get().to(permissions)),
    );
}

/// Create a user (password 12 to 256 characters; never returned).
#[utoipa::path(post, path = "/api/v1/tenants/{t}/users", tag = "users", request_body = CreateUser,
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 201, body = User), (status = 409, description = "`duplicate_username`", body = ErrorBody),
              (status = 422, description = "`unknown_roles`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    body: Json<CreateUser>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let body = body.0;
    let username = Username::parse(&body.username)?;
    // Never echo the password, not even in a validation message.
    let password = Password::parse(body.password.expose())
        .map_err(|e| ApiError::invalid("password", e.reason))?;
    let roles = parse_roles(&body.roles)?;
    who.require_may_grant(&tenant, &roles)?;
    let user = NewUser {
        tenant_id: tenant.clone(),
        username,
        password_hash: state.passwords.hash(password.expose()).await?,
        roles,
        created_at: chrono::Utc::now(),
    };
    let created = state.store.create_user(&user, &who.change()).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            path_of(
                &req,
                "keyward.user",
                &[tenant.as_str(), created.username.as_str()],
            )?,
        ))
        .json(created))
}

/// The tenant's users.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/users", tag = "users",
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 200, body = Items<User>)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, scope: TenantScope) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    Ok(items(state.store.list_users(&tenant).await?))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/users/{u}", tag = "users",
    params(("t" = String, Path, description = "tenant id"), ("u" = String, Path, description = "username")),
    responses((status = 200, body = User), (status = 404, description = "`user_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let username = Username::parse(&path.1)?;
    Ok(HttpResponse::Ok().json(state.store.get_user(&tenant, &username).await?))
}

/// Replace the user's direct roles.
#[utoipa::path(put, path = "/api/v1/tenants/{t}/users/{u}/roles", tag = "users", request_body = PutRoles,
    params(("t" = String, Path, description = "tenant id"), ("u" = String, Path, description = "username")),
    responses((status = 200, body = User, headers(("Keyward-Event-Id" = String, description = "the `rbac.changed` event"))), (status = 404, description = "`user_not_found`", body = ErrorBody),
              (status = 422, description = "`unknown_roles`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn put_roles(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
    body: Json<PutRoles>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let username = Username::parse(&path.1)?;
    let roles = parse_roles(&body.0.roles)?;
    who.require_may_grant(&tenant, &roles)?;
    let change = who.change();
    let user = state
        .store
        .set_user_roles(&tenant, &username, &roles, &change)
        .await?;
    // Remembered proofs of this user hold its old roles.
    state.generations.bump(Scope::User(&username));
    Ok(announcing(HttpResponse::Ok().json(user), change.event_id))
}

/// Delete a user.
#[utoipa::path(delete, path = "/api/v1/tenants/{t}/users/{u}", tag = "users",
    params(("t" = String, Path, description = "tenant id"), ("u" = String, Path, description = "username")),
    responses((status = 204, description = "deleted"), (status = 404, description = "`user_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let username = Username::parse(&path.1)?;
    state
        .store
        .delete_user(&tenant, &username, &who.change())
        .await?;
    state.generations.bump(Scope::User(&username));
    Ok(HttpResponse::NoContent().finish())
}

/// Effective roles with provenance, and the union of their privileges.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/users/{u}/permissions", tag = "users",
    params(("t" = String, Path, description = "tenant id"), ("u" = String, Path, description = "username")),
    responses((status = 200, body = PermissionsView), (status = 404, description = "`user_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn permissions(
    state: web::Data<AppState>,
    scope: TenantScope,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let username = Username::parse(&path.1)?;
    // 404 for an unknown user rather than an empty answer.
    state.store.get_user(&tenant, &username).await?;
    let grants = state.store.user_grants(&tenant, &username).await?;
    let perms = Permissions::from_grants(tenant.clone(), grants);
    let privileges = perms.privileges();
    Ok(HttpResponse::Ok().json(PermissionsView {
        tenant_id: tenant,
        username,
        roles: perms.roles,
        privileges,
    }))
}
