//! What the store reads and writes, in domain types.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{EventId, GroupName, KeyId, KeyName, RoleName, TenantId, Username};
use crate::privilege::Privilege;
use crate::rbac::RoleGrant;

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: TenantId,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub tenant_id: TenantId,
    pub name: RoleName,
    pub privileges: Vec<Privilege>,
    /// Built-in roles (`superadmin`, `verifier` in `_platform`) are read-only.
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user as every read returns it: never a password or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub tenant_id: TenantId,
    pub username: Username,
    pub roles: Vec<RoleName>,
    pub created_at: DateTime<Utc>,
}

/// What a password check needs; only authentication reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub tenant_id: TenantId,
    pub username: Username,
    pub password_hash: String,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub tenant_id: TenantId,
    pub username: Username,
    pub password_hash: String,
    pub roles: Vec<RoleName>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub tenant_id: TenantId,
    pub name: GroupName,
    pub roles: Vec<RoleName>,
    pub users: Vec<Username>,
    pub api_keys: Vec<KeyId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The desired state of a group, for create-or-replace.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub roles: Vec<RoleName>,
    pub users: Vec<Username>,
    pub api_keys: Vec<KeyId>,
}

/// What is stored of a key's life; `expired` is derived at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    /// The status a reader sees at `now`: an active key past its expiry is
    /// `expired`, without anything having to rewrite the row.
    pub fn at(stored_active: bool, expires_at: Option<Timestamp>, now: Timestamp) -> Self {
        match (stored_active, expires_at) {
            (false, _) => Self::Revoked,
            (true, Some(exp)) if exp <= now => Self::Expired,
            (true, _) => Self::Active,
        }
    }
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    All,
    Active,
    Revoked,
    Expired,
}

impl StatusFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::All, Self::Active, Self::Revoked, Self::Expired]
            .into_iter()
            .find(|f| f.as_str() == value)
    }
}

/// One page of a key listing: newest first, strictly after `before`.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    pub status: StatusFilter,
    pub limit: u32,
    /// The last key id of the previous page. Key ids are ULIDs, so ordering
    /// by id is ordering by creation time, and a key created while a client
    /// pages can never shift the pages that follow.
    pub before: Option<KeyId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Pending,
    Published,
    Applied,
    Failed,
}

/// What the outbox knows of a revocation's event, from which its state
/// follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventProgress {
    /// The event's outbox row still exists (purging removes published rows).
    pub in_outbox: bool,
    pub published: bool,
    /// Given up on (dead-lettered).
    pub dead: bool,
    /// Ingestors that reported `applied`.
    pub applied_by: i64,
    /// Ingestors live when the event was published.
    pub live_ingestors: i64,
}

impl EventProgress {
    /// The `applied` rule: every ingestor live at publication (at least one)
    /// reported applying it. A dead event is failed, one still in the outbox
    /// and unpublished is pending; a purged one was published long ago.
    pub fn state(&self) -> EventState {
        if self.dead {
            EventState::Failed
        } else if self.in_outbox && !self.published {
            EventState::Pending
        } else if self.live_ingestors > 0 && self.applied_by >= self.live_ingestors {
            EventState::Applied
        } else {
            EventState::Published
        }
    }
}

/// An outbox event and where it is on its way to the ingestors
/// (`GET /api/v1/events/{eventId}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventStatus {
    pub event_id: EventId,
    /// `key.revoked`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: TenantId,
    pub key_id: Option<KeyId>,
    pub created_at: DateTime<Utc>,
    pub state: EventState,
    pub attempts: i32,
    pub published_at: Option<DateTime<Utc>>,
    /// Ingestors that reported applying it.
    pub applied_by: i64,
    /// Ingestors live when it was published.
    pub ingestors: i64,
    pub last_error: Option<String>,
}

/// Where a revoked key's event is on its way to the ingestors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub state: EventState,
    pub event_id: EventId,
    pub attempts: i32,
    pub published_at: Option<DateTime<Utc>>,
    /// Ingestors that acknowledged applying the event.
    pub applied_by: i64,
    /// Ingestors live when the event was published.
    pub ingestors: i64,
    pub last_error: Option<String>,
}

/// A key as every read returns it: masked, never the secret or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub key_id: KeyId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    pub name: KeyName,
    pub roles: Vec<RoleName>,
    pub start: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub status: KeyStatus,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revocation: Option<Revocation>,
    /// The key this one was rotated from.
    pub replaces: Option<KeyId>,
    /// The key this one was rotated to (it stops working when its grace
    /// period, its `expiresAt`, ends).
    pub replaced_by: Option<KeyId>,
}

