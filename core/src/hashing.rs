//! argon2id hashing of secrets and passwords, always off the async threads.
//!
//! One verify at the default cost (m=19456 KiB, t=2, p=1) takes ~20–25 ms of
//! a core: run on an async worker it would stall every request sharing that
//! thread, so both operations go through `spawn_blocking`.

use std::sync::Arc;
use std::time::Instant;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tracing::Span;

use crate::ids::InvalidValue;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Argon2Settings {
    /// argon2id memory cost in KiB.
    #[arg(
        long = "argon2-memory-kib",
        env = "KEYWARD_ARGON2_MEMORY_KIB",
        default_value_t = 19456
    )]
    pub memory_kib: u32,
    /// argon2id iterations.
    #[arg(
        long = "argon2-iterations",
        env = "KEYWARD_ARGON2_ITERATIONS",
        default_value_t = 2
    )]
    pub iterations: u32,
    /// argon2id lanes.
    #[arg(
        long = "argon2-parallelism",
        env = "KEYWARD_ARGON2_PARALLELISM",
        default_value_t = 1
    )]
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 failed")]
    Argon2(#[source] argon2::password_hash::Error),
    #[error("the stored hash is not a valid PHC string")]
    BadStoredHash(#[source] argon2::password_hash::phc::Error),
    #[error("the hashing task did not complete")]
    Task(#[source] tokio::task::JoinError),
}

/// Hashes and verifies secrets with argon2id on the blocking pool.
#[derive(Clone)]
pub struct SecretHasher {
    argon2: Arc<Argon2<'static>>,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHasher").finish_non_exhaustive()
    }
}

impl SecretHasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, InvalidValue> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|_| InvalidValue::new("argon2", "parameters out of range"))?;
        Ok(Self {
            argon2: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub async fn hash(&self, secret: &str) -> Result<String, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let secret = secret.to_owned();
        run_blocking("hash", move || {
            argon2
                .hash_password(secret.as_bytes())
                .map(|h| h.to_string())
                .map_err(HashError::Argon2)
        })
        .await
    }

    /// Whether `secret` matches the PHC string. The parameters come from
    /// the string itself, so hashes made under older settings still verify.
    pub async fn verify(&self, secret: &str, phc: &str) -> Result<bool, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let (secret, phc) = (secret.to_owned(), phc.to_owned());
        run_blocking("verify", move || verify_sync(&argon2, &secret, &phc)).await
    }
}

fn verify_sync(argon2: &Argon2<'_>, secret: &str, phc: &str) -> Result<bool, HashError> {
    let parsed = argon2::PasswordHash::new(phc).map_err(HashError::BadStoredHash)?;
    match argon2.verify_password(secret.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(HashError::Argon2(e)),
    }
}

/// Runs `f` on the blocking pool inside the caller's span and records how
/// long it took in `keyward_argon2_duration_seconds{op}`.
async fn run_blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, HashError> + Send + 'static,
) -> Result<T, HashError> {
    let span = Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let started = Instant::now();
        let result = f();
        metrics::histogram!("keyward_argon2_duration_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        result
    })
    .await
    .map_err(HashError::Task)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> SecretHasher {
        SecretHasher::new(Argon2Settings {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = cheap();
        let phc = h.hash("s3cret-value").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret-value"));
        assert!(h.verify("s3cret-value", &phc).await.unwrap());
        assert!(!h.verify("s3cret-valuf", &phc).await.unwrap());
    }

    #[tokio::test]
    async fn same_secret_gets_a_new_salt_each_time() {
        let h = cheap();
        assert_ne!(h.hash("x").await.unwrap(), h.hash("x").await.unwrap());
    }

    #[tokio::test]
    async fn old_parameters_still_verify() {
        let old = cheap().hash("pw").await.unwrap();
        let newer = SecretHasher::new(Argon2Settings {
            memory_kib: 512,
            iterations: 2,
            parallelism: 1,
        })
        .unwrap();
        assert!(newer.verify("pw", &old).await.unwrap());
    }

    #[tokio::test]
    async fn garbage_hash_is_an_error_not_a_match() {
        assert!(matches!(
            cheap().verify("pw", "not-a-phc").await,
            Err(HashError::BadStoredHash(_))
        ));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let s = Argon2Settings {
            memory_kib: 1,
            iterations: 0,
            parallelism: 1,
        };
        assert!(SecretHasher::new(s).is_err());
        assert!(SecretHasher::new(Argon2Settings::default()).is_ok());
    }
}
