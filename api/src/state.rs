//! What every handler shares.

use std::sync::Arc;

use keyward_core::hashing::SecretHasher;
use keyward_core::store::Store;
use keyward_core::token::KeyPrefix;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub hasher: SecretHasher,
    pub key_prefix: KeyPrefix,
}
