//! SQLite: the embedded default. One file in WAL mode; readers never block
//! the writer. Write transactions start with `BEGIN IMMEDIATE` so that two
//! writers queue on the busy timeout instead of one failing when it tries to
//! upgrade a read lock. SQLite has no NOTIFY: workers poll, and one process
//! owns the file, so there is nobody else to tell of a change.

#[path = "../backend.rs"]
mod backend;
#[path = "../ingestors/sql.rs"]
mod ingestors;
#[path = "../keys/sql.rs"]
mod keys;
#[path = "../outbox/sql.rs"]
mod outbox;
#[path = "../rbac/sql.rs"]
mod rbac;
#[path = "../tenants/sql.rs"]
mod tenants;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::keys::{KeyChange, KeyChanges};
use super::outbox::OutboxWakeups;
use super::{Dialect, StoreResult};

/// What the aggregates' `sql.rs` files compile against.
type SqlStore = SqliteStore;
type Conn = SqliteConnection;
type Pool = SqlitePool;

/// `Backend::backend`: for logs and `/readyz`.
const NAME: &str = "sqlite";

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

    async fn notify_outbox(&self, _conn: &mut Conn) -> StoreResult<()> {
        Ok(())
    }

    async fn notify_keys(&self, _conn: &mut Conn, _change: &KeyChange) -> StoreResult<()> {
        Ok(())
    }

    async fn listen_key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>> {
        Ok(None)
    }

    async fn listen_outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>> {
        Ok(None)
    }
}

/// This backend's text of a statement that differs by backend.
fn sql(statement: &Dialect) -> &'static str {
    statement.sqlite
}

/// A list bound as one parameter: a JSON array, read back with
/// `json_each` (one statement for a whole batch without building SQL text).
fn id_list(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

fn text_list(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}
