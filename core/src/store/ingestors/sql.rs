//! Ingestor SQL, compiled once per backend (see `store/mod.rs`).

use super::SqlStore;
use crate::ids::EventId;
use crate::store::ingestors::{IngestorRow, IngestorStore};
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

    #[tracing::instrument(skip(self))]
    async fn record_applied(
        &self,
        event_id: EventId,
        ingestor_id: &str,
        applied_at: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO event_acks (event_id, ingestor_id, applied_at) \
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM outbox WHERE event_id = $1) \
         ON CONFLICT DO NOTHING",
        )
        .bind(event_id.to_string())
        .bind(ingestor_id)
        .bind(Ts(applied_at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
