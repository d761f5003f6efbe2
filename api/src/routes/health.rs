//! `/healthz`, `/readyz` and `/metrics` (`keyward_core::ops`, shared by the
//! three binaries): the API is ready while its database answers.

use std::sync::Arc;

use keyward_core::ops::{Readiness, database_answers};
use keyward_core::store::Store;

pub struct DatabaseReadiness(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl Readiness for DatabaseReadiness {
    async fn check(&self) -> Vec<(&'static str, bool)> {
        vec![("database", database_answers(self.0.as_ref()).await)]
    }
}
