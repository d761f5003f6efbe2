//! argon2id for user passwords, on a bounded pool, never on an async thread.
//!
//! One proof at the default cost (m=19456 KiB, t=2, p=1) takes ~20–25 ms of
//! a core and 19 MiB of memory. Run on an async worker it would stall every
//! request sharing that thread; run unbounded on `spawn_blocking`, a burst of
//! Basic requests (no valid credentials needed: an unknown username costs a
//! dummy proof) becomes hundreds of threads and gigabytes. So at most
//! `threads` proofs run at once, at most `queue` wait, and past that the
//! caller is told [`HashError::Busy`] (the API answers `503` +
//! `Retry-After`). API keys do not come here: see [`crate::digest`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use tokio::sync::Semaphore;
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
    /// Password proofs running at once; 0 means one per core.
    #[arg(
        long = "argon2-threads",
        env = "KEYWARD_ARGON2_THREADS",
        default_value_t = 0
    )]
    pub threads: usize,
    /// Password proofs that may wait for a thread; past that a request is
    /// answered `503 unavailable` at once.
    #[arg(
        long = "argon2-queue",
        env = "KEYWARD_ARGON2_QUEUE",
        default_value_t = 32
    )]
    pub queue: usize,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            threads: 0,
            queue: 32,
        }
    }
}

impl Argon2Settings {
    /// Tiny parameters for tests, which are about behaviour, not cost.
    pub fn cheap() -> Self {
        Self {
            memory_kib: 256,
            iterations: 1,
            ..Self::default()
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
    #[error("every password thread is busy and the queue is full")]
    Busy,
}

/// Hashes and verifies passwords with argon2id on a bounded pool.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Arc<Argon2<'static>>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, InvalidValue> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|_| InvalidValue::new("argon2", "parameters out of range"))?;
        let threads = match settings.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Ok(Self {
            argon2: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            pool: Arc::new(Pool {
                running: Arc::new(Semaphore::new(threads)),
                admitted: AtomicUsize::new(0),
                limit: threads + settings.queue,
            }),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let password = password.to_owned();
        self.pool
            .run("hash", move || {
                argon2
                    .hash_password(password.as_bytes())
                    .map(|h| h.to_string())
                    .map_err(HashError::Argon2)
            })
            .await
    }

    /// Whether `password` matches the PHC string. The parameters come from
    /// the string itself, so hashes made under older settings still verify.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let argon2 = Arc::clone(&self.argon2);
        let (password, phc) = (password.to_owned(), phc.to_owned());
        self.pool
            .run("verify", move || verify_sync(&argon2, &password, &phc))
            .await
    }

    /// Proofs running or waiting now.
    pub fn in_use(&self) -> usize {
        self.pool.admitted.load(Ordering::Acquire)
    }
}

/// At most `running` proofs at once on the blocking pool, at most `limit`
/// admitted (running + waiting). Waiting costs a parked future, not a thread.
struct Pool {
    running: Arc<Semaphore>,
    admitted: AtomicUsize,
    limit: usize,
}

/// Gives an admission back however the caller's future ends.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// Runs `f` on the blocking pool inside the caller's span once a thread
    /// is free, and records how long it took in
    /// `keyward_argon2_duration_seconds{op}`.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("keyward_argon2_rejected_total").increment(1);
            return Err(HashError::Busy);
        }
        let _admitted = Admitted(&self.admitted);
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| HashError::Busy)?;
        let span = Span::current();
        // The permit moves into the task: if the caller goes away, the
        // thread is still busy until the proof ends, and so is the slot.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
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
}

fn verify_sync(argon2: &Argon2<'_>, secret: &str, phc: &str) -> Result<bool, HashError> {
    let parsed = argon2::PasswordHash::new(phc).map_err(HashError::BadStoredHash)?;
    match argon2.verify_password(secret.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(HashError::Argon2(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Settings::cheap()).unwrap()
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let h = cheap();
        let phc = h.hash("s3cret-value").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret-value"));
        assert!(h.verify("s3cret-value", &phc).await.unwrap());
        assert!(!h.verify("s3cret-valuf", &phc).await.unwrap());
        assert_eq!(h.in_use(), 0, "every admission given back");
    }

    #[tokio::test]
    async fn same_secret_gets_a_new_salt_each_time() {
        let h = cheap();
        assert_ne!(h.hash("x").await.unwrap(), h.hash("x").await.unwrap());
    }

    #[tokio::test]
    async fn old_parameters_still_verify() {
        let old = cheap().hash("pw").await.unwrap();
        let newer = PasswordHasher::new(Argon2Settings {
            memory_kib: 512,
            iterations: 2,
            ..Argon2Settings::default()
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
            ..Argon2Settings::default()
        };
        assert!(PasswordHasher::new(s).is_err());
        assert!(PasswordHasher::new(Argon2Settings::default()).is_ok());
    }

    /// One thread, one waiting place: a third proof is refused at once,
    /// and the pool serves again when the first two are done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_instead_of_piling_up() {
        let h = PasswordHasher::new(Argon2Settings {
            memory_kib: 19456,
            iterations: 2,
            threads: 1,
            queue: 1,
            ..Argon2Settings::default()
        })
        .unwrap();
        let phc = h.hash("pw").await.unwrap();
        let (a, b) = (h.clone(), h.clone());
        let (pa, pb) = (phc.clone(), phc.clone());
        let first = tokio::spawn(async move { a.verify("pw", &pa).await });
        let second = tokio::spawn(async move { b.verify("pw", &pb).await });
        while h.in_use() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(h.verify("pw", &phc).await, Err(HashError::Busy)));
        assert!(first.await.unwrap().unwrap());
        assert!(second.await.unwrap().unwrap());
        assert_eq!(h.in_use(), 0);
        assert!(h.verify("pw", &phc).await.unwrap());
    }
}
