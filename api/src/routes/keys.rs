//! API keys (`docs/api.md`): create, list, fetch, revoke, retry a failed
//! revocation, validate (tenant admins) and verify (ingestors).
//!
//! Every `/api/v1/tenants/{t}/apikeys…` route also answers at
//! `/api/v1/apikeys…` for the caller's own tenant.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::privilege::Privilege;
use keyward_core::secret::SecretString;
use keyward_core::store::{ApiKey, KeyQuery, KeyUpdate, NewApiKey, RotatedKey, StatusFilter};
use keyward_core::token::ApiKeyToken;
use serde::{Deserialize, Serialize};

use super::events::announcing;
use super::{decode_cursor, encode_cursor, parse_limit, parse_roles, resource};
use crate::auth::{CachedPrincipal, TenantScope};
use crate::error::{ApiError, ApiResult, Code, ErrorBody};
use crate::extract::{Json, read_json, read_json_or_default};
use crate::generations::Scope;
use crate::state::AppState;
use crate::verify::{InvalidReason, Outcome};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 3339, in the future.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// The created key: its metadata and, this once, its secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    #[schema(value_type = String)]
    pub secret: SecretString,
}

/// Any of the three; a field left out stays as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// RFC 3339, in the future; `null` clears the expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
}

/// A field that is present (`null` included): `Some(value)`; absent fields
/// take the `default`, `None`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotateKey {
    /// 0 (default: the old key is revoked at once) to 604800 (7 days).
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
}

/// The longest grace period a rotation takes: 7 days.
const MAX_GRACE_SECONDS: i64 = 604_800;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiKeyBody {
    #[schema(value_type = String)]
    pub api_key: SecretString,
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPage {
    pub items: Vec<ApiKey>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<RoleName>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<RoleName>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Vec<Privilege>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<InvalidReason>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for base in ["/api/v1/tenants/{t}/apikeys", "/api/v1/apikeys"] {
        let mut one = resource(&format!("{base}/{{keyId}}"));
        if base.contains("{t}") {
            // Where `Location` points, from either form.
            one = one.name(KEY_RESOURCE);
        }
        cfg.service(
            resource(base)
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
        .service(resource(&format!("{base}/validate")).route(web::post().to(validate)))
        .service(
            one.route(web::get().to(get))
                .route(web::delete().to(revoke))
                .route(web::patch().to(update)),
        )
        .service(resource(&format!("{base}/{{keyId}}/rotate")).route(web::post().to(rotate)))
        .service(
            resource(&format!("{base}/{{keyId}}/revocation/retry")).route(web::post().to(retry)),
        );
    }
}

/// `POST /api/v1/verify`, registered before every pattern route: actix
/// tries resources in order, and each `{param}` route costs a regex match.
pub fn configure_verify(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/v1/verify").route(web::post().to(verify)));
}

fn key_id_param(req: &HttpRequest) -> ApiResult<KeyId> {
    let raw = req.match_info().get("keyId").unwrap_or_default();
    KeyId::parse(raw).map_err(|e| ApiError::invalid("keyId", e.reason))
}

/// The name of `/api/v1/tenants/{t}/apikeys/{keyId}`.
const KEY_RESOURCE: &str = "keyward.apikey";

fn location(req: &HttpRequest, tenant: &TenantId, key_id: KeyId) -> ApiResult<String> {
    super::path_of(req, KEY_RESOURCE, &[tenant.as_str(), &key_id.to_string()])
}

/// Create a key; the answer carries `secret`, shown this once.
#[utoipa::path(post, path = "/api/v1/tenants/{t}/apikeys", tag = "apikeys", request_body = CreateKey,
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 201, body = CreatedKey), (status = 409, description = "`duplicate_key_name`", body = ErrorBody),
              (status = 422, description = "`unknown_roles`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    body: Json<CreateKey>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let body = body.0;
    let name = KeyName::parse(&body.name)?;
    let roles = parse_roles(&body.roles)?;
    who.require_may_grant(&tenant, &roles)?;
    let change = who.change();
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|raw| parse_expiry(raw, change.at))
        .transpose()?;
    let key_id = KeyId::new();
    let token = new_token(&state, key_id)?;
    let new = NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name,
        roles,
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
        created_by: who.name(),
        created_at: change.at,
        expires_at,
    };
    let key = state.store.create_key(&new, &change).await?;
    tracing::info!(key_id = %key_id, "API key created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", location(&req, &tenant, key_id)?))
        .json(CreatedKey {
            key,
            secret: token.expose_secret().to_owned().into(),
        }))
}

