//! What every handler shares.

use std::sync::Arc;

use keyward_core::hashing::SecretHasher;
use keyward_core::store::Store;
use keyward_core::token::KeyPrefix;

use crate::verify::Verifier;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hasher: SecretHasher,
    pub key_prefix: KeyPrefix,
    /// A hash of a random secret, verified against when a username is
    /// unknown, so a wrong username costs the same time as a wrong password.
    pub dummy_hash: String,
    pub verifier: Arc<Verifier>,
    /// An ingestor whose last heartbeat is newer is live.
    pub ingestor_liveness: std::time::Duration,
}
