//! Ingestors as the service knows them: heartbeats (which make an
//! ingestor live) and `applied` reports (an ingestor applied an event).
//! SQL: `sql.rs`.

use async_trait::async_trait;
use sqlx::FromRow;

use super::timestamp::Ts;
use super::{Backend, IngestorRecord, StoreResult, Timestamp};
use crate::ids::EventId;

#[async_trait]
pub trait IngestorStore: Backend {
    async fn ingestor_heartbeat(&self, id: &str, queue: &str, at: Timestamp) -> StoreResult<()>;
    async fn list_ingestors(&self) -> StoreResult<Vec<IngestorRecord>>;
    /// Records an ingestor's `applied` report. Idempotent: the same report
    /// twice is one. A report for an event the outbox no longer holds is
    /// ignored. `true` when it was new.
    async fn record_applied(
        &self,
        event_id: EventId,
        ingestor_id: &str,
        applied_at: Timestamp,
    ) -> StoreResult<bool>;
}

#[derive(FromRow)]
pub(crate) struct IngestorRow {
    pub id: String,
    pub queue: String,
    pub first_seen_at: Ts,
    pub last_seen_at: Ts,
    pub unacked: i64,
}

impl From<IngestorRow> for IngestorRecord {
    fn from(r: IngestorRow) -> Self {
        IngestorRecord {
            id: r.id,
            queue: r.queue,
            first_seen_at: r.first_seen_at.0,
            last_seen_at: r.last_seen_at.0,
            unacked: r.unacked,
        }
    }
}
