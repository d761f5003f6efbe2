//! The AMQP messages of `docs/events.md`, shared by the sync worker (which
//! publishes events and consumes reports) and ingestors (the reverse).
//! Core knows no AMQP client: these are the names and the JSON bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, KeyId, TenantId};
use crate::store::OutboxEvent;
pub use crate::store::{KEY_REVOKED, KEY_UPDATED, RBAC_CHANGED};

/// Default name of the durable topic exchange events go to.
pub const DEFAULT_EXCHANGE: &str = "keyward.events";
/// Default name of the durable queue ingestors report to.
pub const DEFAULT_ACKS_QUEUE: &str = "keyward.acks";
/// Binding that receives every event of every tenant: each type has two
/// words, so routing keys are `{type}.{tenantId}` (`docs/events.md`).
pub const ALL_EVENTS: &str = "#";
/// The binding of earlier versions: revocations only. A queue still bound
/// with it keeps receiving revocations, and nothing else.
pub const ALL_REVOCATIONS: &str = "key.revoked.#";
/// `*.*.{tenantId}`: every event of one tenant.
pub fn tenant_binding(tenant: &TenantId) -> String {
    format!("*.*.{tenant}")
}
/// `content_type` of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// `keyward.ingestor.{id}`: each ingestor's own durable queue.
pub fn ingestor_queue(ingestor_id: &str) -> String {
    format!("keyward.ingestor.{ingestor_id}")
}

/// An event message, by its `type` (`docs/events.md`): what the sync worker
/// publishes and ingestors receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// An outbox row no message can be made of: a type this version does not
/// know, or a `key.*` event without its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox event of type {kind:?} cannot be published by this version")]
pub struct UnpublishableEvent {
    pub kind: String,
}

impl TryFrom<&OutboxEvent> for EventMessage {
    type Error = UnpublishableEvent;

    fn try_from(e: &OutboxEvent) -> Result<Self, Self::Error> {
        let (event_id, tenant_id, sequence) = (e.event_id, e.tenant_id.clone(), e.id);
        // The change and its event are written in one transaction with one
        // clock reading: the event's time is the change's.
        let at = e.created_at;
        Ok(match (e.kind.as_str(), e.key_id) {
            (KEY_REVOKED, Some(key_id)) => Self::KeyRevoked {
                event_id,
                tenant_id,
                key_id,
                revoked_at: at,
                sequence,
            },
            (KEY_UPDATED, Some(key_id)) => Self::KeyUpdated {
                event_id,
                tenant_id,
                key_id,
                updated_at: at,
                sequence,
            },
            (RBAC_CHANGED, _) => Self::RbacChanged {
                event_id,
                tenant_id,
                changed_at: at,
                sequence,
            },
            _ => {
                return Err(UnpublishableEvent {
                    kind: e.kind.clone(),
                });
            }
        })
    }
}

impl EventMessage {
    /// `{type}.{tenantId}`: every type has two words, so `*.*.{tenantId}`
    /// selects one tenant and `#` all.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.kind(), self.tenant_id())
    }

    pub fn tenant_id(&self) -> &TenantId {
        match self {
            Self::KeyRevoked { tenant_id, .. }
            | Self::KeyUpdated { tenant_id, .. }
            | Self::RbacChanged { tenant_id, .. } => tenant_id,
        }
    }

    /// The key a `key.*` event is about.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Self::KeyRevoked { key_id, .. } | Self::KeyUpdated { key_id, .. } => Some(*key_id),
            Self::RbacChanged { .. } => None,
        }
    }

    pub fn event_id(&self) -> EventId {
        match self {
            Self::KeyRevoked { event_id, .. }
            | Self::KeyUpdated { event_id, .. }
            | Self::RbacChanged { event_id, .. } => *event_id,
        }
    }

    /// The outbox sequence: increasing in commit order on one database.
    pub fn sequence(&self) -> i64 {
        match self {
            Self::KeyRevoked { sequence, .. }
            | Self::KeyUpdated { sequence, .. }
            | Self::RbacChanged { sequence, .. } => *sequence,
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

    fn outbox_event(kind: &str, key_id: Option<KeyId>) -> OutboxEvent {
        OutboxEvent {
            id: 42,
            event_id: EventId::new(),
            kind: kind.into(),
            tenant_id: TenantId::parse("acme").unwrap(),
            key_id,
            created_at: Utc::now(),
            attempts: 0,
        }
    }

    fn field_names(message: &EventMessage) -> Vec<String> {
        let json = serde_json::to_value(message).unwrap();
        let mut keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn each_type_is_published_with_the_documented_body_and_routing_key() {
        let key = Some(KeyId::new());
        let revoked = EventMessage::try_from(&outbox_event(KEY_REVOKED, key)).unwrap();
        assert_eq!(
            field_names(&revoked),
            [
                "eventId",
                "keyId",
                "revokedAt",
                "sequence",
                "tenantId",
                "type"
            ]
        );
        assert_eq!(revoked.routing_key(), "key.revoked.acme");
        let json = serde_json::to_value(&revoked).unwrap();
        assert_eq!(
            (&json["type"], &json["sequence"]),
            (&"key.revoked".into(), &42.into())
        );

        let updated = EventMessage::try_from(&outbox_event(KEY_UPDATED, key)).unwrap();
        assert_eq!(
            field_names(&updated),
            [
                "eventId",
                "keyId",
                "sequence",
                "tenantId",
                "type",
                "updatedAt"
            ]
        );
        assert_eq!(updated.routing_key(), "key.updated.acme");

        let rbac = EventMessage::try_from(&outbox_event(RBAC_CHANGED, None)).unwrap();
        assert_eq!(
            field_names(&rbac),
            ["changedAt", "eventId", "sequence", "tenantId", "type"]
        );
        assert_eq!(rbac.routing_key(), "rbac.changed.acme");
        assert_eq!(rbac.key_id(), None);

        for bad in [
            outbox_event("key.exploded", key),
            outbox_event(KEY_REVOKED, None),
        ] {
            assert!(EventMessage::try_from(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_three_event_types_parse_as_documented() {
        let id = EventId::new();
        let key = KeyId::new();
        let revoked = EventMessage::try_from(&outbox_event(KEY_REVOKED, Some(key))).unwrap();
        let parsed: EventMessage =
            serde_json::from_slice(&serde_json::to_vec(&revoked).unwrap()).unwrap();
        assert_eq!(parsed, revoked);
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