/// What `PATCH …/apikeys/{keyId}` changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub roles: Option<Vec<RoleName>>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// The successor a rotation creates: its id and secret are new, the rest
/// is the old key's.
#[derive(Debug, Clone)]
pub struct RotatedKey {
    pub key_id: KeyId,
    pub start: String,
    /// `$sha256$…` digest of the new secret.
    pub secret_hash: String,
}

/// The answer to a rotation: the new key and the old one as they now are.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub key: ApiKey,
    pub old: ApiKey,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub name: KeyName,
    pub roles: Vec<RoleName>,
    pub start: String,
    /// `$sha256$…` digest of the secret (`crate::digest`); the secret
    /// itself never comes here.
    pub secret_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What verification needs to prove a secret and answer for its key.
#[derive(Clone)]
pub struct KeyCredentials {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub secret_hash: String,
    pub active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub grants: Vec<RoleGrant>,
}

impl std::fmt::Debug for KeyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCredentials")
            .field("key_id", &self.key_id)
            .field("tenant_id", &self.tenant_id)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The answer to a revoke: the key as it now is, and whether this call
/// was the one that revoked it (and so wrote the event).
#[derive(Debug, Clone)]
pub struct Revoked {
    pub key: ApiKey,
    pub newly_revoked: bool,
}

/// An outbox row leased to a worker for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The outbox sequence: monotonic, the message's `sequence`.
    pub id: i64,
    pub event_id: EventId,
    /// `key.revoked`, `key.updated` or `rbac.changed`.
    pub kind: String,
    pub tenant_id: TenantId,
    /// The key a `key.*` event is about; `None` for `rbac.changed`.
    pub key_id: Option<KeyId>,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows neither published nor dead.
    pub pending: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    pub dead: i64,
}

/// Undelivered events of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeBacklog {
    #[serde(rename = "type")]
    pub kind: String,
    /// Neither published nor dead.
    pub pending: i64,
    pub dead: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub events: u64,
    pub acks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestorRecord {
    pub id: String,
    pub queue: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Published events (still in the outbox) this ingestor has not acked.
    pub unacked: i64,
}

/// `key.revoked`: the key is dead (`docs/events.md`).
pub const KEY_REVOKED: &str = "key.revoked";
/// `key.updated`: a key's roles, name or expiry changed.
pub const KEY_UPDATED: &str = "key.updated";
/// `rbac.changed`: a role, group or membership of the tenant changed.
pub const RBAC_CHANGED: &str = "rbac.changed";

/// Who makes a change, on which request, and when: what the change's audit
/// record names. `event_id` is the id its event gets, if the change emits
/// one (chosen before the transaction, so the caller can name it in
/// `Keyward-Event-Id` without a second read).
#[derive(Debug, Clone)]
pub struct Change {
    /// A username, or `apikey:{keyId}`.
    pub actor: String,
    pub request_id: String,
    pub event_id: EventId,
    pub at: Timestamp,
    /// The actor is a superadmin: only such a change may touch a
    /// `_platform` principal or group that holds a built-in role.
    pub by_superadmin: bool,
}

impl Change {
    /// A change by `actor` on request `request_id` at `at`, with a fresh
    /// event id.
    pub fn new(actor: impl Into<String>, request_id: impl Into<String>, at: Timestamp) -> Self {
        Self {
            actor: actor.into(),
            request_id: request_id.into(),
            event_id: EventId::new(),
            at: crate::store::timestamp::truncate_micros(at),
            by_superadmin: false,
        }
    }

    /// The same change, made by a superadmin or not.
    pub fn by_superadmin(mut self, yes: bool) -> Self {
        self.by_superadmin = yes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(published: bool, applied_by: i64, live_ingestors: i64) -> EventProgress {
        EventProgress {
            in_outbox: true,
            published,
            dead: false,
            applied_by,
            live_ingestors,
        }
    }

    #[test]
    fn a_revocation_is_applied_once_every_live_ingestor_reported() {
        assert_eq!(progress(true, 2, 2).state(), EventState::Applied);
        assert_eq!(progress(true, 3, 2).state(), EventState::Applied);
        assert_eq!(progress(true, 1, 2).state(), EventState::Published);
    }

    #[test]
    fn no_live_ingestor_means_published_not_applied() {
        assert_eq!(progress(true, 0, 0).state(), EventState::Published);
        assert_eq!(progress(true, 1, 0).state(), EventState::Published);
    }

    #[test]
    fn unpublished_is_pending_and_dead_is_failed_whatever_the_reports() {
        assert_eq!(progress(false, 0, 2).state(), EventState::Pending);
        let dead = EventProgress {
            dead: true,
            ..progress(false, 2, 2)
        };
        assert_eq!(dead.state(), EventState::Failed);
    }

    #[test]
    fn a_purged_event_reads_as_published() {
        let purged = EventProgress {
            in_outbox: false,
            ..progress(false, 0, 0)
        };
        assert_eq!(purged.state(), EventState::Published);
    }
}
