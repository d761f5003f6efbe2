//! HTTP routes, one module per resource, and the parsing they share.

pub mod audit;
pub mod events;
pub mod groups;
pub mod health;
pub mod ingestors;
pub mod keys;
pub mod roles;
pub mod tenants;
pub mod users;

pub mod openapi;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use keyward_core::ids::{InvalidValue, RoleName};
use serde::Serialize;

use crate::error::{ApiError, ApiResult, Code};

/// `{"items": [...]}`: the shape of every list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Items<T> {
    pub items: Vec<T>,
}

pub fn items<T: Serialize>(items: Vec<T>) -> HttpResponse {
    HttpResponse::Ok().json(Items { items })
}

/// The path of the resource registered as `name` with `elements`, under
/// wherever Keyward is mounted (`KeywardApi::scope`): what a `Location`
/// header says.
pub fn path_of(req: &HttpRequest, name: &str, elements: &[&str]) -> ApiResult<String> {
    req.url_for(name, elements)
        .map(|url| url.path().to_owned())
        .map_err(ApiError::internal)
}

/// `201 Created` with `Location`, or `200` for a replaced resource (PUT).
pub fn created_or_replaced<T: Serialize>(created: bool, location: String, body: T) -> HttpResponse {
    if created {
        HttpResponse::Created()
            .insert_header(("Location", location))
            .json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// Longest lists a request may carry. Every entry is a row written (and
/// a name checked) inside the change's transaction, while it holds the
/// database's write lock: an unbounded list let one request stall every
/// tenant's writes (issue #13's probe).
pub const MAX_ROLES: usize = 64;
/// Privileges of one role.
pub const MAX_PRIVILEGES: usize = 64;
/// Users, and API keys, of one group.
pub const MAX_MEMBERS: usize = 1_000;

/// `400 invalid_request` naming `field` when it has more than `max` entries.
pub fn require_at_most(field: &str, len: usize, max: usize) -> ApiResult<()> {
    if len > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} may have at most {max} entries"),
        ));
    }
    Ok(())
}

/// Parses each entry of a list of at most `max`, naming the bad one
/// (`roles[2]`); drops repeats, keeps the first-seen order.
pub fn parse_list<T: PartialEq>(
    field: &str,
    raw: &[String],
    max: usize,
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> ApiResult<Vec<T>> {
    require_at_most(field, raw.len(), max)?;
    let mut out: Vec<T> = Vec::with_capacity(raw.len());
    for (i, value) in raw.iter().enumerate() {
        let parsed = parse(value).map_err(|e| {
            ApiError::invalid(
                &format!("{field}[{i}]"),
                format!("invalid {field}[{i}]: {}", e.reason),
            )
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

pub fn parse_roles(raw: &[String]) -> ApiResult<Vec<RoleName>> {
    parse_list("roles", raw, MAX_ROLES, RoleName::parse)
}

/// `limit` of a paginated list: 1 to 200, default 50.
pub fn parse_limit(raw: Option<&str>) -> ApiResult<u32> {
    match raw {
        None => Ok(50),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be 1 to 200")),
    }
}

/// A page cursor, opaque to clients: base64url of `v1:{last id}`.
pub fn encode_cursor(last: &impl std::fmt::Display) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{last}"))
}

/// Reads a cursor back; 400 naming `cursor` for one this API did not give.
pub fn decode_cursor<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> ApiResult<T> {
    let bad = || ApiError::invalid("cursor", "cursor is not one this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix("v1:").ok_or_else(bad)?;
    parse(id).map_err(|_| bad())
}

/// Answers for paths no route matches.
pub async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::new(Code::NotFound))
}

/// Answers for a known path with a method it does not take.
pub async fn method_not_allowed() -> ApiResult<HttpResponse> {
    Err(ApiError::new(Code::MethodNotAllowed))
}

/// A resource whose other methods answer 405 in the API's error shape.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}
