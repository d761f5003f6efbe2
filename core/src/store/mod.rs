//! The store: one trait, two SQL implementations (SQLite, PostgreSQL).
//!
//! Every method is one unit of work: where a request needs several
//! statements to agree (a key and its roles, a tombstone and its event) the
//! method runs them in one transaction. Integrity is the database's job:
//! foreign keys, unique and partial unique indexes, never a process mutex.

mod common;
pub mod error;
pub mod model;
mod postgres;
mod rows;
mod sqlite;
mod timestamp;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::{StoreError, StoreResult};
pub use model::*;
pub use postgres::{KEYS_CHANNEL, OUTBOX_CHANNEL, PgStore};
pub use sqlite::SqliteStore;

use crate::ids::{EventId, GroupName, KeyId, RoleName, TenantId, Username};
use crate::privilege::Privilege;
use crate::rbac::RoleGrant;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// Applies the embedded migrations not yet applied.
    async fn migrate(&self) -> StoreResult<()>;
    /// One round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// A feed of cached-verification invalidations from other replicas
    /// (PostgreSQL `LISTEN keyward_keys`); `None` where there are none to
    /// hear (SQLite: one process owns the file).
    async fn key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>>;
    /// A feed that fires when an event is committed to the outbox
    /// (PostgreSQL `LISTEN keyward_outbox`); `None` where workers must poll.
    async fn outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>>;

    // ---- tenants
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Tenant>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn tenant_exists(&self, id: &TenantId) -> StoreResult<bool>;

    // ---- roles
    /// Creates or replaces a role; `true` when it was created.
    async fn put_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        privileges: &[Privilege],
        now: Timestamp,
    ) -> StoreResult<(Role, bool)>;
    async fn get_role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Role>;
    async fn list_roles(&self, tenant: &TenantId) -> StoreResult<Vec<Role>>;
    /// Fails with `RoleInUse` while a user, key or group holds the role.
    async fn delete_role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<()>;

    // ---- users
    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;
    /// Creates `user` only if the service has no user at all; `true` if it did.
    async fn bootstrap_user(&self, user: &NewUser) -> StoreResult<bool>;
    async fn get_user(&self, tenant: &TenantId, username: &Username) -> StoreResult<User>;
    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>>;
    async fn set_user_roles(
        &self,
        tenant: &TenantId,
        username: &Username,
        roles: &[RoleName],
    ) -> StoreResult<User>;
    async fn delete_user(&self, tenant: &TenantId, username: &Username) -> StoreResult<()>;
    /// For authentication only: usernames are unique across tenants.
    async fn user_credentials(&self, username: &Username) -> StoreResult<Option<UserCredentials>>;
    /// The user's role grants as they are now: direct and through groups.
    async fn user_grants(
        &self,
        tenant: &TenantId,
        username: &Username,
    ) -> StoreResult<Vec<RoleGrant>>;

    // ---- groups
    /// Creates or replaces a group; `true` when it was created.
    async fn put_group(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        spec: &GroupSpec,
        now: Timestamp,
    ) -> StoreResult<(Group, bool)>;
    async fn get_group(&self, tenant: &TenantId, name: &GroupName) -> StoreResult<Group>;
    async fn list_groups(&self, tenant: &TenantId) -> StoreResult<Vec<Group>>;
    async fn delete_group(&self, tenant: &TenantId, name: &GroupName) -> StoreResult<()>;

    // ---- keys
    /// Inserts the key and its roles in one transaction (`UnknownRoles`,
    /// `DuplicateKeyName`, `TenantNotFound`).
    async fn create_key(&self, key: &NewApiKey, now: Timestamp) -> StoreResult<ApiKey>;
    async fn get_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        now: Timestamp,
    ) -> StoreResult<ApiKey>;
    async fn list_keys(
        &self,
        tenant: &TenantId,
        query: &KeyQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<ApiKey>>;
    /// By primary key alone, for verification; includes the key's grants.
    async fn key_credentials(&self, key_id: KeyId) -> StoreResult<Option<KeyCredentials>>;
    /// The same for many keys in one statement (concurrent cache misses of
    /// different keys share it); keys that do not exist are left out.
    async fn key_credentials_many(&self, ids: &[KeyId]) -> StoreResult<Vec<KeyCredentials>>;
    /// Replaces a key's stored secret hash if it is still `old_hash`
    /// (an argon2id PHC string rewritten as its SHA-256 digest after a
    /// successful proof); `true` when it did.
    async fn upgrade_key_hash(
        &self,
        key_id: KeyId,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool>;
    /// Tombstone and `key.revoked` event in one transaction. Idempotent: a
    /// key already revoked is returned as is, and no second event written.
    async fn revoke_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        revoked_by: &str,
        event_id: EventId,
        now: Timestamp,
    ) -> StoreResult<Revoked>;
    /// Records last use for many keys in one transaction (the verify path
    /// batches them in memory first). Never moves `last_used_at` backwards.
    async fn record_key_usage(&self, used: &[(KeyId, Timestamp)]) -> StoreResult<u64>;

    // ---- outbox
    /// Leases up to `batch` due events to `owner` until `now + lease`.
    async fn claim_events(
        &self,
        owner: &str,
        lease: Duration,
        batch: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>>;
    /// Marks events confirmed by the broker and clears their lease. Also
    /// snapshots how many ingestors were live (seen since `live_since`).
    async fn mark_published(
        &self,
        ids: &[i64],
        now: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64>;
    /// Counts a failed attempt and schedules the next one, if `owner` still
    /// holds the lease. `last_error` must be a client-safe phrase.
    async fn schedule_retry(
        &self,
        owner: &str,
        id: i64,
        next_attempt_at: Timestamp,
        last_error: &str,
    ) -> StoreResult<bool>;
    /// Gives up on an event (dead-letters it), if `owner` holds the lease.
    async fn mark_dead(
        &self,
        owner: &str,
        id: i64,
        last_error: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Hands leases back unchanged (graceful shutdown).
    async fn release_leases(&self, owner: &str, ids: &[i64]) -> StoreResult<u64>;
    /// Puts one key's dead revocation back in the outbox (`InvalidState`
    /// unless it is dead; `KeyNotFound` if the key has no revocation).
    async fn retry_revocation(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        now: Timestamp,
    ) -> StoreResult<ApiKey>;
    /// Puts every dead event back in the outbox; returns how many.
    async fn retry_all_dead(&self, now: Timestamp) -> StoreResult<u64>;
    /// Deletes published events (and their acks) published before `before`.
    /// Undelivered and dead rows are kept whatever their age.
    async fn purge(&self, before: Timestamp) -> StoreResult<Purged>;
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;

    // ---- ingestors and acks
    async fn ingestor_heartbeat(&self, id: &str, queue: &str, at: Timestamp) -> StoreResult<()>;
    async fn list_ingestors(&self) -> StoreResult<Vec<IngestorRecord>>;
    /// Idempotent: the same ack twice is one ack. An ack for an event the
    /// outbox no longer holds is ignored. `true` when it was new.
    async fn record_ack(
        &self,
        event_id: EventId,
        ingestor_id: &str,
        applied_at: Timestamp,
    ) -> StoreResult<bool>;
}

/// What another replica says must be dropped from verification caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Key(KeyId),
    Tenant(TenantId),
    /// A user's roles changed or the user was deleted.
    User(Username),
    /// The feed lost its connection: anything may have been missed.
    Lost,
}

#[async_trait]
pub trait KeyChanges: Send {
    /// The next change; `Err` only when the feed cannot go on.
    async fn next(&mut self) -> StoreResult<KeyChange>;
}

/// What wakes a sync worker before its poll interval is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// An event was committed.
    Committed,
    /// The feed lost its connection: events may have been committed unheard.
    Lost,
}

#[async_trait]
pub trait OutboxWakeups: Send {
    /// The next wake-up; `Err` only when the feed cannot go on.
    async fn next(&mut self) -> StoreResult<Wakeup>;
}

/// Opens the store a URL names: `sqlite:` (file, WAL) or `postgres:`
/// (`DatabaseUrl` admits no other scheme).
pub async fn connect(url: &crate::config::DatabaseUrl) -> StoreResult<Arc<dyn Store>> {
    let url = url.as_str();
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Ok(Arc::new(PgStore::connect(url).await?))
    }
}
