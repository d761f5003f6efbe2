//! Ingestor SQL, compiled once per backend (see `store/mod.rs`).

use super::{SqlStore, sql};
use crate::store::ingestors::{AppliedReport, IngestorRow, IngestorStore};
use crate::store::timestamp::Ts;
use crate::store::{Dialect, IngestorRecord, StoreResult, Timestamp};

/// Every ingestor with its `unacked`: two index range counts each
/// (migration 0007) — events published since it was first seen, less its
/// acks of those, read from the ack itself or, for the few acks recorded
/// before their event was marked published, through the outbox.
pub(super) const LIST_INGESTORS: &str = "SELECT i.id, i.queue, i.first_seen_at, i.last_seen_at, \
       (SELECT COUNT(*) FROM outbox o WHERE o.published_at >= i.first_seen_at) \
     - (SELECT COUNT(*) FROM event_acks a \
        WHERE a.ingestor_id = i.id AND a.published_at >= i.first_seen_at) \
     - (SELECT COUNT(*) FROM event_acks a JOIN outbox o ON o.event_id = a.event_id \
        WHERE a.ingestor_id = i.id AND a.published_at IS NULL \
          AND o.published_at >= i.first_seen_at) \
       AS unacked \
     FROM ingestors i ORDER BY i.id";

/// Copies the publication time into acks recorded before it was known,
/// read from the index of those alone (SQLite is told to use it).
pub(super) const SETTLE_ACKS: Dialect = Dialect {
    sqlite: "UPDATE event_acks INDEXED BY event_acks_unsettled \
             SET published_at = (SELECT o.published_at FROM outbox o \
                                 WHERE o.event_id = event_acks.event_id) \
             WHERE published_at IS NULL AND EXISTS (SELECT 1 FROM outbox o \
               WHERE o.event_id = event_acks.event_id AND o.published_at IS NOT NULL)",
    postgres: "UPDATE event_acks a SET published_at = o.published_at FROM outbox o \
               WHERE a.published_at IS NULL AND o.event_id = a.event_id \
                 AND o.published_at IS NOT NULL",
};

#[async_trait::async_trait]
impl IngestorStore for SqlStore {
    #[tracing::instrument(skip(self))]
    async fn ingestor_heartbeat(&self, id: &str, queue: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ingestors (id, queue, first_seen_at, last_seen_at) \
         VALUES ($1, $2, $3, $3) \
         ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, \
           last_seen_at = CASE WHEN excluded.last_seen_at > ingestors.last_seen_at \
                               THEN excluded.last_seen_at \
                               ELSE ingestors.last_seen_at END",
        )
        .bind(id)
        .bind(queue)
        .bind(Ts(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn list_ingestors(&self) -> StoreResult<Vec<IngestorRecord>> {
        let rows: Vec<IngestorRow> = sqlx::query_as(LIST_INGESTORS).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(skip(self))]
    async fn settle_acks(&self) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let settled = sqlx::query(sql(&SETTLE_ACKS))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(settled)
    }

    #[tracing::instrument(skip_all, fields(reports = reports.len()))]
    async fn record_applied_all(&self, reports: &[AppliedReport]) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut new = 0;
        for report in reports {
            new += sqlx::query(
                "INSERT INTO event_acks (event_id, ingestor_id, applied_at, published_at) \
                 SELECT $1, $2, $3, o.published_at FROM outbox o WHERE o.event_id = $1 \
                 ON CONFLICT DO NOTHING",
            )
            .bind(report.event_id.to_string())
            .bind(&report.ingestor_id)
            .bind(Ts(report.applied_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(new)
    }
}