/// An expiry as create and update take it: RFC 3339, in the future.
fn parse_expiry(raw: &str, now: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| ApiError::invalid("expiresAt", "expiresAt must be an RFC 3339 time"))?
        .with_timezone(&Utc);
    if at <= now {
        return Err(ApiError::invalid(
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    Ok(at)
}

fn new_token(state: &AppState, key_id: KeyId) -> ApiResult<ApiKeyToken> {
    ApiKeyToken::generate(&state.key_prefix, key_id).map_err(|_| ApiError::new(Code::Internal))
}

fn parse_query(q: &ListQuery) -> ApiResult<KeyQuery> {
    let status = match q.status.as_deref() {
        None => StatusFilter::All,
        Some(s) => StatusFilter::parse(s).ok_or_else(|| {
            ApiError::invalid("status", "status must be active, revoked, expired or all")
        })?,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    let before = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, KeyId::parse))
        .transpose()?;
    Ok(KeyQuery {
        status,
        limit,
        before,
    })
}

/// Keys, masked, newest first, paginated by an opaque cursor.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/apikeys", tag = "apikeys",
    params(("t" = String, Path, description = "tenant id"),
           ("status" = Option<String>, Query, description = "active, revoked, expired or all (default)"),
           ("limit" = Option<u32>, Query, description = "1 to 200, default 50"),
           ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, body = KeyPage)), security(("basic" = []), ("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    scope: TenantScope,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let q = parse_query(&query)?;
    let items = state.store.list_keys(&tenant, &q, Utc::now()).await?;
    let next_cursor = match items.last() {
        Some(last) if items.len() == q.limit as usize => Some(encode_cursor(&last.key_id)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(KeyPage { items, next_cursor }))
}

/// One key, masked, with its revocation state.
#[utoipa::path(get, path = "/api/v1/tenants/{t}/apikeys/{keyId}", tag = "apikeys",
    params(("t" = String, Path, description = "tenant id"), ("keyId" = String, Path, description = "key id (ULID)")),
    responses((status = 200, body = ApiKey), (status = 404, description = "`key_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let key_id = key_id_param(&req)?;
    Ok(HttpResponse::Ok().json(state.store.get_key(&tenant, key_id, Utc::now()).await?))
}

/// Revoke: tombstone and `key.revoked` event in one transaction; idempotent.
///
/// A failed transaction wrote nothing: 503, and a retry is safe.
#[utoipa::path(delete, path = "/api/v1/tenants/{t}/apikeys/{keyId}", tag = "apikeys",
    params(("t" = String, Path, description = "tenant id"), ("keyId" = String, Path, description = "key id (ULID)")),
    responses((status = 202, body = ApiKey,
                headers(("Keyward-Event-Id" = String, description = "the revocation's event (`GET /api/v1/events/{eventId}`)"))),
              (status = 404, description = "`key_not_found`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let key_id = key_id_param(&req)?;
    let revoked = state
        .store
        .revoke_key(&tenant, key_id, &who.change())
        .await?;
    // From the commit on this replica rejects the key; others hear NOTIFY.
    state.generations.bump(Scope::Key(key_id));
    if revoked.newly_revoked {
        tracing::info!(key_id = %key_id, "API key revoked");
    }
    Ok(with_event(HttpResponse::Accepted(), &revoked.key))
}

/// Put a `failed` revocation back in the outbox.
#[utoipa::path(post, path = "/api/v1/tenants/{t}/apikeys/{keyId}/revocation/retry", tag = "apikeys",
    params(("t" = String, Path, description = "tenant id"), ("keyId" = String, Path, description = "key id (ULID)")),
    responses((status = 202, body = ApiKey,
                headers(("Keyward-Event-Id" = String, description = "the revocation's event, back in the outbox"))),
              (status = 404, description = "`key_not_found`", body = ErrorBody),
              (status = 409, description = "`invalid_state`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn retry(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let key_id = key_id_param(&req)?;
    let key = state
        .store
        .retry_revocation(&tenant, key_id, &who.change())
        .await?;
    Ok(with_event(HttpResponse::Accepted(), &key))
}

/// Update a key's name, roles or expiry: the change and a `key.updated`
/// event in one transaction. A revoked key: 409 `invalid_state`.
#[utoipa::path(patch, path = "/api/v1/tenants/{t}/apikeys/{keyId}", tag = "apikeys", request_body = UpdateKey,
    params(("t" = String, Path, description = "tenant id"), ("keyId" = String, Path, description = "key id (ULID)")),
    responses((status = 200, body = ApiKey,
                headers(("Keyward-Event-Id" = String, description = "the `key.updated` event"))),
              (status = 404, description = "`key_not_found`", body = ErrorBody),
              (status = 409, description = "`invalid_state` (revoked), `duplicate_key_name`", body = ErrorBody),
              (status = 422, description = "`unknown_roles`", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    body: Json<UpdateKey>,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let key_id = key_id_param(&req)?;
    let body = body.0;
    let change = who.change();
    let update = KeyUpdate {
        name: body.name.as_deref().map(KeyName::parse).transpose()?,
        roles: body.roles.as_deref().map(parse_roles).transpose()?,
        expires_at: body
            .expires_at
            .map(|at| at.map(|raw| parse_expiry(&raw, change.at)).transpose())
            .transpose()?,
    };
    if let Some(roles) = &update.roles {
        who.require_may_grant(&tenant, roles)?;
    }
    let key = state
        .store
        .update_key(&tenant, key_id, &update, &change)
        .await?;
    state.generations.bump(Scope::Key(key_id));
    tracing::info!(key_id = %key_id, "API key updated");
    Ok(announcing(HttpResponse::Ok().json(key), change.event_id))
}

/// A rotation's answer: the new key, its secret (shown this once), and
/// the key it replaces (`replaces`, also in the key itself).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedKeyBody {
    #[serde(flatten)]
    pub key: ApiKey,
    #[schema(value_type = String)]
    pub secret: SecretString,
}

/// Rotate a key: a new key with the same name, roles, groups and expiry;
/// the old one revoked at once (grace 0, a `key.revoked` event) or expiring
/// after the grace period (a `key.updated` event). One transaction.
#[utoipa::path(post, path = "/api/v1/tenants/{t}/apikeys/{keyId}/rotate", tag = "apikeys", request_body = RotateKey,
    params(("t" = String, Path, description = "tenant id"), ("keyId" = String, Path, description = "key id (ULID)")),
    responses((status = 201, body = RotatedKeyBody,
                headers(("Keyward-Event-Id" = String, description = "the old key's event"))),
              (status = 404, description = "`key_not_found`", body = ErrorBody),
              (status = 409, description = "`invalid_state` (revoked, expired or already replaced)", body = ErrorBody)),
    security(("basic" = []), ("bearer" = [])))]
pub async fn rotate(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let TenantScope { who, tenant } = scope;
    let key_id = key_id_param(&req)?;
    let body: RotateKey = read_json_or_default(&req, payload).await?;
    let grace = body.grace_period_seconds.unwrap_or(0);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid(
            "gracePeriodSeconds",
            "gracePeriodSeconds must be 0 to 604800",
        ));
    }
    let change = who.change();
    let new_id = KeyId::new();
    let token = new_token(&state, new_id)?;
    let new = RotatedKey {
        key_id: new_id,
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
    };
    let grace = std::time::Duration::from_secs(grace.unsigned_abs());
    let rotated = state
        .store
        .rotate_key(&tenant, key_id, &new, grace, &change)
        .await?;
    state.generations.bump(Scope::Key(key_id));
    tracing::info!(key_id = %key_id, new_key_id = %new_id, "API key rotated");
    let answer = HttpResponse::Created()
        .insert_header(("Location", location(&req, &tenant, new_id)?))
        .json(RotatedKeyBody {
            key: rotated.key,
            secret: token.expose_secret().to_owned().into(),
        });
    Ok(announcing(answer, change.event_id))
}

/// `answer` with the key as its body and, when the key was revoked, its
/// revocation's event id in `Keyward-Event-Id` (the same id on a repeated
/// DELETE: the one revocation there is).
fn with_event(mut answer: actix_web::HttpResponseBuilder, key: &ApiKey) -> HttpResponse {
    let body = answer.json(key);
    match &key.revocation {
        Some(revocation) => announcing(body, revocation.event_id),
        None => body,
    }
}

/// Admin check of a secret; 403 before the body is read for anyone else.
#[utoipa::path(post, path = "/api/v1/tenants/{t}/apikeys/validate", tag = "apikeys", request_body = ApiKeyBody,
    params(("t" = String, Path, description = "tenant id")),
    responses((status = 200, body = Validation)), security(("basic" = []), ("bearer" = [])))]
