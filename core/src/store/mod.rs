//! The store: per-aggregate traits, two SQL implementations (SQLite,
//! PostgreSQL).
//!
//! Every method is one unit of work: where a request needs several
//! statements to agree (a key and its roles, a tombstone and its event) the
//! method runs them in one transaction. Integrity is the database's job:
//! foreign keys, unique and partial unique indexes, never a process mutex.
//!
//! # Layout
//!
//! One folder per aggregate — `tenants`, `rbac` (roles, users, groups),
//! `keys`, `outbox`, `ingestors`, `audit` — each with a `mod.rs` (its trait, the row
//! shapes its queries read) and a `sql.rs` (its SQL for both backends).
//! sqlx cannot practically be generic over the database for this many
//! queries (every bound type needs its own higher-ranked bound, and those
//! bounds are not implied), so each backend module compiles every `sql.rs`
//! once with its own concrete types: `sqlite/mod.rs` and `postgres/mod.rs`
//! include them with `#[path]` (and `backend.rs`, the `Backend` impl) and
//! define `SqlStore`, `Conn` and `Pool`.
//! SQLite accepts `$1`-style parameters and `Ts` maps timestamps on both, so
//! most SQL text is shared; a statement whose text differs (claiming with
//! `SKIP LOCKED`, id lists) is a `Dialect`, both texts side by side.

pub mod audit;
pub mod error;
pub mod ingestors;
pub mod keys;
pub mod model;
pub mod outbox;
// Each backend compiles every aggregate's `sql.rs` with its own types (see
// Layout above): loading those files twice is the design.
#[allow(clippy::duplicate_mod)]
mod postgres;
pub mod rbac;
mod rows;
#[allow(clippy::duplicate_mod)]
mod sqlite;
pub mod tenants;
mod timestamp;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DatabaseUrl;

pub use audit::AuditStore;
pub use error::{StoreError, StoreResult};
pub use ingestors::{AppliedReport, IngestorStore};
pub use keys::{KeyChange, KeyChanges, KeyStore};
pub use model::*;
pub use outbox::{OutboxStore, OutboxWakeups, Wakeup};
pub use postgres::{KEYS_CHANNEL, OUTBOX_CHANNEL, PgStore};
pub use rbac::RbacStore;
pub use sqlite::SqliteStore;
pub use tenants::TenantStore;

/// What every store is, whatever it holds: a backend that can be migrated
/// and pinged.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// Applies the embedded migrations not yet applied.
    async fn migrate(&self) -> StoreResult<()>;
    /// Applies the embedded migrations up to `version` only: for tests of
    /// a migration over data written by the versions before it.
    async fn migrate_to(&self, version: i64) -> StoreResult<()>;
    /// One round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// The whole store, as the API uses it. Parts of the system that need one
/// aggregate take that trait alone (the sync worker: `OutboxStore`,
/// `IngestorStore`); an `Arc<dyn Store>` converts to any of them.
pub trait Store:
    TenantStore + RbacStore + KeyStore + OutboxStore + IngestorStore + AuditStore
{
}

impl<T: TenantStore + RbacStore + KeyStore + OutboxStore + IngestorStore + AuditStore> Store for T {}

/// A statement whose SQL text differs by backend, both written side by side.
pub(crate) struct Dialect {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Items per statement that takes its rows as one JSON array (`json_each`
/// on SQLite, `jsonb_array_elements` on PostgreSQL): one statement for many
/// rows, and no statement text beyond a bound.
pub(crate) const JSON_ROWS_PER_STATEMENT: usize = 1000;

/// `items` as one JSON array of `row(item)`, the parameter of such a
/// statement.
pub(crate) fn json_rows<T>(items: &[T], row: impl Fn(&T) -> serde_json::Value) -> String {
    serde_json::Value::from(items.iter().map(row).collect::<Vec<_>>()).to_string()
}

/// Opens the store a URL names and applies the migrations not yet applied:
/// how every binary opens its database. Errors show the URL without its
/// password.
pub async fn open(url: &DatabaseUrl) -> Result<Arc<dyn Store>, OpenError> {
    let store = connect(url).await.map_err(|source| OpenError::Connect {
        url: url.to_string(),
        source,
    })?;
    store.migrate().await.map_err(|source| OpenError::Migrate {
        url: url.to_string(),
        source,
    })?;
    Ok(store)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database {url}")]
    Connect {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot migrate the database {url}")]
    Migrate {
        url: String,
        #[source]
        source: StoreError,
    },
}

/// Opens the store a URL names: `sqlite:` (file, WAL) or `postgres:`
/// (`DatabaseUrl` admits no other scheme).
pub async fn connect(url: &DatabaseUrl) -> StoreResult<Arc<dyn Store>> {
    let url = url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Ok(Arc::new(PgStore::connect(url).await?))
    }
}
