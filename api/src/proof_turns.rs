//! One password proof at a time per credential. Concurrent first requests
//! with the same Basic credentials wait for the first one's proof and are
//! then answered from the remembered proof, instead of each running argon2
//! and each holding a slot of the failed-proof limit while it runs: an
//! admin tool's 16 parallel requests on a cold cache got six `429`s with
//! the right password (issue #17's revocation storm through the API).
//!
//! An entry lives only while a proof of its credential is in flight, so
//! the map is bounded by the requests being served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Credential = blake3::Hash;

#[derive(Default)]
pub struct ProofTurns {
    in_flight: Mutex<HashMap<Credential, Arc<AsyncMutex<()>>>>,
}

/// A credential's turn to be proven; the next waiter's comes when dropped.
pub struct Turn<'a> {
    turns: &'a ProofTurns,
    credential: Credential,
    guard: Option<OwnedMutexGuard<()>>,
}

impl ProofTurns {
    /// Waits until no other request is proving `credential`.
    pub async fn take(&self, credential: Credential) -> Turn<'_> {
        let lock = Arc::clone(
            self.map()
                .entry(credential)
                .or_insert_with(|| Arc::new(AsyncMutex::new(()))),
        );
        Turn {
            turns: self,
            credential,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Credentials with a proof in flight or waiting.
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Credential, Arc<AsyncMutex<()>>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.turns.map();
        // Waiters took their clone under this lock: only the map's own
        // reference left means nobody is waiting.
        if map
            .get(&self.credential)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.credential);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_turn_waits_for_the_first_and_the_map_empties() {
        let turns = Arc::new(ProofTurns::default());
        let credential = blake3::hash(b"admin:pw");
        let first = turns.take(credential).await;
        let second = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move {
                let _turn = turns.take(credential).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        // Another credential is not held up.
        drop(turns.take(blake3::hash(b"ops:pw")).await);
        drop(first);
        second.await.unwrap();
        assert_eq!(turns.in_flight(), 0);
    }
}
