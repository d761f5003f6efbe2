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

/// Declares `Code` and its table at once: each row is a variant with its
/// code string, HTTP status and fixed client message. The accessors are
/// exhaustive `match`es, so a variant without a row does not compile, and
/// `Code::ALL` lists every code for the OpenAPI document.
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident, $message:literal),)+) => {
        /// Every error code the API answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)+
        }

        impl Code {
            /// Every code, in table order.
            pub const ALL: &[Code] = &[$(Code::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)+
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)+
                }
            }

            pub fn default_message(self) -> &'static str {
                match self {
                    $(Code::$variant => $message,)+
                }
            }
        }
    };
}

error_codes! {
    InvalidRequest => ("invalid_request", BAD_REQUEST, "The request is invalid."),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "Missing or invalid credentials."),
    Forbidden => ("forbidden", FORBIDDEN, "You may not do this."),
    NotFound => ("not_found", NOT_FOUND, "No such endpoint."),
    TenantNotFound => ("tenant_not_found", NOT_FOUND, "Tenant not found."),
    KeyNotFound => ("key_not_found", NOT_FOUND, "API key not found."),
    RoleNotFound => ("role_not_found", NOT_FOUND, "Role not found."),
    UserNotFound => ("user_not_found", NOT_FOUND, "User not found."),
    GroupNotFound => ("group_not_found", NOT_FOUND, "Group not found."),
    EventNotFound => ("event_not_found", NOT_FOUND, "Event not found."),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed on this endpoint."),
    DuplicateKeyName => ("duplicate_key_name", CONFLICT, "An active API key with this name exists."),
    DuplicateUsername => ("duplicate_username", CONFLICT, "This username is taken."),
    RoleInUse => ("role_in_use", CONFLICT, "The role is still held by a user, key or group."),
    TenantExists => ("tenant_exists", CONFLICT, "A tenant with this id exists."),
    InvalidState => ("invalid_state", CONFLICT, "Not possible in the current state."),
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT, "The request did not arrive in time."),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE, "The request body is over 64 KiB."),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Send Content-Type: application/json."),
    UnknownRoles => ("unknown_roles", UNPROCESSABLE_ENTITY, "Some roles do not exist in this tenant."),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, "Too many failed attempts; retry later."),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "Internal error."),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE, "The service is unavailable; retry later."),
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    /// Client-safe: our own words, never a library's.
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for `Retry-After` (`503`/`429`; 1 when unset).
    pub retry_after: Option<u64>,
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
            retry_after: None,
            cause: None,
            request_id: None,
        }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
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
            StoreError::BuiltinRole => Self::new(Code::InvalidState).with_message(
                "Built-in roles cannot be changed or deleted, nor their names taken.",
            ),
            StoreError::ProtectedPrincipal => Self::new(Code::Forbidden).with_message(
                "Only a superadmin may change or delete a user, key or group holding a built-in role.",
            ),
            StoreError::LastSuperadmin => Self::new(Code::InvalidState)
                .with_message("The last superadmin user cannot be removed."),
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
                let seconds = self.retry_after.unwrap_or(1);
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
            }
            // The rest of a late body may still come: the connection
            // cannot carry another request.
            Code::RequestTimeout => {
                response.force_close();
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
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code:?}");
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Code::UnknownRoles.status(), 422);
        assert_eq!(Code::Unavailable.status(), 503);
        assert_eq!(Code::PayloadTooLarge.status(), 413);
        assert_eq!(Code::RoleInUse.as_str(), "role_in_use");
    }
}
