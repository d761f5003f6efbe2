//! `X-Request-Id`: taken from the request when sane, else a new ULID;
//! returned on every response, carried by every log line and error body.

use actix_web::dev::ServiceRequest;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const HEADER: &str = "x-request-id";

/// 1 to 128 of `[A-Za-z0-9._-]`: anything else could forge log lines.
fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The id for this request: the caller's, if sane, else a fresh one.
pub fn for_request(req: &ServiceRequest) -> String {
    req.headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_sane(id))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::generate().to_string())
}

/// Runs `fut` with `id` as the current request id; once it is done the id
/// can be taken back (`TaskLocalFuture::take_value`) rather than cloned.
pub fn scope<F: std::future::Future>(
    id: String,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<String, F> {
    REQUEST_ID.scope(id, fut)
}

/// The current request's id (outside a request: `-`).
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanity() {
        assert!(is_sane("abc-123_x.y"));
        assert!(!is_sane(""));
        assert!(!is_sane("a b"));
        assert!(!is_sane("a\nb"));
        assert!(!is_sane(&"a".repeat(129)));
    }
}
