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
    /// Gives the acks recorded before their event was marked published
    /// (a report can outrun the worker's mark) the event's publication
    /// time; how many. `list_ingestors` counts right either way; settled
    /// acks are counted from an index alone.
    async fn settle_acks(&self) -> StoreResult<u64>;
    /// Records an ingestor's `applied` report. Idempotent: the same report
    /// twice is one. A report for an event the outbox no longer holds is
    /// ignored. `true` when it was new.
    async fn record_applied(
        &self,
        event_id: EventId,
        ingestor_id: &str,
        applied_at: Timestamp,
    ) -> StoreResult<bool> {
        let report = AppliedReport {
            event_id,
            ingestor_id: ingestor_id.to_owned(),
            applied_at,
        };
        Ok(self
            .record_applied_all(std::slice::from_ref(&report))
            .await?
            == 1)
    }
    /// Records many `applied` reports in one transaction, each as
    /// `record_applied` would: all or none. How many were new. A storm of
    /// revocations brings one report per event and ingestor; one commit
    /// each held the worker to ~2,000 reports a second (issue #17).
    async fn record_applied_all(&self, reports: &[AppliedReport]) -> StoreResult<u64>;
}

/// An ingestor's report that it applied an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedReport {
    pub event_id: EventId,
    pub ingestor_id: String,
    pub applied_at: Timestamp,
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
