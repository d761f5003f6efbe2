//! Ingestor SQL, compiled once per backend (see `store/mod.rs`).

use super::{SqlStore, sql};
use crate::store::ingestors::{AppliedReport, IngestorRow, IngestorStore};
use crate::store::timestamp::Ts;
use crate::store::{
    Dialect, IngestorRecord, JSON_ROWS_PER_STATEMENT, StoreResult, Timestamp, json_rows,
};

/// Every ingestor with its `unacked`, from the counts the database keeps
/// (migration 0009): events published since it was first seen, less its
/// acks of those — the settled ones counted as they were written, the few
/// recorded before their event was marked published read through the
/// outbox (the unsettled index). Constant in the events kept.
pub(super) const LIST_INGESTORS: &str = "SELECT i.id, i.queue, i.first_seen_at, i.last_seen_at, \
       t.published - i.published_before - i.acked \
     - (SELECT COUNT(*) FROM event_acks a JOIN outbox o ON o.event_id = a.event_id \
        WHERE a.ingestor_id = i.id AND a.published_at IS NULL \
          AND o.published_at >= i.first_seen_at) \
       AS unacked \
     FROM ingestors i CROSS JOIN outbox_totals t ORDER BY i.id";

/// Reports to record, as `[[event id, ingestor id, applied at µs], …]`,
/// each taking its event's publication time; sorted, so that two workers
/// recording overlapping batches meet their rows in the same order.
/// SQLite needs the `WHERE` to read `ON CONFLICT` as the upsert's.
const RECORD_APPLIED: Dialect = Dialect {
    sqlite: "INSERT INTO event_acks (event_id, ingestor_id, applied_at, published_at) \
             SELECT r.event_id, r.ingestor_id, r.applied_at, o.published_at \
             FROM (SELECT json_extract(value, '$[0]') AS event_id, \
                          json_extract(value, '$[1]') AS ingestor_id, \
                          json_extract(value, '$[2]') AS applied_at \
                   FROM json_each($1)) AS r \
             JOIN outbox o ON o.event_id = r.event_id \
             WHERE true ORDER BY r.ingestor_id, r.event_id \
             ON CONFLICT DO NOTHING",
    postgres: "INSERT INTO event_acks (event_id, ingestor_id, applied_at, published_at) \
               SELECT r->>0, r->>1, \
                      timestamptz 'epoch' + (r->>2)::bigint * interval '1 microsecond', \
                      o.published_at \
               FROM jsonb_array_elements($1::jsonb) AS r \
               JOIN outbox o ON o.event_id = r->>0 \
               ORDER BY r->>1, r->>0 \
               ON CONFLICT DO NOTHING",
};

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
        // An update first: an ingestor's first row is where its counts
        // start (migration 0009), which a heartbeat needs only once.
        let seen = sqlx::query(
            "UPDATE ingestors SET queue = $2, \
               last_seen_at = CASE WHEN $3 > last_seen_at THEN $3 ELSE last_seen_at END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(queue)
        .bind(Ts(at))
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if seen {
            return Ok(());
        }
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
        self.share_outbox_totals(&mut tx).await?;
        let mut new = 0;
        for chunk in reports.chunks(JSON_ROWS_PER_STATEMENT) {
            let list = json_rows(chunk, |r| {
                serde_json::json!([
                    r.event_id.to_string(),
                    r.ingestor_id,
                    r.applied_at.timestamp_micros()
                ])
            });
            new += sqlx::query(sql(&RECORD_APPLIED))
                .bind(list)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(new)
    }
}
