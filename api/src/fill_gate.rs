//! A seam for tests of the caches' concurrency: the next fill that passes
//! an armed gate stops between its store read and its cache insert until
//! the test releases it. So a test can make a change exactly there (hold
//! the fill, revoke, release) instead of hoping for a lucky interleaving.
//! Unarmed, passing costs one atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;

#[derive(Default)]
pub struct FillGate {
    /// Fills that passed: one per store read of this cache.
    passed: AtomicU64,
    armed: AtomicBool,
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// A fill held at the gate.
pub struct Held {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl Held {
    /// Waits until a fill has read the store and stopped.
    pub async fn reached(&mut self) {
        let _ = (&mut self.reached).await;
    }

    /// Lets it go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl FillGate {
    /// Arms the gate for the next fill.
    pub fn hold_next(&self) -> Held {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = Some((reached_tx, release_rx));
        self.armed.store(true, Ordering::Release);
        Held { reached, release }
    }

    /// How many fills have passed (each after one store read), in this
    /// process: what a test counts where a global metric would mix apps.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Acquire)
    }

    pub(crate) async fn pass(&self) {
        self.passed.fetch_add(1, Ordering::AcqRel);
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let taken = self.hold.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.armed.store(false, Ordering::Release);
        if let Some((reached, release)) = taken {
            let _ = reached.send(());
            let _ = release.await;
        }
    }
}

/// One gate per cache, and one before each password proof.
#[derive(Default)]
pub struct FillGates {
    /// Verify cache (keys).
    pub key: FillGate,
    /// Remembered Basic proofs (users).
    pub user: FillGate,
    /// Passed just before each argon2 proof of a Basic password runs,
    /// right or wrong: what tests count as proofs of this app (the
    /// `keyward_argon2_duration_seconds` metric is the process's, shared
    /// by every app a test binary runs).
    pub password: FillGate,
}
