//! SQLite: the embedded default. One file in WAL mode; readers never block
//! the writer. Write transactions start with `BEGIN IMMEDIATE` so that two
//! writers queue on the busy timeout instead of one failing when it tries to
//! upgrade a read lock. SQLite serialises writers, so claiming needs no
//! `SKIP LOCKED`: a claim is one atomic `UPDATE … RETURNING`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::common::sql_store;
use super::error::StoreResult;
use super::rows::OutboxRow;
use super::timestamp::Ts;
use super::{OutboxEvent, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: durable across process crashes; an OS crash may
            // lose the last transactions but never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// SQLite has no NOTIFY: workers poll (250 ms by default) and one API
    /// process owns the file, so there is nobody else to tell.
    async fn notify_outbox(&self, _conn: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }

    async fn notify_keys(&self, _conn: &mut SqliteConnection, _payload: &str) -> StoreResult<()> {
        Ok(())
    }
}

/// A JSON array of ids, for `IN (SELECT value FROM json_each(?))`: one
/// statement for a whole batch without building SQL text.
fn id_list(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

sql_store!(SqliteStore, Sqlite, {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn key_changes(&self) -> StoreResult<Option<Box<dyn super::KeyChanges>>> {
        Ok(None)
    }

    async fn outbox_wakeups(&self) -> StoreResult<Option<Box<dyn super::OutboxWakeups>>> {
        Ok(None)
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
        let mut rows: Vec<OutboxRow> = sqlx::query_as(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2 \
             WHERE id IN ( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
               ORDER BY next_attempt_at, id \
               LIMIT $4) \
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
             WHERE id IN (SELECT value FROM json_each($3)) AND published_at IS NULL",
        )
        .bind(Ts(now))
        .bind(Ts(live_since))
        .bind(id_list(ids))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn key_credentials_many(
        &self,
        ids: &[crate::ids::KeyId],
    ) -> StoreResult<Vec<crate::store::KeyCredentials>> {
        let list = serde_json::Value::from(ids.iter().map(ToString::to_string).collect::<Vec<_>>());
        let found: Vec<super::rows::KeyGrantRow> =
            sqlx::query_as(super::common::key_grants_select!(
                "kr.key_id IN (SELECT value FROM json_each($1))",
                "gk.key_id IN (SELECT value FROM json_each($1))",
                "k.key_id IN (SELECT value FROM json_each($1))"
            ))
            .bind(list.to_string())
            .fetch_all(&self.pool)
            .await?;
        super::rows::keys_credentials(found)
    }

    #[tracing::instrument(skip(self, ids), fields(n = ids.len()))]
    async fn release_leases(&self, owner: &str, ids: &[i64]) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE lease_owner = $1 AND id IN (SELECT value FROM json_each($2))",
        )
        .bind(owner)
        .bind(id_list(ids))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
});
