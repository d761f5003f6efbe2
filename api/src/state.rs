//! What every handler shares.

use std::sync::Arc;

use keyward_core::password::PasswordHasher;
use keyward_core::store::Store;
use keyward_core::token::KeyPrefix;

use crate::generations::Generations;
use crate::verify::VerifyService;
use crate::verify_cache::ProvenPasswords;

pub struct AppState {
    pub store: Arc<dyn Store>,
    /// argon2id for user passwords, on its bounded pool.
    pub passwords: PasswordHasher,
    /// Users whose password was proven recently (Basic auth), keyed by a
    /// digest under `proof_key`, random per process.
    pub proven: ProvenPasswords,
    pub proof_key: [u8; 32],
    /// Proofs in flight, one per credential.
    pub proof_turns: crate::proof_turns::ProofTurns,
    /// Failed Basic proofs per username and per client address.
    pub failed_proofs: crate::failed_proofs::FailedProofs,
    /// Refusals audited per client address (`denied`).
    pub denied_audit: crate::fixed_window::Counter,
    /// Bumped after every change a cached answer may depend on.
    pub generations: Arc<Generations>,
    pub gates: Arc<crate::fill_gate::FillGates>,
    pub key_prefix: KeyPrefix,
    /// A hash of a random secret, verified against when a username is
    /// unknown, so a wrong username costs the same time as a wrong password.
    pub dummy_hash: String,
    pub verifier: Arc<VerifyService>,
    /// An ingestor whose last heartbeat is newer is live.
    pub ingestor_liveness: std::time::Duration,
}
