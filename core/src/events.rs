//! The AMQP messages of API.md §10, shared by the sync worker (which
//! publishes revocations and consumes acks) and ingestors (the reverse).
//! Core knows no AMQP client: these are the names and the JSON bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, KeyId, TenantId};
use crate::store::{KEY_REVOKED, OutboxEvent};

/// Default name of the durable topic exchange revocations go to.
pub const DEFAULT_EXCHANGE: &str = "keyward.events";
/// Default name of the durable queue ingestors report to.
pub const DEFAULT_ACKS_QUEUE: &str = "keyward.acks";
/// Binding that receives every event of every tenant: each type has two
/// words, so routing keys are `{type}.{tenantId}` (API.md §10).
pub const ALL_EVENTS: &str = "#";
/// The binding of earlier versions: revocations only. A queue still bound
/// with it keeps receiving revocations, and nothing else.
pub const ALL_REVOCATIONS: &str = "key.revoked.#";
/// `key.updated`: a key's roles, name or expiry changed.
pub const KEY_UPDATED: &str = "key.updated";
/// `rbac.changed`: a role, group or membership of the tenant changed.
pub const RBAC_CHANGED: &str = "rbac.changed";

/// `*.*.{tenantId}`: every event of one tenant.
pub fn tenant_binding(tenant: &TenantId) -> String {
    format!("*.*.{tenant}")
}
/// `content_type` of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// `key.revoked.{tenantId}`: ingestors may bind to one tenant's keys.
pub fn routing_key(tenant: &TenantId) -> String {
    format!("{KEY_REVOKED}.{tenant}")
}

/// `keyward.ingestor.{id}`: each ingestor's own durable queue.
pub fn ingestor_queue(ingestor_id: &str) -> String {
    format!("keyward.ingestor.{ingestor_id}")
}

/// The body of a `key.revoked` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationMessage {
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    pub revoked_at: DateTime<Utc>,
    /// The outbox sequence: increasing in commit order on one database.
    pub sequence: i64,
}

impl From<&OutboxEvent> for RevocationMessage {
    fn from(e: &OutboxEvent) -> Self {
        Self {
            event_id: e.event_id,
            kind: e.kind.clone(),
            tenant_id: e.tenant_id.clone(),
            key_id: e.key_id,
            // The tombstone and its event are written in one transaction
            // with one clock reading: the event's time is the revocation's.
            revoked_at: e.created_at,
            sequence: e.id,
        }
    }
}

/// An event as an ingestor receives it, by its `type` (API.md §10).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type")]
pub enum EventMessage {
    /// The key is dead: refuse it from now on without asking the API.
    #[serde(rename = "key.revoked", rename_all = "camelCase")]
    KeyRevoked {
        event_id: EventId,
        tenant_id: TenantId,
        key_id: KeyId,
        revoked_at: DateTime<Utc>,
        sequence: i64,
    },
    /// The key changed: drop what is cached of it.
    #[serde(rename = "key.updated", rename_all = "camelCase")]
    KeyUpdated {
        event_id: EventId,
        tenant_id: TenantId,
        key_id: KeyId,
        updated_at: DateTime<Utc>,
        sequence: i64,
    },
    /// Roles, groups or memberships of the tenant changed: drop every
    /// cached key of the tenant.
    #[serde(rename = "rbac.changed", rename_all = "camelCase")]
    RbacChanged {
        event_id: EventId,
        tenant_id: TenantId,
        changed_at: DateTime<Utc>,
        sequence: i64,
    },
}

impl EventMessage {
    pub fn event_id(&self) -> EventId {
        match self {
            Self::KeyRevoked { event_id, .. }
            | Self::KeyUpdated { event_id, .. }
            | Self::RbacChanged { event_id, .. } => *event_id,
        }
    }

    /// The event's type, as in its `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KeyRevoked { .. } => KEY_REVOKED,
            Self::KeyUpdated { .. } => KEY_UPDATED,
            Self::RbacChanged { .. } => RBAC_CHANGED,
        }
    }

    /// When the change was committed.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::KeyRevoked { revoked_at: at, .. }
            | Self::KeyUpdated { updated_at: at, .. }
            | Self::RbacChanged { changed_at: at, .. } => *at,
        }
    }
}

