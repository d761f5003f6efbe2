//! The audit trail (`docs/api.md`, "Audit"): one record per state-changing request,
//! written by the store in the transaction of the change it records (see
//! `record_in` in `sql.rs`), so a change that rolls back leaves no record.
//! Refused attempts are recorded on their own, best effort. No record holds
//! a secret, password or hash: a record names an actor, an action and a
//! target (a key id, a role, group, user or tenant name), nothing more.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::FromRow;

use super::rows::{parse, tenant};
use super::timestamp::Ts;
use super::{Backend, StoreError, StoreResult, Timestamp};
use crate::ids::{AuditId, EventId, TenantId};

#[async_trait]
pub trait AuditStore: Backend {
    /// Records an attempt refused with 401 or 403, outside any transaction.
    async fn record_denied(&self, record: &DeniedAttempt) -> StoreResult<()>;
    /// One page, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;
    /// Deletes records older than `before`; returns how many.
    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64>;
}

/// What a state-changing request did (`action` of a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    TenantCreate,
    RolePut,
    RoleDelete,
    UserCreate,
    UserDelete,
    UserRoles,
    UserPassword,
    GroupPut,
    GroupDelete,
    KeyCreate,
    KeyRevoke,
    KeyUpdate,
    KeyRotate,
    RevocationRetry,
}

impl Action {
    pub const ALL: [Self; 14] = [
        Self::TenantCreate,
        Self::RolePut,
        Self::RoleDelete,
        Self::UserCreate,
        Self::UserDelete,
        Self::UserRoles,
        Self::UserPassword,
        Self::GroupPut,
        Self::GroupDelete,
        Self::KeyCreate,
        Self::KeyRevoke,
        Self::KeyUpdate,
        Self::KeyRotate,
        Self::RevocationRetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreate => "tenant.create",
            Self::RolePut => "role.put",
            Self::RoleDelete => "role.delete",
            Self::UserCreate => "user.create",
            Self::UserDelete => "user.delete",
            Self::UserRoles => "user.roles",
            Self::UserPassword => "user.password",
            Self::GroupPut => "group.put",
            Self::GroupDelete => "group.delete",
            Self::KeyCreate => "key.create",
            Self::KeyRevoke => "key.revoke",
            Self::KeyUpdate => "key.update",
            Self::KeyRotate => "key.rotate",
            Self::RevocationRetry => "revocation.retry",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: AuditId,
    pub at: chrono::DateTime<chrono::Utc>,
    pub tenant_id: TenantId,
    /// A username, `apikey:{keyId}`, or `anonymous` for a refused
    /// attempt without valid credentials.
    pub actor: String,
    pub action: String,
    /// What was acted on: a key id, a role, group or user name, a tenant id.
    pub target: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub event_id: Option<EventId>,
}

/// A refused attempt (401/403) at a state-changing endpoint.
#[derive(Debug, Clone)]
pub struct DeniedAttempt {
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: Action,
    pub target: String,
    pub request_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// One page of audit records: newest first, strictly before `before`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `None`: every tenant (superadmins' `GET /api/v1/audit`).
    pub tenant: Option<TenantId>,
    pub action: Option<Action>,
    pub actor: Option<String>,
    pub before: Option<AuditId>,
    pub limit: u32,
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
    pub id: String,
    pub at: Ts,
    pub tenant_id: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
    pub event_id: Option<String>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> StoreResult<Self> {
        let outcome = match r.outcome.as_str() {
            "ok" => Outcome::Ok,
            "denied" => Outcome::Denied,
            _ => {
                return Err(StoreError::Corrupt(
                    "bad audit outcome in the database".into(),
                ));
            }
        };
        Ok(AuditRecord {
            id: parse("audit id", &r.id, AuditId::parse)?,
            at: r.at.0,
            tenant_id: tenant(&r.tenant_id)?,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome,
            request_id: r.request_id,
            event_id: r
                .event_id
                .as_deref()
                .map(|e| parse("event id", e, EventId::parse))
                .transpose()?,
        })
    }
}
