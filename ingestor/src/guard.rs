//! Drop-in guards for an ingestion service's own routes: an actix-web
//! middleware ([`RequireKey`]) and a tower layer ([`RequireKeyLayer`], for
//! axum, tonic or hyper). Each takes the request's `Authorization: Bearer`
//! key, asks the [`Verifier`] (memory first, the API on a miss, tombstones
//! of revoked keys), and either passes the request on — with the key's
//! [`ValidKey`] in its extensions — or answers in the API's error shape:
//! `401 unauthenticated` (no key, or a malformed, unknown, revoked or
//! expired one), `403 forbidden` (a valid key without `ingestor`, `writer`,
//! `editor` or `admin` on the request's stream) or `503 unavailable` with
//! `Retry-After` (the API could not be asked). The reference ingestor's
//! `POST /ingest/{stream}` decides with the same [`admit`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use keyward_ingestor::verifier::Verifier;
//! use actix_web::{App, HttpResponse, web};
//! use keyward_ingestor::guard::RequireKey;
//!
//! # fn app(verifier: Arc<Verifier>) {
//! // actix-web: the stream is the resource's `{stream}`.
//! let app = App::new().service(
//!     web::resource("/events/{stream}")
//!         .wrap(RequireKey::new(Arc::clone(&verifier)))
//!         .route(web::post().to(|| async { HttpResponse::Accepted().finish() })),
//! );
//! // tower (axum, tonic, hyper): the stream from the request's parts.
//! let layer = keyward_ingestor::guard::RequireKeyLayer::new(verifier, |parts| {
//!     parts.uri.path().strip_prefix("/events/").map(str::to_owned)
//! });
//! # }
//! ```

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{HttpMessage, HttpResponse};

use crate::client::ValidKey;
use crate::verifier::{Verdict, Verifier};

/// Why a request is refused, as the API says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    const NO_KEY: Self = Self {
        status: 401,
        code: "unauthenticated",
        message: "Missing API key.",
    };
    const BAD_KEY: Self = Self {
        status: 401,
        code: "unauthenticated",
        message: "Invalid, revoked or expired API key.",
    };
    const NOT_HERE: Self = Self {
        status: 403,
        code: "forbidden",
        message: "The API key may not ingest into this stream.",
    };
    const UNAVAILABLE: Self = Self {
        status: 503,
        code: "unavailable",
        message: "The key service is unavailable; try again.",
    };

    /// The error body, naming `request_id`.
    pub fn body(&self, request_id: &str) -> String {
        serde_json::json!({
            "error": {"code": self.code, "message": self.message, "requestId": request_id}
        })
        .to_string()
    }

    /// The headers the answer carries besides its body's.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.status {
            401 => &[("www-authenticate", "Bearer")],
            503 => &[("retry-after", "1")],
            _ => &[],
        }
    }

    /// The answer, for actix-web: status, `X-Request-Id`, headers, body.
    pub fn response(&self) -> HttpResponse {
        let id = request_id();
        let status = actix_web::http::StatusCode::from_u16(self.status)
            .unwrap_or(actix_web::http::StatusCode::FORBIDDEN);
        let mut res = HttpResponse::build(status);
        res.insert_header(("x-request-id", id.as_str()));
        for header in self.headers() {
            res.insert_header(*header);
        }
        res.content_type("application/json").body(self.body(&id))
    }
}

/// The decision on a request: its `Authorization` header's value and the
/// stream it writes to (`None`: none could be told, so nothing may).
pub async fn admit(
    verifier: &Verifier,
    authorization: Option<&str>,
    stream: Option<&str>,
) -> Result<Arc<ValidKey>, Refusal> {
    let token = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Refusal::NO_KEY)?;
    // Decided before the body is read: a stranger can't make us buffer it.
    match verifier.verify(token).await {
        Verdict::Valid(key) => match stream {
            Some(stream) if keyward_core::rbac::may_ingest(&key.privileges, stream) => Ok(key),
            _ => Err(Refusal::NOT_HERE),
        },
        Verdict::Invalid(_) => Err(Refusal::BAD_KEY),
        Verdict::Unavailable => Err(Refusal::UNAVAILABLE),
    }
}

fn request_id() -> String {
    ulid::Ulid::generate().to_string()
}

// ------------------------------------------------------------- actix-web

type ActixStream = Rc<dyn Fn(&ServiceRequest) -> Option<String>>;

/// The actix-web middleware. Wrap a resource or scope whose pattern names
/// `{stream}` (the default), or say where the stream is with
/// [`RequireKey::stream_from`].
#[derive(Clone)]
pub struct RequireKey {
    verifier: Arc<Verifier>,
    stream: ActixStream,
}

impl RequireKey {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            verifier,
            stream: Rc::new(|req: &ServiceRequest| {
                req.match_info().get("stream").map(str::to_owned)
            }),
        }
    }

    /// The stream a request writes to, from the request.
    pub fn stream_from(mut self, f: impl Fn(&ServiceRequest) -> Option<String> + 'static) -> Self {
        self.stream = Rc::new(f);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequireKey
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequireKeyService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequireKeyService {
            service: Rc::new(service),
            guard: self.clone(),
        }))
    }
}

pub struct RequireKeyService<S> {
    service: Rc<S>,
    guard: RequireKey,
}

impl<S, B> Service<ServiceRequest> for RequireKeyService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let verifier = Arc::clone(&self.guard.verifier);
        let stream = (self.guard.stream)(&req);
        let authorization = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Box::pin(async move {
            match admit(&verifier, authorization.as_deref(), stream.as_deref()).await {
                Ok(key) => {
                    req.extensions_mut().insert(key);
                    Ok(service.call(req).await?.map_into_left_body())
                }
                Err(refusal) => Ok(req.into_response(refusal.response()).map_into_right_body()),
            }
        })
    }
}

// ------------------------------------------------------------------ tower

type TowerStream = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// The tower layer: `stream` tells the stream from the request's parts.
#[derive(Clone)]
pub struct RequireKeyLayer {
    verifier: Arc<Verifier>,
    stream: TowerStream,
}

impl RequireKeyLayer {
    pub fn new(
        verifier: Arc<Verifier>,
        stream: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            verifier,
            stream: Arc::new(stream),
        }
    }
}

impl<S> tower_layer::Layer<S> for RequireKeyLayer {
    type Service = RequireKeyTower<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKeyTower {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service behind [`RequireKeyLayer`].
#[derive(Clone)]
pub struct RequireKeyTower<S> {
    inner: S,
    layer: RequireKeyLayer,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for RequireKeyTower<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: From<String>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // The clone that was made ready answers this request; a fresh one
        // waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.layer.verifier);
        let (parts, body) = req.into_parts();
        let stream = (self.layer.stream)(&parts);
        Box::pin(async move {
            let authorization = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match admit(&verifier, authorization, stream.as_deref()).await {
                Ok(key) => {
                    let mut req = http::Request::from_parts(parts, body);
                    req.extensions_mut().insert(key);
                    inner.call(req).await
                }
                Err(refusal) => {
                    let id = request_id();
                    let mut res = http::Response::new(ResBody::from(refusal.body(&id)));
                    *res.status_mut() = http::StatusCode::from_u16(refusal.status)
                        .unwrap_or(http::StatusCode::FORBIDDEN);
                    let headers = res.headers_mut();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    if let Ok(value) = http::HeaderValue::from_str(&id) {
                        headers.insert("x-request-id", value);
                    }
                    for (name, value) in refusal.headers() {
                        headers.insert(*name, http::HeaderValue::from_static(value));
                    }
                    Ok(res)
                }
            }
        })
    }
}
