//! PostgreSQL: the production store. Several API replicas and workers share
//! one database; claiming uses `FOR UPDATE SKIP LOCKED` and wake-ups ride on
//! `LISTEN/NOTIFY` (`keyward_outbox` for workers, `keyward_keys` for caches).

#[path = "../audit/sql.rs"]
mod audit;
#[path = "../backend.rs"]
mod backend;
#[path = "../rbac/builtin.rs"]
mod builtin;
#[path = "../ingestors/sql.rs"]
mod ingestors;
#[path = "../keys/sql.rs"]
mod keys;
#[cfg(test)]
mod list_plans;
#[path = "../outbox/sql.rs"]
mod outbox;
#[path = "../rbac/sql.rs"]
mod rbac;
#[path = "../tenants/sql.rs"]
mod tenants;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::keys::{KeyChange, KeyChanges, KeyGrantRow};
use super::outbox::{OutboxWakeups, Wakeup};
use super::{Dialect, StoreResult};

/// Channel the transactions that write an event notify; sync workers listen.
pub const OUTBOX_CHANNEL: &str = "keyward_outbox";
/// Channel telling API replicas which cached verifications to drop.
pub const KEYS_CHANNEL: &str = "keyward_keys";

/// What the aggregates' `sql.rs` files compile against.
type SqlStore = PgStore;
type Db = Postgres;
type Conn = PgConnection;
type Pool = PgPool;

/// `Backend::backend`: for logs and `/readyz`.
const NAME: &str = "postgres";

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
    async fn notify_outbox(&self, conn: &mut Conn) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Delivered at commit: other replicas drop what `change` names.
    /// Every PostgreSQL read is a round trip: there is nothing to read
    /// on this thread.
    fn inline_key_grants(&self, _ids: &[String]) -> Option<Vec<KeyGrantRow>> {
        None
    }

    /// An event's wake-up for the workers, and with it `keys` (what
    /// other replicas must drop), in one statement: a change that writes
    /// an event and evicts keys (a revoke, an RBAC change) pays one round
    /// trip for both notices, not two (issue #17).
    async fn notify_event(&self, conn: &mut Conn, keys: Option<&KeyChange>) -> StoreResult<()> {
        let Some(payload) = keys.and_then(KeyChange::payload) else {
            return self.notify_outbox(conn).await;
        };
        sqlx::query("SELECT pg_notify($1, ''), pg_notify($2, $3)")
            .bind(OUTBOX_CHANNEL)
            .bind(KEYS_CHANNEL)
            .bind(payload)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Holds the outbox's counts (migration 0009) for the rest of the
    /// transaction, before any ingestor row: the purge, whose acks' and
    /// events' triggers would otherwise take it late.
    async fn lock_outbox_totals(&self, conn: &mut Conn) -> StoreResult<()> {
        sqlx::query("SELECT published FROM outbox_totals FOR UPDATE")
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The same, shared, for recording acks, in its own statement: the
    /// acks' statement then reads the outbox after a purge that held it
    /// (a trigger's lock would come after the statement's snapshot: it
    /// saw an event the purge had deleted, and failed its foreign key).
    async fn share_outbox_totals(&self, conn: &mut Conn) -> StoreResult<()> {
        sqlx::query("SELECT published FROM outbox_totals FOR SHARE")
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn notify_keys(&self, conn: &mut Conn, change: &KeyChange) -> StoreResult<()> {
        let Some(payload) = change.payload() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(KEYS_CHANNEL)
            .bind(payload)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn listen_key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(KEYS_CHANNEL).await?;
        Ok(Some(Box::new(PgKeyChanges(listener))))
    }

    async fn listen_outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(Some(Box::new(PgOutboxWakeups(listener))))
    }
}

/// This backend's text of a statement that differs by backend.
fn sql(statement: &Dialect) -> &'static str {
    statement.postgres
}

/// A list bound as one parameter: a PostgreSQL array.
fn id_list(ids: &[i64]) -> Vec<i64> {
    ids.to_vec()
}

fn text_list(items: Vec<String>) -> Vec<String> {
    items
}

/// `LISTEN keyward_keys`: payloads as `KeyChange::payload` writes them.
struct PgKeyChanges(PgListener);

#[async_trait]
impl KeyChanges for PgKeyChanges {
    async fn next(&mut self) -> StoreResult<KeyChange> {
        loop {
            // `try_recv` reports a lost connection (then reconnects on the
            // next call): notifications sent meanwhile are gone.
            let Some(n) = self.0.try_recv().await? else {
                return Ok(KeyChange::Lost);
            };
            if let Some(change) = KeyChange::parse(n.payload()) {
                return Ok(change);
            }
        }
    }
}

/// `LISTEN keyward_outbox`: every notification is a wake-up.
struct PgOutboxWakeups(PgListener);

#[async_trait]
impl OutboxWakeups for PgOutboxWakeups {
    async fn next(&mut self) -> StoreResult<Wakeup> {
        Ok(match self.0.try_recv().await? {
            Some(_) => Wakeup::Committed,
            None => Wakeup::Lost,
        })
    }
}