/// What ingestors send to `keyward.acks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ReportMessage {
    /// The ingestor evicted the event's key and acknowledged the broker.
    #[serde(rename_all = "camelCase")]
    Applied {
        event_id: EventId,
        ingestor_id: String,
        applied_at: DateTime<Utc>,
    },
    /// The ingestor is alive and consumes `queue`.
    #[serde(rename_all = "camelCase")]
    Heartbeat {
        ingestor_id: String,
        queue: String,
        at: DateTime<Utc>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_body_matches_the_contract() {
        let event = OutboxEvent {
            id: 42,
            event_id: EventId::new(),
            kind: KEY_REVOKED.into(),
            tenant_id: TenantId::parse("acme").unwrap(),
            key_id: KeyId::new(),
            created_at: Utc::now(),
            attempts: 0,
        };
        let json = serde_json::to_value(RevocationMessage::from(&event)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "eventId",
                "keyId",
                "revokedAt",
                "sequence",
                "tenantId",
                "type"
            ]
        );
        assert_eq!(json["type"], "key.revoked");
        assert_eq!(json["sequence"], 42);
        assert_eq!(routing_key(&event.tenant_id), "key.revoked.acme");
    }

    #[test]
    fn the_three_event_types_parse_as_documented() {
        let id = EventId::new();
        let key = KeyId::new();
        let revoked = RevocationMessage {
            event_id: id,
            kind: KEY_REVOKED.into(),
            tenant_id: TenantId::parse("acme").unwrap(),
            key_id: key,
            revoked_at: Utc::now(),
            sequence: 7,
        };
        let parsed: EventMessage =
            serde_json::from_slice(&serde_json::to_vec(&revoked).unwrap()).unwrap();
        assert!(
            matches!(parsed, EventMessage::KeyRevoked { key_id, sequence: 7, .. } if key_id == key)
        );
        let updated: EventMessage = serde_json::from_str(&format!(
            r#"{{"eventId":"{id}","type":"key.updated","tenantId":"acme","keyId":"{key}","updatedAt":"2026-11-27T10:00:00Z","sequence":43}}"#
        ))
        .unwrap();
        assert_eq!((updated.kind(), updated.event_id()), ("key.updated", id));
        let rbac: EventMessage = serde_json::from_str(&format!(
            r#"{{"eventId":"{id}","type":"rbac.changed","tenantId":"acme","changedAt":"2026-11-27T10:00:00Z","sequence":44}}"#
        ))
        .unwrap();
        assert!(
            matches!(rbac, EventMessage::RbacChanged { ref tenant_id, .. } if tenant_id.as_str() == "acme")
        );
        assert!(
            serde_json::from_str::<EventMessage>(&format!(
                r#"{{"eventId":"{id}","type":"key.exploded","tenantId":"acme","sequence":1}}"#
            ))
            .is_err(),
            "an unknown type is not guessed at"
        );
        assert_eq!(
            tenant_binding(&TenantId::parse("acme").unwrap()),
            "*.*.acme"
        );
    }

    #[test]
    fn acks_parse_as_documented() {
        let id = EventId::new();
        let applied: ReportMessage = serde_json::from_str(&format!(
            r#"{{"type":"applied","eventId":"{id}","ingestorId":"i-1","appliedAt":"2026-11-27T10:00:00Z"}}"#
        ))
        .unwrap();
        assert!(matches!(applied, ReportMessage::Applied { event_id, .. } if event_id == id));
        let beat: ReportMessage = serde_json::from_str(
            r#"{"type":"heartbeat","ingestorId":"i-1","queue":"keyward.ingestor.i-1","at":"2026-11-27T10:00:00Z"}"#,
        )
        .unwrap();
        assert!(
            matches!(beat, ReportMessage::Heartbeat { ref queue, .. } if queue == "keyward.ingestor.i-1")
        );
        assert!(serde_json::from_str::<ReportMessage>(r#"{"type":"other"}"#).is_err());
    }
}
