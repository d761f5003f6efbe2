//! Outbox SQL, compiled once per backend (see `store/mod.rs`).

use std::time::Duration;

use super::audit::record_in;
use super::keys::key_in;
use super::{Conn, SqlStore, id_list, sql};
use crate::ids::{EventId, KeyId, TenantId};
use crate::store::audit::Action;
use crate::store::keys::KeyChange;
use crate::store::outbox::{EventStatusRow, OutboxRow, OutboxStore, OutboxWakeups};
use crate::store::timestamp::Ts;
use crate::store::{
    ApiKey, Change, Dialect, EventStatus, OutboxEvent, OutboxStats, Purged, StoreError,
    StoreResult, Timestamp, TypeBacklog,
};

/// Leases due events: `$1` owner, `$2` lease end, `$3` now, `$4` batch.
/// SQLite serialises writers, so one `UPDATE … RETURNING` is atomic there.
/// On PostgreSQL, `SKIP LOCKED` lets workers claim side by side, and
/// `= ANY(ARRAY(...))` keeps the plan on the partial `outbox_due` index
/// (`IN (SELECT ...)` turns into a hash semi-join over the whole table once
/// delivered history piles up).
const CLAIM: Dialect = Dialect {
    sqlite: "UPDATE outbox SET lease_owner = $1, lease_until = $2 \
             WHERE id IN ( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
               ORDER BY next_attempt_at, id \
               LIMIT $4) \
             RETURNING id, event_id, kind, tenant_id, key_id, created_at, attempts",
    postgres: "UPDATE outbox SET lease_owner = $1, lease_until = $2 \
               WHERE id = ANY(ARRAY( \
                 SELECT id FROM outbox \
                 WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
                   AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY next_attempt_at, id \
                 LIMIT $4 \
                 FOR UPDATE SKIP LOCKED)) \
               RETURNING id, event_id, kind, tenant_id, key_id, created_at, attempts",
};

/// `$1` when the batch was sent, `$2` live-since, `$3` the list of outbox
/// ids.
///
/// An ingestor counts towards `applied` only if it was live and had
/// already sent its first heartbeat when the batch was sent: a node
/// heartbeats only once its queue is bound, so it has the event. One that
/// joined while the confirms were on their way (the mark comes after them)
/// bound its queue after the event was routed and will never report it:
/// counting it left the event `published` for ever.
///
/// On PostgreSQL the mark takes `outbox_totals` FOR UPDATE before it
/// touches an outbox row (the uncorrelated `EXISTS` is a one-time filter,
/// evaluated before the scan), as every other writer of the counts takes
/// it first (migration 0009). Its statement trigger would otherwise take
/// it only after the rows: a recording of acks holding it FOR SHARE and
/// then reaching a row the mark held, while the mark's trigger waited for
/// that share, was a deadlock (40P01, seen in
/// `postgres_unacked_stays_exact_under_concurrent_writers`).
const MARK_PUBLISHED: Dialect = Dialect {
    sqlite: "UPDATE outbox SET published_at = $1, lease_owner = NULL, lease_until = NULL, \
               live_ingestors = (SELECT COUNT(*) FROM ingestors \
                                   WHERE last_seen_at >= $2 AND first_seen_at <= $1) \
             WHERE id IN (SELECT value FROM json_each($3)) AND published_at IS NULL",
    postgres: "WITH totals AS (SELECT published FROM outbox_totals FOR UPDATE) \
               UPDATE outbox SET published_at = $1, lease_owner = NULL, lease_until = NULL, \
                 live_ingestors = (SELECT COUNT(*) FROM ingestors \
                                   WHERE last_seen_at >= $2 AND first_seen_at <= $1) \
               WHERE id = ANY($3) AND published_at IS NULL AND EXISTS (SELECT FROM totals)",
};

/// `$1` owner, `$2` the list of outbox ids.
const RELEASE: Dialect = Dialect {
    sqlite: "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND id IN (SELECT value FROM json_each($2))",
    postgres: "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
               WHERE lease_owner = $1 AND id = ANY($2)",
};

