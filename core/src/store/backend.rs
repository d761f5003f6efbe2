//! What every store is (`Backend`), compiled once per backend like the
//! aggregates' `sql.rs` (see `store/mod.rs`): `NAME` and `MIGRATOR` come
//! from the including backend module.

use super::{MIGRATOR, NAME, SqlStore};
use crate::store::{Backend, StoreResult};

#[async_trait::async_trait]
impl Backend for SqlStore {
    fn backend(&self) -> &'static str {
        NAME
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn migrate_to(&self, version: i64) -> StoreResult<()> {
        let migrations: Vec<_> = MIGRATOR
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect();
        let migrator = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(migrations),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
