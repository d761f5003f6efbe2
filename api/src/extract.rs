//! Request extractors that answer in the API's error model: a JSON body
//! (415, 413, 400 with `details.field`) and path/query errors as 400.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};
use crate::first_look;

/// Bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long a client has to send a request's body (app data; 10 s when
/// absent). A client trickling its body must not hold a connection and
/// a worker's buffer for ever: past this the answer is `408`.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

impl Default for BodyTimeout {
    fn default() -> Self {
        Self(std::time::Duration::from_secs(10))
    }
}

/// A JSON request body. Unknown fields are refused (a typo such as
/// `expiresAT` must not be silently ignored); the request DTOs say so with
/// `deny_unknown_fields`.
pub struct Json<T>(pub T);

/// Reads a JSON body from a raw payload, for handlers that must decide
/// something (permission) before the body is even looked at.
pub async fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let mut payload = payload.into_inner();
    Json::<T>::from_request(req, &mut payload)
        .await
        .map(|j| j.0)
}

/// Like `read_json`, for a body that may be left out: no body at all (no
/// `Content-Type`, no length) reads as `T::default()`.
pub async fn read_json_or_default<T: DeserializeOwned + Default + 'static>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, ApiError> {
    let headers = req.headers();
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if !headers.contains_key(header::CONTENT_TYPE) && length.unwrap_or(0) == 0 && !chunked {
        return Ok(T::default());
    }
    read_json(req, payload).await
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| is_json_mime(mime.trim()))
            .unwrap_or(false);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let timeout = req.app_data::<BodyTimeout>().copied().unwrap_or_default();
        let mut payload = payload.take();
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(Code::UnsupportedMediaType));
            }
            if declared.is_some_and(|n| n > BODY_LIMIT) {
                return Err(ApiError::new(Code::PayloadTooLarge));
            }
            let body = read_body_in_time(&mut payload, timeout).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// `application/json` or any `+json` type, in any case (RFC 9110: media
/// types are case-insensitive); compared in place, without a lower-case copy.
fn is_json_mime(mime: &str) -> bool {
    const SUFFIX: &str = "+json";
    mime.eq_ignore_ascii_case("application/json")
        || mime.len() >= SUFFIX.len()
            && mime.is_char_boundary(mime.len() - SUFFIX.len())
            && mime[mime.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

/// The whole body within `timeout`, else `408`. A small body usually comes
/// in the same read as the head, and actix hands it over just after its
/// first poll of the handler: so the first look leaves no wake-up behind
/// (`first_look`), and the body is looked for again once before a timer is
/// set (setting and clearing one on every verify showed in its profile); a
/// body still missing then gets the whole `timeout`.
async fn read_body_in_time(
    payload: &mut Payload,
    timeout: BodyTimeout,
) -> Result<web::BytesMut, ApiError> {
    let mut reading = std::pin::pin!(read_body(payload));
    if let Some(body) = first_look::quietly(reading.as_mut()).await {
        return body;
    }
    if let Some(body) = look(reading.as_mut()).await {
        return body;
    }
    tokio::time::timeout(timeout.0, reading)
        .await
        .map_err(|_| ApiError::new(Code::RequestTimeout))?
}

/// `fut`'s output if it is ready now; never waits.
async fn look<F: Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    use std::task::Poll;
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// The whole body, at most `BODY_LIMIT` bytes.
async fn read_body(payload: &mut Payload) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::invalid("body", "The request body could not be read."))?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(ApiError::new(Code::PayloadTooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Deserializes with the path of the offending field, in our own words:
/// serde's messages name Rust types and are not part of the contract.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // The path is tracked only to explain a failure: a well-formed body
    // (every verify) is read without it.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => {
            de.end()
                .map_err(|_| ApiError::invalid("body", "The request body is not valid JSON."))?;
            Ok(value)
        }
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(ApiError::invalid(
                    "body",
                    "The request body is not valid JSON.",
                ));
            }
            let path = shown(&e.path().to_string());
            let text = inner.to_string();
            if let Some(name) = quoted(&text, "unknown field `") {
                // The path already ends at the unknown field.
                let field = if path == "." { shown(name) } else { path };
                return Err(ApiError::invalid(
                    &field,
                    format!("Unknown field `{field}`."),
                ));
            }
            if let Some(name) = quoted(&text, "missing field `") {
                let field = if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                return Err(ApiError::invalid(
                    &field,
                    format!("Field `{field}` is required."),
                ));
            }
            let field = if path == "." { "body".to_owned() } else { path };
            Err(ApiError::invalid(
                &field,
                format!("Field `{field}` has the wrong type."),
            ))
        }
    }
}

/// The longest field name an error repeats back.
const MAX_SHOWN: usize = 64;

/// A field name as an error shows it: the caller's bytes, so control
/// characters escaped and at most `MAX_SHOWN` characters (then `…`) — an
/// error must not carry a client's payload back verbatim, or into logs.
fn shown(name: &str) -> String {
    // Escaped first, then cut: an escape can be ten times its character
    // (`\u{10ffff}`), and the cut is a promise about what is sent back.
    let mut escaped = name.chars().flat_map(char::escape_debug);
    let mut out: String = escaped.by_ref().take(MAX_SHOWN).collect();
    if escaped.next().is_some() {
        out.push('…');
    }
    out
}

/// The name between `prefix` and the next backtick, if `text` holds one.
fn quoted<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let start = text.find(prefix)? + prefix.len();
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

/// Path and query errors in the API's shape (their text is actix's).
pub fn path_error(_: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid("path", "A path segment is invalid.").into()
}

pub fn query_error(_: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid("query", "The query string is invalid.").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        roles: Vec<String>,
    }

    fn field_of(body: &str) -> String {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::InvalidRequest);
        assert!(
            !e.message.contains("expected"),
            "no serde text: {}",
            e.message
        );
        e.details.unwrap()["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"name": 1, "roles": []}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "roles": [1]}"#), "roles[0]");
        assert_eq!(field_of(r#"{"roles": []}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "roles": [], "x": 1}"#), "x");
        assert_eq!(field_of(r#"{"name": "a""#), "body");
        assert_eq!(field_of(r#"[]"#), "body");
        assert_eq!(field_of(r#"{"name": "a", "roles": []} trailing"#), "body");
    }

    #[test]
    fn unknown_field_names_are_escaped_and_truncated() {
        let long = "y".repeat(500);
        let field = field_of(&format!(r#"{{"name": "a", "roles": [], "{long}": 1}}"#));
        assert_eq!(field, format!("{}…", "y".repeat(MAX_SHOWN)));
        let field = field_of(r#"{"name": "a", "roles": [], "a\nb\u0000": 1}"#);
        assert_eq!(field, r"a\nb\0");
        // Found by fuzzing: the cut applies to what is sent back, after
        // escaping (each DEL escapes to six characters).
        let dels = r"\u007f".repeat(40);
        let field = field_of(&format!(r#"{{"name": "a", "roles": [], "{dels}": 1}}"#));
        assert_eq!(field.chars().count(), MAX_SHOWN + 1, "{field}");
    }
}
