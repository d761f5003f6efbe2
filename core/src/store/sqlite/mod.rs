//! SQLite: the embedded default. One file in WAL mode; readers never block
//! the writer. Write transactions start with `BEGIN IMMEDIATE` so that two
//! writers queue on the busy timeout instead of one failing when it tries to
//! upgrade a read lock. SQLite has no NOTIFY: workers poll, and one process
//! owns the file, so there is nobody else to tell of a change.

#[path = "../audit/sql.rs"]
mod audit;
#[path = "../backend.rs"]
mod backend;
#[path = "../rbac/builtin.rs"]
mod builtin;
#[path = "../ingestors/sql.rs"]
mod ingestors;
mod inline_reads;
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

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};

use self::inline_reads::InlineReader;
use super::keys::{KeyChange, KeyChanges, KeyGrantRow};
use super::outbox::OutboxWakeups;
use super::{Dialect, StoreResult};

/// What the aggregates' `sql.rs` files compile against.
type SqlStore = SqliteStore;
type Db = Sqlite;
type Conn = SqliteConnection;
type Pool = SqlitePool;

/// `Backend::backend`: for logs and `/readyz`.
const NAME: &str = "sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Verification's key reads on the asking thread (`inline_reads`);
    /// none for an in-memory database.
    reader: Option<InlineReader>,
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
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let path = options.get_filename().to_owned();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        // After the pool: it created the file and set WAL mode.
        let reader = InlineReader::for_file(&path, in_memory);
        Ok(Self { pool, reader })
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

    /// `KEY_GRANTS` on this thread when it can run here, else `None`
    /// (the caller reads through the pool).
    fn inline_key_grants(&self, ids: &[String]) -> Option<Vec<KeyGrantRow>> {
        self.reader.as_ref()?.key_grants(ids)
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