impl SqlStore {
    /// Writes the event of `change` (its id is `change.event_id`) on the
    /// change's own transaction, and wakes the sync workers once it commits;
    /// `keys` tells other API replicas what to drop, in the same notice.
    pub(super) async fn emit(
        &self,
        conn: &mut Conn,
        change: &Change,
        kind: &str,
        tenant: &TenantId,
        key: Option<KeyId>,
        keys: Option<&KeyChange>,
    ) -> StoreResult<EventId> {
        sqlx::query(
            "INSERT INTO outbox (event_id, kind, tenant_id, key_id, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(change.event_id.to_string())
        .bind(kind)
        .bind(tenant.as_str())
        .bind(key.map(|k| k.to_string()))
        .bind(Ts(change.at))
        .execute(&mut *conn)
        .await?;
        self.notify_event(conn, keys).await?;
        Ok(change.event_id)
    }
}

#[async_trait::async_trait]
impl OutboxStore for SqlStore {
    #[tracing::instrument(skip(self, last_error))]
    async fn schedule_retry(
        &self,
        owner: &str,
        id: i64,
        next_attempt_at: Timestamp,
        last_error: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3, \
                           last_error = $4, lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2 AND published_at IS NULL",
        )
        .bind(id)
        .bind(owner)
        .bind(Ts(next_attempt_at))
        .bind(last_error)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip(self, last_error))]
    async fn mark_dead(
        &self,
        owner: &str,
        id: i64,
        last_error: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, dead_at = $4, last_error = $3, \
                           lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND lease_owner = $2 AND published_at IS NULL",
        )
        .bind(id)
        .bind(owner)
        .bind(last_error)
        .bind(Ts(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip(self))]
    async fn retry_revocation(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        change: &Change,
    ) -> StoreResult<ApiKey> {
        let now = change.at;
        let mut tx = self.begin_write().await?;
        let event: Option<Option<String>> = sqlx::query_scalar(
            "SELECT revocation_event_id FROM api_keys WHERE tenant_id = $1 AND key_id = $2",
        )
        .bind(tenant.as_str())
        .bind(key_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let event = event
            .ok_or(StoreError::KeyNotFound)?
            .ok_or(StoreError::InvalidState)?;
        let revived = sqlx::query(
            "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $2, \
                           last_error = NULL \
         WHERE event_id = $1 AND dead_at IS NOT NULL",
        )
        .bind(&event)
        .bind(Ts(now))
        .execute(&mut *tx)
        .await?;
        if revived.rows_affected() == 0 {
            return Err(StoreError::InvalidState);
        }
        self.notify_outbox(&mut tx).await?;
        let target = key_id.to_string();
        let event = EventId::parse(&event).ok();
        record_in(
            &mut tx,
            change,
            tenant,
            Action::RevocationRetry,
            &target,
            event,
        )
        .await?;
        let key = key_in(&mut tx, tenant, key_id, now).await?;
        tx.commit().await?;
        Ok(key)
    }

    #[tracing::instrument(skip(self))]
    async fn retry_all_dead(&self, now: Timestamp) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let revived = sqlx::query(
            "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                           last_error = NULL \
         WHERE dead_at IS NOT NULL",
        )
        .bind(Ts(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.notify_outbox(&mut tx).await?;
        tx.commit().await?;
        Ok(revived)
    }

    #[tracing::instrument(skip(self))]
    async fn purge(&self, before: Timestamp) -> StoreResult<Purged> {
        let before = Ts(before);
        let mut tx = self.begin_write().await?;
        self.lock_outbox_totals(&mut tx).await?;
        let acks = sqlx::query(
            "DELETE FROM event_acks WHERE event_id IN \
           (SELECT event_id FROM outbox WHERE published_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let events = sqlx::query("DELETE FROM outbox WHERE published_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Purged { events, acks })
    }

    async fn outbox_stats(&self) -> StoreResult<OutboxStats> {
        let (pending, oldest, dead): (i64, Option<Ts>, i64) =
        sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL), \
               (SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL), \
               (SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(OutboxStats {
            pending,
            oldest_pending_at: oldest.map(|t| t.0),
            dead,
        })
    }

    async fn outbox_backlog_by_type(&self) -> StoreResult<Vec<TypeBacklog>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT kind, \
                    SUM(CASE WHEN dead_at IS NULL THEN 1 ELSE 0 END), \
                    SUM(CASE WHEN dead_at IS NULL THEN 0 ELSE 1 END) \
             FROM outbox WHERE published_at IS NULL GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, pending, dead)| TypeBacklog {
                kind,
                pending,
                dead,
            })
            .collect())
    }

    async fn event_status(&self, event_id: EventId) -> StoreResult<Option<EventStatus>> {
        let row: Option<EventStatusRow> = sqlx::query_as(
            "SELECT o.event_id, o.kind, o.tenant_id, o.key_id, o.created_at, o.attempts, \
                    o.published_at, o.dead_at, o.last_error, o.live_ingestors, \
                    (SELECT COUNT(*) FROM event_acks a WHERE a.event_id = o.event_id) AS applied_by \
             FROM outbox o WHERE o.event_id = $1",
        )
        .bind(event_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(EventStatus::try_from).transpose()
    }

    async fn outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>> {
        self.listen_outbox_wakeups().await
    }

    #[tracing::instrument(skip(self))]
    async fn claim_events(
        &self,
        owner: &str,
        lease: Duration,
        batch: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>> {
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut rows: Vec<OutboxRow> = sqlx::query_as(sql(&CLAIM))
            .bind(owner)
            .bind(Ts(lease_until))
            .bind(Ts(now))
            .bind(i64::from(batch))
            .fetch_all(&self.pool)
            .await?;
        rows.sort_by_key(|r| r.id);
        rows.into_iter().map(TryInto::try_into).collect()
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn mark_published(
        &self,
        ids: &[i64],
        sent_at: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(sql(&MARK_PUBLISHED))
            .bind(Ts(sent_at))
            .bind(Ts(live_since))
            .bind(id_list(ids))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn release_leases(&self, owner: &str, ids: &[i64]) -> StoreResult<u64> {
        let done = sqlx::query(sql(&RELEASE))
            .bind(owner)
            .bind(id_list(ids))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
