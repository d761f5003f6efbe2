//! Verification's key reads, run on the thread that asks, against a
//! read-only connection of that thread's own.
//!
//! Why: sqlx runs every SQLite connection on a thread of its own, so each
//! read is two hand-offs between threads (the statement there, the rows
//! back), and under a stream of cache misses those hand-offs cost more than
//! the read itself: profiled, a miss cost the API 2.3 times a cache hit,
//! most of it in waking threads. The read this replaces is a lookup by
//! primary key in a file of which one process is the owner; in WAL mode a
//! reader never waits for the writer, and the pages are in memory after the
//! first reads, so it takes microseconds: less than the hand-offs did.
//!
//! A read that cannot run here (the connection can't be opened, the file
//! is busy in a checkpoint, any SQLite error) returns `None` and the caller
//! reads through the pool as before, where errors are reported: so this
//! path can only be faster, never less available. The busy timeout is zero
//! for that reason: a thread that serves requests must never sleep in
//! SQLite.
//!
//! A batch sees what was committed when its first statement started, as
//! one pooled statement for the whole list does; what a reader may cache
//! is decided by the generation rule above the store (every key's
//! snapshot is taken before its read is queued), which this doesn't change.
//!
//! Each thread's connection has a page cache of its own only because
//! SQLite is built without `SQLITE_ENABLE_MEMORY_MANAGEMENT`
//! (`.cargo/config.toml`): with it, all connections share one cache behind
//! one mutex, and the worker threads' reads queued on it for every page.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

use super::keys::KEY_GRANTS_OF_ONE;
use crate::store::keys::KeyGrantRow;
use crate::store::timestamp::Ts;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connections, by the reader they belong to (tests open
    /// many stores in one process); each dies with its reader.
    static CONNECTIONS: RefCell<HashMap<u64, (Weak<()>, Connection)>> =
        RefCell::new(HashMap::new());
}

/// Reads of one database file by whichever thread asks.
#[derive(Debug, Clone)]
pub(super) struct InlineReader {
    id: u64,
    path: PathBuf,
    /// Held by every clone of the store: when the last one goes, the
    /// threads' connections to this file are closed on their next use.
    alive: Arc<()>,
}

impl InlineReader {
    /// A reader of the database file at `path`, or none when there is no
    /// file to open a second connection to (an in-memory database).
    pub(super) fn for_file(path: &Path, in_memory: bool) -> Option<Self> {
        if in_memory {
            return None;
        }
        let path = std::fs::canonicalize(path).ok()?;
        path.is_file().then(|| Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            alive: Arc::new(()),
        })
    }

    /// Keys with their grants (the rows `KEY_GRANTS` reads); `None` when
    /// the read could not run here.
    pub(super) fn key_grants(&self, ids: &[String]) -> Option<Vec<KeyGrantRow>> {
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if !connections.contains_key(&self.id) {
                // Close what belonged to stores that are gone, then open.
                connections.retain(|_, (alive, _)| alive.strong_count() > 0);
                let conn = self.open().map_err(|e| note(&e)).ok()?;
                connections.insert(self.id, (Arc::downgrade(&self.alive), conn));
            }
            let (_, conn) = connections.get(&self.id)?;
            let read = key_grants(conn, ids).map_err(|e| note(&e)).ok();
            if read.is_none() {
                // Start afresh next time rather than keep a connection
                // in an unknown state.
                connections.remove(&self.id);
            }
            read
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Read-write only so that it may use the WAL's shared memory like
        // the pool's connections; it never writes.
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(Duration::ZERO)?;
        Ok(conn)
    }
}

/// Why a read went to the pool instead (the pool reports real errors).
fn note(e: &rusqlite::Error) {
    tracing::debug!(error = %e, "inline SQLite read not taken; reading through the pool");
}

