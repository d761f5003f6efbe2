//! HTTP routes, one module per resource, and the parsing they share.

pub mod events;
pub mod groups;
pub mod health;
pub mod ingestors;
pub mod keys;
pub mod roles;
pub mod tenants;
pub mod users;

pub mod openapi;

use actix_web::{HttpResponse, web};
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

/// Parses each entry of a list, naming the bad one (`roles[2]`); drops
/// repeats, keeps the first-seen order.
pub fn parse_list<T: PartialEq>(
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, InvalidValue>,
) -> ApiResult<Vec<T>> {
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
    parse_list("roles", raw, RoleName::parse)
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
