//! A small HTTP/1.1 client for one base URL, plain or TLS: what an
//! ingestor uses to call the API (`POST /api/v1/verify`). `https://` is
//! verified against the system's roots or a CA file given for it
//! ([`crate::tls::client_config`]), never downgraded; `http://` speaks
//! plain HTTP. Built on hyper with rustls on ring, so no process-wide TLS
//! setup is needed (unlike reqwest's rustls backend).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::TlsError;

/// Answers larger than this are refused: the API's are a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: url::Url,
    timeout: Duration,
}

/// Why a call got no answer. Its text names neither the request's body
/// nor its headers (they carry API keys).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
    #[error("bad URL: {0}")]
    Url(String),
}

impl HttpClient {
    /// A client of `base` (`http://` or `https://`); with `ca_file`, an
    /// `https://` server's certificate must chain to those certificates
    /// only. `ca_setting` names the CA file's setting in messages.
    pub fn new(
        base: &url::Url,
        ca_setting: &'static str,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        // Small requests waiting on Nagle for an ACK are a 40 ms stall.
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = if base.scheme() == "https" {
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::client_config(ca_setting, ca_file)?)
                .https_only()
                .enable_http1()
                .wrap_connector(http)
        } else {
            // Plain HTTP by the operator's choice: no roots are needed, and
            // an `https://` redirect or URL would fail, not go out in clear.
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::no_roots_config()?)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            base: base.clone(),
            timeout,
        })
    }

    /// `method path` with `headers` and a JSON `body`; the status and the
    /// answer's bytes.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| CallError::Url(e.to_string()))?;
        let mut request = Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| CallError::Url("a header value is not allowed".into()))?;
        let call = async {
            let answer = self
                .client
                .request(request)
                .await
                // With its causes: a TLS error says which check failed.
                .map_err(|e| CallError::Transport(crate::store::error::chain(&e)))?;
            let status = answer.status();
            let bytes = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }
}
