//! Tenant SQL, compiled once per backend (see `store/mod.rs`).

use super::SqlStore;
use super::audit::record_in;
use crate::ids::TenantId;
use crate::store::audit::Action;
use crate::store::error::{Violation, on_constraint};
use crate::store::tenants::{TenantRow, TenantStore};
use crate::store::timestamp::Ts;
use crate::store::{Change, StoreError, StoreResult, Tenant};

#[async_trait::async_trait]
impl TenantStore for SqlStore {
    #[tracing::instrument(skip(self))]
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: Option<&str>,
        change: &Change,
    ) -> StoreResult<Tenant> {
        let now = change.at;
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(name)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await
            .map_err(on_constraint(|v| {
                (v == Violation::Unique).then_some(StoreError::TenantExists)
            }))?;
        record_in(&mut tx, change, id, Action::TenantCreate, id.as_str(), None).await?;
        tx.commit().await?;
        Ok(Tenant {
            id: id.clone(),
            name: name.map(str::to_owned),
            created_at: now,
        })
    }

    #[tracing::instrument(skip(self))]
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows: Vec<TenantRow> =
            sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn tenant_exists(&self, id: &TenantId) -> StoreResult<bool> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}