/// Each key on its own: a batch read here waits for nobody, and the
/// statement for one key costs less than the list's (see `KEY_GRANTS_OF_ONE`).
/// A batch's statements share one read transaction: alone, each began and
/// ended its own, taking and dropping the WAL's shared locks (`fcntl` and
/// the shared-memory index) every time — profiled under misses, a sixth
/// of the API's time.
///
/// BEGIN and COMMIT are prepared once per connection: `Transaction` runs
/// them through `execute_batch`, which parses and compiles both every
/// time (under callgrind, 2-3 k instructions per miss). A failed read
/// leaves the transaction open; the caller then drops the connection,
/// which ends it.
fn key_grants(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<KeyGrantRow>> {
    let batch = ids.len() > 1;
    if batch {
        conn.prepare_cached("BEGIN")?.execute([])?;
    }
    let found = each_key_grants(conn, ids)?;
    if batch {
        conn.prepare_cached("COMMIT")?.execute([])?;
    }
    Ok(found)
}

fn each_key_grants(conn: &Connection, ids: &[String]) -> rusqlite::Result<Vec<KeyGrantRow>> {
    let mut statement = conn.prepare_cached(KEY_GRANTS_OF_ONE.sqlite)?;
    let mut found = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        // An id asked twice is read once, as the list statement would.
        if ids[..i].contains(id) {
            continue;
        }
        let rows = statement.query_map([id], grant_row)?;
        for row in rows {
            found.push(row?);
        }
    }
    Ok(found)
}

