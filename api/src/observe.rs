//! One middleware for what every request needs: its id, its tracing span,
//! its metrics, and a panic turned into `500 internal` instead of a dropped
//! connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::Error;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use futures_util::FutureExt;
use metrics::{Counter, Histogram};
use tracing::Instrument;

use crate::error::{ApiError, Code};
use crate::request_id;

/// Routes whose successful requests log at debug, not info.
const QUIET_ROUTES: &[&str] = &["/api/v1/verify", "/healthz", "/readyz", "/metrics"];

/// Whether `path` (or a route pattern) is one of `QUIET_ROUTES`, wherever
/// Keyward is mounted (`KeywardApi::scope`).
fn is_quiet(path: &str) -> bool {
    QUIET_ROUTES.iter().any(|route| path.ends_with(route))
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = request_id::for_request(&req);
    let method = req.method().clone();
    // A span's fields are formatted when it is made and again on each
    // `record` (JSON logs re-serialise them all): a third of a cached
    // verify's instructions under callgrind. The quiet routes' spans are
    // made at debug, so at the default level they cost nothing; their
    // failures name the request themselves (below, and in `ApiError`).
    let quiet_path = is_quiet(req.path());
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                request_id = %id,
                method = %method,
                path = %req.path(),
                tenant_id = tracing::field::Empty,
                principal = tracing::field::Empty,
            )
        };
    }
    let span = if quiet_path {
        request_span!(tracing::Level::DEBUG)
    } else {
        request_span!(tracing::Level::INFO)
    };
    let started = Instant::now();
    // The request cannot be cloned before routing (actix needs it unique),
    // so a panic is answered through the error path, which knows the id.
    let handled = AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .instrument(span.clone());
    let mut scoped = std::pin::pin!(request_id::scope(id, handled));
    let outcome = scoped.as_mut().await;
    let id = scoped.as_mut().take_value().unwrap_or_default();
    let mut res = match outcome {
        Ok(Ok(res)) => res.map_into_boxed_body(),
        Ok(Err(e)) => {
            record(
                &method,
                "unmatched",
                e.error_response().status().as_u16(),
                started,
            );
            return Err(e);
        }
        Err(_) => {
            span.in_scope(|| tracing::error!(request_id = %id, "handler panicked"));
            record(&method, "unmatched", 500, started);
            return Err(ApiError::new(Code::Internal).for_request(&id).into());
        }
    };
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let elapsed = record(&method, &route, status, started);
    // Successful hot-path and probe requests are counted, not logged at
    // info: at tens of thousands a second the log would cost more than
    // the answers.
    let quiet = res.status().is_success() && is_quiet(&route);
    span.in_scope(|| {
        if quiet {
            tracing::debug!(status, elapsed_ms = elapsed * 1000.0, "request finished");
        } else if quiet_path {
            tracing::info!(request_id = %id, method = %method, path = %route, status,
                elapsed_ms = elapsed * 1000.0, "request finished");
        } else {
            tracing::info!(status, elapsed_ms = elapsed * 1000.0, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::try_from(id) {
        res.headers_mut()
            .insert(HeaderName::from_static(request_id::HEADER), value);
    }
    Ok(res)
}

/// Counts the request and records its latency; returns the latency.
fn record(method: &Method, route: &str, status: u16, started: Instant) -> f64 {
    let elapsed = started.elapsed().as_secs_f64();
    with_handles(method, route, status, |count, latency| {
        count.increment(1);
        latency.record(elapsed);
    });
    elapsed
}

/// A route's metric handles, by its pattern.
type RouteHandles = Vec<(String, Counter, Histogram)>;

thread_local! {
    /// Metric handles by (method, status), then route: looking a labelled
    /// metric up in the registry on every request (allocating its labels
    /// and hashing them) showed in the hot path's profile. A worker thread
    /// sees a handful of combinations, so a short list per key is enough.
    static HANDLES: RefCell<HashMap<(&'static str, u16), RouteHandles>> =
        RefCell::new(HashMap::new());
}

/// The `method` label: one of a fixed set. A client may send any token as
/// a method; were it a label, made-up methods would grow `/metrics` (and
/// the handles above) without bound.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

/// Runs `f` with the route's handles where they are kept: cloned out and
/// dropped, each would cost two writes to a reference count that every
/// worker thread shares.
fn with_handles(method: &Method, route: &str, status: u16, f: impl FnOnce(&Counter, &Histogram)) {
    let method = method_label(method);
    HANDLES.with(|cell| {
        let mut map = cell.borrow_mut();
        let routes = map.entry((method, status)).or_default();
        if let Some((_, c, h)) = routes.iter().find(|(r, _, _)| r == route) {
            return f(c, h);
        }
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let c = metrics::counter!("keyward_http_requests_total", &labels);
        let h = metrics::histogram!("keyward_http_request_duration_seconds", &labels);
        f(&c, &h);
        routes.push((route.to_owned(), c, h));
    })
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, test, web};

    async fn boom() -> HttpResponse {
        panic!("a bug in a handler");
    }

    // `test` here is actix's module: the plain test attribute by its path.
    #[::core::prelude::v1::test]
    fn made_up_methods_share_one_label() {
        use actix_web::http::Method;
        assert_eq!(super::method_label(&Method::PATCH), "PATCH");
        for made_up in ["FOO", "X-1", "get"] {
            let m = Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(super::method_label(&m), "other", "{made_up}");
        }
    }

    #[actix_web::test]
    async fn a_panic_becomes_500_internal_with_the_request_id() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(super::observe))
                .route("/boom", web::get().to(boom))
                .route("/ok", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let req = test::TestRequest::get()
            .uri("/boom")
            .insert_header(("x-request-id", "r-1"));
        let res = test::try_call_service(&app, req.to_request()).await;
        let res = match res {
            Ok(res) => res.into_parts().1,
            Err(e) => e.error_response(),
        };
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers().get("x-request-id").unwrap(), "r-1");
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "internal");
        assert_eq!(json["error"]["requestId"], "r-1");
        assert!(
            !body.windows(4).any(|w| w == b"a bu"),
            "the panic text stays in the log"
        );

        // The service still answers afterwards.
        let res = test::call_service(&app, test::TestRequest::get().uri("/ok").to_request()).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("x-request-id"));
    }
}
