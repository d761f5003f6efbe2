//! `POST /api/v1/verify` (`docs/api.md`) with the node's `verifier` key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{Method, header};
use keyward_core::http::HttpClient;
use keyward_core::ids::{KeyId, TenantId};
use keyward_core::privilege::Privilege;
use keyward_core::token::ApiKeyToken;
use serde::Deserialize;

/// The budget of one verify call.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the API said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Valid(ValidKey),
    /// `unknown`, `revoked`, `expired` or `malformed`.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKey {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    pub privileges: Vec<Privilege>,
    pub expires_at: Option<DateTime<Utc>>,
    /// How long the API lets this answer be cached.
    pub cache_ttl: Duration,
}

/// The API could not be asked (down, slow, refusing our verifier key):
/// the embedding service answers 503, never "valid".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the key service is unavailable: {0}")]
pub struct Unavailable(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    valid: bool,
    tenant_id: Option<TenantId>,
    key_id: Option<KeyId>,
    #[serde(default)]
    privileges: Vec<Privilege>,
    expires_at: Option<DateTime<Utc>>,
    cache_ttl_seconds: Option<u64>,
    reason: Option<String>,
}

#[derive(Clone)]
pub struct VerifyClient {
    http: HttpClient,
    verifier_key: ApiKeyToken,
}

impl VerifyClient {
    /// `api_url` is the API's base URL (`https://` verified against the
    /// system's roots); `timeout` bounds each call.
    pub fn new(
        api_url: &url::Url,
        verifier_key: ApiKeyToken,
        timeout: Duration,
    ) -> Result<Self, Unavailable> {
        Self::with_api_ca(api_url, verifier_key, timeout, None)
    }

    /// As [`new`](Self::new), an `https://` API's certificate verified
    /// against the CA certificates in `ca_file` only (a private CA:
    /// `KEYWARD_API_CA_FILE`) when given. Never a plain-text fallback.
    pub fn with_api_ca(
        api_url: &url::Url,
        verifier_key: ApiKeyToken,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, Unavailable> {
        if ca_file.is_some() && api_url.scheme() != "https" {
            return Err(Unavailable(
                "KEYWARD_API_CA_FILE is only used with an https:// API URL".into(),
            ));
        }
        let http = HttpClient::new(api_url, "KEYWARD_API_CA_FILE", ca_file, timeout)
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(Self { http, verifier_key })
    }

    pub async fn verify(&self, token: &ApiKeyToken) -> Result<Answer, Unavailable> {
        let bearer = format!("Bearer {}", self.verifier_key.expose_secret());
        let body = serde_json::to_vec(&serde_json::json!({ "apiKey": token.expose_secret() }))
            .unwrap_or_else(|_| unreachable!("a JSON object of one string serializes"));
        let (status, answer) = self
            .http
            .call(
                Method::POST,
                "api/v1/verify",
                &[(header::AUTHORIZATION, bearer.as_str())],
                Some(body),
            )
            .await
            // The error names neither the body nor the headers.
            .map_err(|e| Unavailable(e.to_string()))?;
        if !status.is_success() {
            // 401/403 here means our own verifier key is wrong: that is an
            // outage of this node, not a verdict on the caller's key.
            return Err(Unavailable(format!("verify answered {status}")));
        }
        let body: Body = serde_json::from_slice(&answer)
            .map_err(|e| Unavailable(format!("unreadable verify answer: {e}")))?;
        if !body.valid {
            return Ok(Answer::Invalid(
                body.reason.unwrap_or_else(|| "unknown".into()),
            ));
        }
        match (body.tenant_id, body.key_id) {
            (Some(tenant_id), Some(key_id)) => Ok(Answer::Valid(ValidKey {
                tenant_id,
                key_id,
                privileges: body.privileges,
                expires_at: body.expires_at,
                cache_ttl: Duration::from_secs(body.cache_ttl_seconds.unwrap_or(0)),
            })),
            _ => Err(Unavailable(
                "verify answered valid without tenant or key".into(),
            )),
        }
    }
}
