//! The one table of error codes: code, HTTP status, client message. Every
//! non-2xx answer is `{"error": {code, message, requestId, details?}}`.
//!
//! Internal causes are logged here, with the request id, and never leave
//! the process: a 5xx says only `internal` or `unavailable`.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use keyward_core::ids::InvalidValue;
use keyward_core::store::StoreError;
use keyward_core::store::error::chain;
use serde_json::{Value, json};

use crate::request_id;

/// Every error code the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    TenantNotFound,
    KeyNotFound,
    RoleNotFound,
    UserNotFound,
    GroupNotFound,
    MethodNotAllowed,
    DuplicateKeyName,
    DuplicateUsername,
    RoleInUse,
    TenantExists,
    InvalidState,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnknownRoles,
    RateLimited,
    Internal,
    Unavailable,
}

/// (code, string, status, fixed client message): the table itself.
pub const TABLE: &[(Code, &str, u16, &str)] = &[
    (
        Code::InvalidRequest,
        "invalid_request",
        400,
        "The request is invalid.",
    ),
    (
        Code::Unauthenticated,
        "unauthenticated",
        401,
        "Missing or invalid credentials.",
    ),
    (Code::Forbidden, "forbidden", 403, "You may not do this."),
    (Code::NotFound, "not_found", 404, "No such endpoint."),
    (
        Code::TenantNotFound,
        "tenant_not_found",
        404,
        "Tenant not found.",
    ),
    (
        Code::KeyNotFound,
        "key_not_found",
        404,
        "API key not found.",
    ),
    (Code::RoleNotFound, "role_not_found", 404, "Role not found."),
    (Code::UserNotFound, "user_not_found", 404, "User not found."),
    (
        Code::GroupNotFound,
        "group_not_found",
        404,
        "Group not found.",
    ),
    (
        Code::MethodNotAllowed,
        "method_not_allowed",
        405,
        "Method not allowed on this endpoint.",
    ),
    (
        Code::DuplicateKeyName,
        "duplicate_key_name",
        409,
        "An active API key with this name exists.",
    ),
    (
        Code::DuplicateUsername,
        "duplicate_username",
        409,
        "This username is taken.",
    ),
    (
        Code::RoleInUse,
        "role_in_use",
        409,
        "The role is still held by a user, key or group.",
    ),
    (
        Code::TenantExists,
        "tenant_exists",
        409,
        "A tenant with this id exists.",
    ),
    (
        Code::InvalidState,
        "invalid_state",
        409,
        "Not possible in the current state.",
    ),
    (
        Code::PayloadTooLarge,
        "payload_too_large",
        413,
        "The request body is over 64 KiB.",
    ),
    (
        Code::UnsupportedMediaType,
        "unsupported_media_type",
        415,
        "Send Content-Type: application/json.",
    ),
    (
        Code::UnknownRoles,
        "unknown_roles",
        422,
        "Some roles do not exist in this tenant.",
    ),
    (
        Code::RateLimited,
        "rate_limited",
        429,
        "Too many failed attempts; retry later.",
    ),
    (Code::Internal, "internal", 500, "Internal error."),
    (
        Code::Unavailable,
        "unavailable",
        503,
        "The service is unavailable; retry later.",
    ),
];

impl Code {
    fn row(self) -> &'static (Code, &'static str, u16, &'static str) {
        // Every variant has a row; the unit test below keeps it so.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[19])
    }

    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.row().2).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn default_message(self) -> &'static str {
        self.row().3
    }
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    /// Client-safe: our own words, never a library's.
    pub message: String,
    pub details: Option<Value>,
    /// The cause, for the log only.
    cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    /// Set when the error is answered outside the request's task.
    request_id: Option<String>,
}

