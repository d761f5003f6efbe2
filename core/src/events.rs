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
/// Binding that receives every tenant's revocations.
pub const ALL_REVOCATIONS: &str = "key.revoked.#";
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