pub async fn validate(
    req: HttpRequest,
    state: web::Data<AppState>,
    scope: TenantScope,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let tenant = scope.tenant;
    let body: ApiKeyBody = read_json(&req, payload).await?;
    let answer = match state.verifier.verify(body.api_key.expose()).await? {
        Outcome::Valid(v) if v.permissions().tenant == tenant => Validation {
            valid: true,
            key_id: Some(v.key_id),
            roles: Some(v.permissions().role_names()),
        },
        _ => Validation {
            valid: false,
            key_id: None,
            roles: None,
        },
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// A JSON body already serialised. Built directly, with a static header
/// value: `HttpResponse::Ok().insert_header(ContentType::json())` goes
/// through a builder and formats and allocates the media type on every
/// cached verify.
fn json_body(body: Bytes) -> HttpResponse {
    let mut res = HttpResponse::with_body(StatusCode::OK, body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.map_into_boxed_body()
}

/// Ingestors' verification (`verifier` or `superadmin`): the hot path.
#[utoipa::path(post, path = "/api/v1/verify", tag = "apikeys", request_body = ApiKeyBody,
    responses((status = 200, body = Verification)), security(("basic" = []), ("bearer" = [])))]
pub async fn verify(
    req: HttpRequest,
    who: CachedPrincipal,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    if !who.permissions().may_verify() {
        return Err(ApiError::new(Code::Forbidden));
    }
    // Borrowed, not extracted: `web::Data` clones an `Arc` that every
    // worker thread shares, a cost on each request of the hot path.
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::new(Code::Internal))?;
    let body: ApiKeyBody = read_json(&req, payload).await?;
    let answer = match state.verifier.verify(body.api_key.expose()).await? {
        Outcome::Valid(v) => {
            // Made once per cached key, then shared (`KeyState::answer`).
            if let Some(made) = v.answer().get() {
                return Ok(json_body(made.clone()));
            }
            // Exactly as long as the body: it is kept as long as the key is
            // cached, and the serialiser's spare capacity was up to half.
            let made = Bytes::from(
                serde_json::to_vec(&Verification {
                    valid: true,
                    tenant_id: Some(v.permissions().tenant.clone()),
                    key_id: Some(v.key_id),
                    roles: Some(v.permissions().role_names()),
                    privileges: Some(v.permissions().privileges()),
                    expires_at: Some(v.expires_at()),
                    cache_ttl_seconds: Some(state.verifier.cache.ttl().as_secs()),
                    reason: None,
                })
                .map_err(ApiError::internal)?
                .into_boxed_slice(),
            );
            let _ = v.answer().set(made.clone());
            return Ok(json_body(made));
        }
        Outcome::Invalid(reason) => Verification {
            valid: false,
            tenant_id: None,
            key_id: None,
            roles: None,
            privileges: None,
            expires_at: None,
            cache_ttl_seconds: None,
            reason: Some(reason),
        },
    };
    Ok(HttpResponse::Ok().json(answer))
}