impl ApiError {
    pub fn new(code: Code) -> Self {
        Self {
            code,
            message: code.default_message().to_owned(),
            details: None,
            cause: None,
            request_id: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn for_request(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_owned());
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 with `details.field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest)
            .with_message(message)
            .with_details(json!({"field": field}))
    }

    pub fn internal(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Box::new(cause)),
            ..Self::new(Code::Internal)
        }
    }

    pub fn unavailable(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            cause: Some(Box::new(cause)),
            ..Self::new(Code::Unavailable)
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl From<InvalidValue> for ApiError {
    fn from(e: InvalidValue) -> Self {
        Self::invalid(e.field, format!("invalid {}: {}", e.field, e.reason))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TenantNotFound => Self::new(Code::TenantNotFound),
            StoreError::RoleNotFound => Self::new(Code::RoleNotFound),
            StoreError::UserNotFound => Self::new(Code::UserNotFound),
            StoreError::GroupNotFound => Self::new(Code::GroupNotFound),
            StoreError::KeyNotFound => Self::new(Code::KeyNotFound),
            StoreError::TenantExists => Self::new(Code::TenantExists),
            StoreError::DuplicateKeyName => Self::new(Code::DuplicateKeyName),
            StoreError::DuplicateUsername => Self::new(Code::DuplicateUsername),
            StoreError::RoleInUse => Self::new(Code::RoleInUse),
            StoreError::BuiltinRole => Self::new(Code::InvalidState)
                .with_message("Built-in roles cannot be changed or deleted."),
            StoreError::InvalidState => Self::new(Code::InvalidState),
            StoreError::UnknownRoles(roles) => {
                Self::new(Code::UnknownRoles).with_details(json!({"roles": roles}))
            }
            StoreError::UnknownUsers(users) => {
                Self::invalid("users", "Some users do not exist in this tenant.")
                    .with_details(json!({"field": "users", "users": users}))
            }
            StoreError::UnknownKeys(keys) => {
                Self::invalid("apiKeys", "Some API keys do not exist in this tenant.")
                    .with_details(json!({"field": "apiKeys", "apiKeys": keys}))
            }
            e @ StoreError::Unavailable(_) => Self::unavailable(e),
            e @ (StoreError::Internal(_) | StoreError::Corrupt(_)) => Self::internal(e),
        }
    }
}

impl From<keyward_core::password::HashError> for ApiError {
    fn from(e: keyward_core::password::HashError) -> Self {
        match e {
            // Every password thread busy and the queue full: try again.
            keyward_core::password::HashError::Busy => Self::unavailable(e),
            e => Self::internal(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = self.request_id.clone().unwrap_or_else(request_id::current);
        let status = self.code.status();
        if status.is_server_error() {
            let cause = self.cause.as_deref().map(|c| chain(c)).unwrap_or_default();
            tracing::error!(request_id = %request_id, code = self.code.as_str(), %cause, "request failed");
        }
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.as_str(),
                message: self.message.clone(),
                request_id: request_id.clone(),
                details: self.details.clone(),
            },
        };
        let mut response = HttpResponse::build(status);
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.insert_header((request_id::HEADER, value));
        }
        match self.code {
            Code::Unauthenticated => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="keyward", Bearer"#),
                ));
            }
            Code::Unavailable | Code::RateLimited => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.json(body)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every non-2xx answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorObject {
    /// One of the codes in the table (see the document's description).
    pub code: &'static str,
    pub message: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_exactly_one_row() {
        let all = [
            Code::InvalidRequest,
            Code::Unauthenticated,
            Code::Forbidden,
            Code::NotFound,
            Code::TenantNotFound,
            Code::KeyNotFound,
            Code::RoleNotFound,
            Code::UserNotFound,
            Code::GroupNotFound,
            Code::MethodNotAllowed,
            Code::DuplicateKeyName,
            Code::DuplicateUsername,
            Code::RoleInUse,
            Code::TenantExists,
            Code::InvalidState,
            Code::PayloadTooLarge,
            Code::UnsupportedMediaType,
            Code::UnknownRoles,
            Code::RateLimited,
            Code::Internal,
            Code::Unavailable,
        ];
        assert_eq!(all.len(), TABLE.len());
        for code in all {
            assert_eq!(TABLE.iter().filter(|r| r.0 == code).count(), 1, "{code:?}");
        }
        assert_eq!(TABLE[19].0, Code::Internal, "the fallback row");
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Code::UnknownRoles.status(), 422);
        assert_eq!(Code::Unavailable.status(), 503);
        assert_eq!(Code::PayloadTooLarge.status(), 413);
        assert_eq!(Code::RoleInUse.as_str(), "role_in_use");
    }
}
