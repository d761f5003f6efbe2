//! The outbox: events written in the same transaction as the change they
//! announce, claimed by sync workers under a lease, published, retried with
//! backoff or dead-lettered, and purged once old. SQL: `sql.rs` (claiming,
//! marking and releasing differ by backend and sit there side by side).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::FromRow;

use super::rows::{key_id, parse, tenant};
use super::timestamp::Ts;
use super::{
    ApiKey, Backend, Change, EventProgress, EventStatus, OutboxEvent, OutboxStats, Purged,
    StoreError, StoreResult, Timestamp, TypeBacklog,
};
use crate::ids::{EventId, KeyId, TenantId};

#[async_trait]
pub trait OutboxStore: Backend {
    /// A feed that fires when an event is committed to the outbox
    /// (PostgreSQL `LISTEN keyward_outbox`); `None` where workers must poll.
    async fn outbox_wakeups(&self) -> StoreResult<Option<Box<dyn OutboxWakeups>>>;
    /// Leases up to `batch` due events to `owner` until `now + lease`.
    async fn claim_events(
        &self,
        owner: &str,
        lease: Duration,
        batch: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<OutboxEvent>>;
    /// Marks events confirmed by the broker and clears their lease;
    /// `sent_at` (when they were sent, before their confirms) is their
    /// `published_at`. Also snapshots how many ingestors were live (seen
    /// since `live_since`) and receiving (first seen by `sent_at`).
    async fn mark_published(
        &self,
        ids: &[i64],
        sent_at: Timestamp,
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
        change: &Change,
    ) -> StoreResult<ApiKey>;
    /// Puts every dead event back in the outbox; returns how many.
    async fn retry_all_dead(&self, now: Timestamp) -> StoreResult<u64>;
    /// Deletes published events (and their `applied` reports) published
    /// before `before`. Undelivered and dead rows are kept whatever their age.
    async fn purge(&self, before: Timestamp) -> StoreResult<Purged>;
    async fn outbox_stats(&self) -> StoreResult<OutboxStats>;
    /// Undelivered events by type: pending and dead (for the operator's
    /// `outbox status`; reads every undelivered row, so not for a gauge).
    async fn outbox_backlog_by_type(&self) -> StoreResult<Vec<TypeBacklog>>;
    /// One event with its delivery state; `None` if there is none by that
    /// id, or it was purged (published before the retention).
    async fn event_status(&self, event_id: EventId) -> StoreResult<Option<EventStatus>>;
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

#[derive(FromRow)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    pub tenant_id: String,
    pub key_id: Option<String>,
    pub created_at: Ts,
    pub attempts: i32,
}

impl TryFrom<OutboxRow> for OutboxEvent {
    type Error = StoreError;
    fn try_from(r: OutboxRow) -> StoreResult<Self> {
        Ok(OutboxEvent {
            id: r.id,
            event_id: parse("event id", &r.event_id, EventId::parse)?,
            kind: r.kind,
            tenant_id: tenant(&r.tenant_id)?,
            key_id: r.key_id.as_deref().map(key_id).transpose()?,
            created_at: r.created_at.0,
            attempts: r.attempts,
        })
    }
}

/// An event's row with its `applied` reports counted.
#[derive(FromRow)]
pub(crate) struct EventStatusRow {
    pub event_id: String,
    pub kind: String,
    pub tenant_id: String,
    pub key_id: Option<String>,
    pub created_at: Ts,
    pub attempts: i32,
    pub published_at: Option<Ts>,
    pub dead_at: Option<Ts>,
    pub last_error: Option<String>,
    pub live_ingestors: Option<i64>,
    pub applied_by: i64,
}

impl TryFrom<EventStatusRow> for EventStatus {
    type Error = StoreError;
    fn try_from(r: EventStatusRow) -> StoreResult<Self> {
        let progress = EventProgress {
            in_outbox: true,
            published: r.published_at.is_some(),
            dead: r.dead_at.is_some(),
            applied_by: r.applied_by,
            live_ingestors: r.live_ingestors.unwrap_or(0),
        };
        Ok(EventStatus {
            event_id: parse("event id", &r.event_id, EventId::parse)?,
            kind: r.kind,
            tenant_id: tenant(&r.tenant_id)?,
            key_id: r.key_id.as_deref().map(key_id).transpose()?,
            created_at: r.created_at.0,
            state: progress.state(),
            attempts: r.attempts,
            published_at: r.published_at.map(|t| t.0),
            applied_by: r.applied_by,
            ingestors: progress.live_ingestors,
            last_error: r.last_error,
        })
    }
}