/// A row of `KEY_GRANTS_OF_ONE`, read by position: by name, each value
/// looked its column up by comparing names, a tenth of the inline read's
/// time under misses. `columns_are_read_by_position` holds the positions
/// to the statement.
fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyGrantRow> {
    Ok(KeyGrantRow {
        key_id: r.get(0)?,
        tenant_id: r.get(1)?,
        secret_hash: r.get(2)?,
        status: r.get(3)?,
        expires_at: r
            .get::<_, Option<i64>>(4)?
            .map(|micros| {
                Utc.timestamp_micros(micros)
                    .single()
                    .map(Ts)
                    .ok_or(rusqlite::Error::IntegralValueOutOfRange(4, micros))
            })
            .transpose()?,
        role_name: r.get(5)?,
        group_name: r.get(6)?,
        privilege: r.get(7)?,
        stream: r.get(8)?,
        position: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupName, KeyId, RoleName, TenantId};
    use crate::privilege::{Privilege, PrivilegeKind, StreamPattern};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{GroupSpec, KeyStore, RbacStore, TenantStore};

    fn list(ids: &[KeyId]) -> Vec<String> {
        ids.iter().map(ToString::to_string).collect()
    }

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        crate::store::Backend::migrate(&store).await.unwrap();
        store
    }

    /// A file database is read on this thread, with the rows the pool
    /// reads: if the inline path fell back every time, this would fail.
    #[tokio::test]
    async fn reads_on_this_thread_what_the_pool_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        // Each write its own change (its own event id).
        let change = crate::testing::change;
        let acme = TenantId::parse("acme").unwrap();
        s.create_tenant(&acme, None, &change()).await.unwrap();
        let role = RoleName::parse("admin").unwrap();
        let admin = vec![Privilege::new(PrivilegeKind::Admin, None)];
        s.put_role(&acme, &role, &admin, &change()).await.unwrap();
        let reader = RoleName::parse("reader").unwrap();
        let read = vec![
            Privilege::new(PrivilegeKind::Reader, None),
            Privilege::new(
                PrivilegeKind::Ingestor,
                Some(StreamPattern::parse("app-*").unwrap()),
            ),
        ];
        s.put_role(&acme, &reader, &read, &change()).await.unwrap();
        let nk = crate::testing::placeholder_new_key(&acme, "ci", std::slice::from_ref(&role));
        s.create_key(&nk, &change()).await.unwrap();
        // Grants through groups too: a key with roles of its own and of a
        // group, and one whose only roles are its group's.
        let both = crate::testing::placeholder_new_key(&acme, "both", &[role]);
        s.create_key(&both, &change()).await.unwrap();
        let grouped = crate::testing::placeholder_new_key(&acme, "grouped", &[]);
        s.create_key(&grouped, &change()).await.unwrap();
        let spec = GroupSpec {
            roles: vec![reader],
            users: vec![],
            api_keys: vec![both.key_id, grouped.key_id],
        };
        let team = GroupName::parse("team").unwrap();
        s.put_group(&acme, &team, &spec, &change()).await.unwrap();

        let ids = list(&[
            nk.key_id,
            KeyId::new(),
            both.key_id,
            nk.key_id,
            grouped.key_id,
        ]);
        let inline = s.inline_key_grants(&ids).expect("read on this thread");
        let pooled: Vec<KeyGrantRow> = sqlx::query_as(super::super::keys::KEY_GRANTS.sqlite)
            .bind(super::super::text_list(ids.clone()))
            .fetch_all(&s.pool)
            .await
            .unwrap();
        let fields = |rows: &[KeyGrantRow]| -> std::collections::BTreeSet<String> {
            rows.iter()
                .map(|r| {
                    format!(
                        "{} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?}",
                        r.key_id,
                        r.tenant_id,
                        r.secret_hash,
                        r.status,
                        r.expires_at,
                        r.role_name,
                        r.group_name,
                        r.privilege,
                        r.stream,
                        r.position
                    )
                })
                .collect()
        };
        // nk: its role's one privilege; both: that and the group role's
        // two; grouped: a row without grants of its own, and the two.
        assert_eq!(inline.len(), 1 + 3 + 3);
        assert_eq!(fields(&inline), fields(&pooled));
    }

    /// The bundled SQLite is built as `.cargo/config.toml` says: page
    /// caches per connection (no shared cache behind one mutex), no
    /// memory statistics (no mutex in every allocation).
    #[test]
    fn sqlite_is_built_without_process_wide_locks() {
        let conn = Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// `grant_row` reads by position what the statement names.
    #[tokio::test]
    async fn columns_are_read_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let _migrated = store(&dir).await;
        let conn = Connection::open(dir.path().join("k.db")).unwrap();
        let statement = conn.prepare(KEY_GRANTS_OF_ONE.sqlite).unwrap();
        let by_position = [
            "key_id",
            "tenant_id",
            "secret_hash",
            "status",
            "expires_at",
            "role_name",
            "group_name",
            "privilege",
            "stream",
            "position",
        ];
        assert_eq!(statement.column_names(), by_position);
    }

    /// A key's read probes the b-trees `key_grants_select` says it does:
    /// its role links and their privileges from covering indexes, its
    /// group links before its key row a second time. SQLite's planner is
    /// free to choose otherwise, so a change of statement, index or SQLite
    /// that loses one of these shows here, not only in a benchmark.
    #[tokio::test]
    async fn a_key_read_probes_only_the_indexes_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let _migrated = store(&dir).await;
        let conn = Connection::open(dir.path().join("k.db")).unwrap();
        let plan = format!("EXPLAIN QUERY PLAN {}", KEY_GRANTS_OF_ONE.sqlite);
        let mut statement = conn.prepare(&plan).unwrap();
        let steps: Vec<String> = statement
            .query_map(["01"], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let searches: Vec<&str> = steps
            .iter()
            .map(String::as_str)
            .filter(|step| step.starts_with("SEARCH") || step.starts_with("SCAN"))
            .collect();
        assert_eq!(
            searches,
            [
                "SEARCH k USING INDEX sqlite_autoindex_api_keys_1 (key_id=?)",
                "SEARCH kr USING COVERING INDEX sqlite_autoindex_api_key_roles_1 (key_id=?) LEFT-JOIN",
                "SEARCH p USING COVERING INDEX role_privileges_covering (tenant_id=? AND role_name=?) LEFT-JOIN",
                "SEARCH gk USING INDEX group_keys_key (key_id=?)",
                "SEARCH k USING INDEX sqlite_autoindex_api_keys_1 (key_id=?)",
                "SEARCH gr USING COVERING INDEX sqlite_autoindex_group_roles_1 (tenant_id=? AND group_name=?)",
                "SEARCH p USING COVERING INDEX role_privileges_covering (tenant_id=? AND role_name=?) LEFT-JOIN",
            ]
        );
    }

    /// What can't be read here is left to the pool, which reports errors.
    #[test]
    fn a_read_that_cannot_run_here_is_left_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-database");
        std::fs::write(&path, b"plain text, no SQLite header here at all").unwrap();
        let reader = InlineReader::for_file(&path, false).unwrap();
        assert!(reader.key_grants(&["01".to_owned()]).is_none());
        assert!(InlineReader::for_file(&dir.path().join("absent"), false).is_none());
        assert!(InlineReader::for_file(&path, true).is_none(), "in memory");
    }
}
