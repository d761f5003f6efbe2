//! Tenants: the namespaces every key, role, user and group belongs to.
//! SQL: `sql.rs`.

use async_trait::async_trait;
use sqlx::FromRow;

use super::rows::tenant;
use super::timestamp::Ts;
use super::{Backend, Change, StoreError, StoreResult, Tenant};
use crate::ids::TenantId;

#[async_trait]
pub trait TenantStore: Backend {
    /// `TenantExists` if the id is taken.
    async fn create_tenant(
        &self,
        id: &TenantId,
        name: Option<&str>,
        change: &Change,
    ) -> StoreResult<Tenant>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    async fn tenant_exists(&self, id: &TenantId) -> StoreResult<bool>;
}

#[derive(FromRow)]
pub(crate) struct TenantRow {
    pub id: String,
    pub name: Option<String>,
    pub created_at: Ts,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(r: TenantRow) -> StoreResult<Self> {
        Ok(Tenant {
            id: tenant(&r.id)?,
            name: r.name,
            created_at: r.created_at.0,
        })
    }
}
