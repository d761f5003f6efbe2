//! Ingestor SQL, compiled once per backend (see `store/mod.rs`).

use super::SqlStore;
use crate::store::ingestors::{AppliedReport, IngestorRow, IngestorStore};
use crate::store::timestamp::Ts;
use crate::store::{IngestorRecord, StoreResult, Timestamp};

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
        let rows: Vec<IngestorRow> = sqlx::query_as(
            "SELECT i.id, i.queue, i.first_seen_at, i.last_seen_at, \
           (SELECT COUNT(*) FROM outbox o \
            WHERE o.published_at IS NOT NULL AND o.published_at >= i.first_seen_at \
              AND NOT EXISTS (SELECT 1 FROM event_acks a \
                              WHERE a.event_id = o.event_id AND a.ingestor_id = i.id)) \
             AS unacked \
         FROM ingestors i ORDER BY i.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    #[tracing::instrument(skip_all, fields(reports = reports.len()))]
    async fn record_applied_all(&self, reports: &[AppliedReport]) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let mut new = 0;
        for report in reports {
            new += sqlx::query(
                "INSERT INTO event_acks (event_id, ingestor_id, applied_at) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM outbox WHERE event_id = $1) \
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
