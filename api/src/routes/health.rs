//! `/healthz`, `/readyz` and `/metrics` (`keyward_core::ops`, shared by the
//! three binaries): the API is ready while its database answers.

use std::sync::Arc;

use keyward_core::ops::Readiness;
use keyward_core::store::{Store, error::chain};

pub struct DatabaseReadiness(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl Readiness for DatabaseReadiness {
    async fn check(&self) -> Vec<(&'static str, bool)> {
        let database = match self.0.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "readiness: the database does not answer");
                false
            }
        };
        vec![("database", database)]
    }
}
