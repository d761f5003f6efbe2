//! Audit SQL, compiled once per backend (see `store/mod.rs`).

use super::{Conn, SqlStore};
use crate::ids::{AuditId, EventId, TenantId};
use crate::store::audit::{Action, AuditQuery, AuditRecord, AuditRow, AuditStore, DeniedAttempt};
use crate::store::timestamp::Ts;
use crate::store::{Change, StoreResult, Timestamp};

const INSERT: &str = "INSERT INTO audit_records (id, at, tenant_id, actor, action, target, \
                                                 outcome, request_id, event_id) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// The record of a successful change, written on the change's own
/// transaction: it commits or rolls back with the change.
pub(super) async fn record_in(
    conn: &mut Conn,
    change: &Change,
    tenant: &TenantId,
    action: Action,
    target: &str,
    event: Option<EventId>,
) -> StoreResult<()> {
    sqlx::query(INSERT)
        .bind(AuditId::new().to_string())
        .bind(Ts(change.at))
        .bind(tenant.as_str())
        .bind(&change.actor)
        .bind(action.as_str())
        .bind(target)
        .bind(crate::store::audit::Outcome::Ok.as_str())
        .bind(&change.request_id)
        .bind(event.map(|e| e.to_string()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl AuditStore for SqlStore {
    #[tracing::instrument(skip(self, record), fields(action = record.action.as_str()))]
    async fn record_denied(&self, record: &DeniedAttempt) -> StoreResult<()> {
        sqlx::query(INSERT)
            .bind(AuditId::new().to_string())
            .bind(Ts(record.at))
            .bind(record.tenant_id.as_str())
            .bind(&record.actor)
            .bind(record.action.as_str())
            .bind(&record.target)
            .bind(crate::store::audit::Outcome::Denied.as_str())
            .bind(&record.request_id)
            .bind(None::<String>)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, at, tenant_id, actor, action, target, outcome, request_id, event_id \
             FROM audit_records \
             WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR action = $2) \
               AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
        )
        .bind(query.tenant.as_ref().map(TenantId::as_str))
        .bind(query.action.map(Action::as_str))
        .bind(query.actor.as_deref())
        .bind(query.before.map(|id| id.to_string()))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    #[tracing::instrument(skip(self))]
    async fn purge_audit(&self, before: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_records WHERE at < $1")
            .bind(Ts(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
