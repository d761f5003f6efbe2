//! `POST /api/v1/verify` (API.md §8) with the node's `verifier` key.

use std::time::Duration;

use chrono::{DateTime, Utc};
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
    http: reqwest::Client,
    url: url::Url,
    verifier_key: ApiKeyToken,
}

impl VerifyClient {
    /// `api_url` is the API's base URL; `timeout` bounds each call.
    pub fn new(
        api_url: &url::Url,
        verifier_key: ApiKeyToken,
        timeout: Duration,
    ) -> Result<Self, Unavailable> {
        let url = api_url
            .join("api/v1/verify")
            .map_err(|e| Unavailable(format!("bad API URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            url,
            verifier_key,
        })
    }

    pub async fn verify(&self, token: &ApiKeyToken) -> Result<Answer, Unavailable> {
        let res = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.verifier_key.expose_secret())
            .json(&serde_json::json!({ "apiKey": token.expose_secret() }))
            .send()
            .await
            // reqwest's error names the URL, never the body or headers.
            .map_err(|e| Unavailable(e.without_url().to_string()))?;
        let status = res.status();
        if !status.is_success() {
            // 401/403 here means our own verifier key is wrong: that is an
            // outage of this node, not a verdict on the caller's key.
            return Err(Unavailable(format!("verify answered {status}")));
        }
        let body: Body = res
            .json()
            .await
            .map_err(|e| Unavailable(format!("unreadable verify answer: {}", e.without_url())))?;
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
