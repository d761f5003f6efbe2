//! PostgreSQL: the production store. Several API replicas and workers share
//! one database; claiming uses `FOR UPDATE SKIP LOCKED` and wakes-ups ride on
//! `LISTEN/NOTIFY` (`keyward_outbox` for workers, `keyward_keys` for caches).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::common::sql_store;
use super::error::StoreResult;
use super::rows::OutboxRow;
use super::timestamp::Ts;
use super::{KeyChange, KeyChanges, OutboxEvent, OutboxWakeups, Timestamp, Wakeup};
use crate::ids::{KeyId, TenantId, Username};

/// Channel the revoke transaction notifies; sync workers listen on it.
pub const OUTBOX_CHANNEL: &str = "keyward_outbox";
/// Channel telling API replicas which cached verifications to drop.
pub const KEYS_CHANNEL: &str = "keyward_keys";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A request waits this long for a connection before it is told
            // `unavailable`, rather than hanging on a dead database.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Delivered at commit, so a worker never wakes for a rolled-back event.
    async fn notify_outbox(&self, conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn notify_keys(&self, conn: &mut PgConnection, payload: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(payload)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// `LISTEN keyward_keys`, payloads `key:{id}`, `tenant:{id}` or `user:{name}`.
struct PgKeyChanges(PgListener);

#[async_trait::async_trait]
impl KeyChanges for PgKeyChanges {
    async fn next(&mut self) -> StoreResult<KeyChange> {
        loop {
            // `try_recv` reports a lost connection (then reconnects on the
            // next call): notifications sent meanwhile are gone.
            let Some(n) = self.0.try_recv().await? else {
                return Ok(KeyChange::Lost);
            };
            let change = match n.payload().split_once(':') {
                Some(("key", id)) => KeyId::parse(id).ok().map(KeyChange::Key),
                Some(("tenant", t)) => TenantId::parse(t).ok().map(KeyChange::Tenant),
                Some(("user", u)) => Username::parse(u).ok().map(KeyChange::User),
                _ => None,
            };
            if let Some(change) = change {
                return Ok(change);
            }
        }
    }
}

/// `LISTEN keyward_outbox`: every notification is a wake-up.
struct PgOutboxWakeups(PgListener);

#[async_trait::async_trait]
impl OutboxWakeups for PgOutboxWakeups {
    async fn next(&mut self) -> StoreResult<Wakeup> {
        Ok(match self.0.try_recv().await? {
            Some(_) => Wakeup::Committed,
            None => Wakeup::Lost,
        })
    }
}

sql_store!(PgStore, Postgres, {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(KEYS_CHANNEL).await?;
        Ok(Some(Box::new(PgKeyChanges(listener))))
    }

    async fn outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(Some(Box::new(PgOutboxWakeups(listener))))
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
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
        // `= ANY(ARRAY(...))` keeps the plan on the partial `outbox_due`
        // index; `IN (SELECT ...)` turns into a hash semi-join over the whole
        // table once delivered history piles up (see DESIGN.md).
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2 \
             WHERE id = ANY(ARRAY( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
               ORDER BY next_attempt_at, id \
               LIMIT $4 \
               FOR UPDATE SKIP LOCKED)) \
             RETURNING id, event_id, kind, tenant_id, key_id, created_at, attempts",
        )
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
        now: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE outbox SET published_at = $1, lease_owner = NULL, lease_until = NULL, \
               live_ingestors = (SELECT COUNT(*) FROM ingestors WHERE last_seen_at >= $2) \
             WHERE id = ANY($3) AND published_at IS NULL",
        )
        .bind(Ts(now))
        .bind(Ts(live_since))
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn key_credentials_many(
        &self,
        ids: &[KeyId],
    ) -> StoreResult<Vec<crate::store::KeyCredentials>> {
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: Vec<super::rows::KeyGrantRow> =
            sqlx::query_as(super::common::key_grants_select!(
                "kr.key_id = ANY($1)",
                "gk.key_id = ANY($1)",
                "k.key_id = ANY($1)"
            ))
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        super::rows::keys_credentials(found)
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn release_leases(&self, owner: &str, ids: &[i64]) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND id = ANY($2)",
        )
        .bind(owner)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
});
