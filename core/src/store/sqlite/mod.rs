//! SQLite: the embedded default. One file in WAL mode; readers never block
//! the writer. Write transactions start with `BEGIN IMMEDIATE` so that two
//! writers queue on the busy timeout instead of one failing when it tries to
//! upgrade a read lock. SQLite has no NOTIFY: workers poll, and one process
//! owns the file, so there is nobody else to tell of a change.

#[cfg(test)]
mod ack_plans;
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
use std::sync::Arc;
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
    /// Whose turn it is to write (`WriteTx`).
    writer: Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction, holding this process's turn to write. SQLite
/// takes one writer at a time, and a writer that finds the lock taken
/// sleeps in SQLite's busy handler (1 ms growing to 100 ms a nap), never
/// woken when the lock frees: under concurrent writes some waited hundreds
/// of milliseconds (creates through the API, 16 clients: p99 326 ms, issue
/// #17). Writers of this process take turns here first, in the order they
/// came, so each finds SQLite's lock free; another process (a sync worker
/// on the same file) still meets the busy handler.
pub struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
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
        Ok(Self {
            pool,
            reader,
            writer: Arc::default(),
        })
    }

    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let turn = Arc::clone(&self.writer).lock_owned().await;
        Ok(WriteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            _turn: turn,
        })
    }

    async fn notify_outbox(&self, _conn: &mut Conn) -> StoreResult<()> {
        Ok(())
    }

    /// One writer at a time: the write transaction holds everything.
    async fn lock_outbox_totals(&self, _conn: &mut Conn) -> StoreResult<()> {
        Ok(())
    }

    async fn share_outbox_totals(&self, _conn: &mut Conn) -> StoreResult<()> {
        Ok(())
    }

    async fn notify_keys(&self, _conn: &mut Conn, _change: &KeyChange) -> StoreResult<()> {
        Ok(())
    }

    async fn notify_event(&self, _conn: &mut Conn, _keys: Option<&KeyChange>) -> StoreResult<()> {
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

#[cfg(test)]
mod write_turns {
    use std::time::Duration;

    use super::SqliteStore;
    use crate::store::Backend;

    /// A second writer waits for the first one's turn to end, however
    /// long, then writes. Without the turns it meets SQLite's lock, naps in
    /// the busy handler, and fails ("database is locked") once the lock has
    /// been held longer than the busy timeout (5 s): checked by taking
    /// `writer` out of `begin_write`.
    #[tokio::test]
    async fn writers_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let first = store.begin_write().await.unwrap();
        let second = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin_write().await?;
                sqlx::query("INSERT INTO tenants (id, created_at) VALUES ('b', '2026-01-01')")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, crate::store::StoreError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert!(
            !second.is_finished(),
            "the second writer did not wait its turn"
        );
        first.commit().await.unwrap();
        second.await.unwrap().unwrap();
    }
}
