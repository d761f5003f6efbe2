//! Single flight: concurrent callers asking for the same key share one
//! piece of work (a store read at the API, a verify call at an ingestor)
//! instead of each doing it. A cold cache under full load then costs one
//! read per key, not one per request.
//!
//! The work runs as long as any caller still waits for it; the first
//! caller to finish removes the flight, so the next caller starts anew
//! (a flight never serves an answer older than its own start).
//!
//! The flights are kept in shards (`Sharded`): every miss takes a lock
//! twice, from whichever worker thread it runs on, and one lock for all
//! keys was a cache line both threads wrote on every miss.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use foldhash::quality::RandomState;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::sharded::Sharded;

type Flights<K, V> = HashMap<K, Shared<BoxFuture<'static, V>>, RandomState>;

pub struct SingleFlight<K, V: Clone> {
    flights: Sharded<Flights<K, V>>,
}

impl<K, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Sharded::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone + Send + Sync + 'static> SingleFlight<K, V> {
    /// The result of the flight for `key`: the one in the air, or a new one
    /// made by `work` (called only when this caller leads).
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> V
    where
        F: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut flights = self.flights.lock(&key);
            flights
                .entry(key.clone())
                .or_insert_with(|| work().boxed().shared())
                .clone()
        };
        let value = flight.clone().await;
        let mut flights = self.flights.lock(&key);
        // Only this flight: a newer one under the same key stays.
        if flights.get(&key).is_some_and(|f| f.ptr_eq(&flight)) {
            flights.remove(&key);
        }
        value
    }

    /// Flights in the air now.
    pub fn len(&self) -> usize {
        self.flights.each().map(|f| f.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let joined = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (flights, runs, mut gate) = (Arc::clone(&flights), Arc::clone(&runs), gate.clone());
            let joined = Arc::clone(&joined);
            tasks.push(tokio::spawn(async move {
                // One thread: nothing runs between this and the join below.
                joined.fetch_add(1, Ordering::SeqCst);
                flights
                    .run(7, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        42
                    })
                    .await
            }));
        }
        while joined.load(Ordering::SeqCst) < 64 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty(), "the flight is gone once answered");
        // The next caller flies anew.
        assert_eq!(flights.run(7, || async { 43 }).await, 43);
    }

    /// Keys in every shard: each key's callers share its one run, and
    /// every flight is gone once answered.
    #[tokio::test]
    async fn many_keys_each_share_one_run() {
        const KEYS: u32 = 200;
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let runs: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let joined = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for caller in 0..KEYS * 3 {
            let key = caller % KEYS;
            let (flights, runs, mut gate) = (Arc::clone(&flights), Arc::clone(&runs), gate.clone());
            let joined = Arc::clone(&joined);
            tasks.push(tokio::spawn(async move {
                // One thread: nothing runs between this and the join below.
                joined.fetch_add(1, Ordering::SeqCst);
                flights
                    .run(key, || async move {
                        runs[key as usize].fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        key * 2
                    })
                    .await
            }));
        }
        while joined.load(Ordering::SeqCst) < (KEYS * 3) as usize {
            tokio::task::yield_now().await;
        }
        assert_eq!(flights.len(), KEYS as usize);
        release.send(true).unwrap();
        for (caller, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), (caller as u32 % KEYS) * 2);
        }
        assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
        assert!(flights.is_empty(), "every flight is gone once answered");
    }

    #[tokio::test]
    async fn keys_fly_apart() {
        let flights = SingleFlight::<u32, u32>::default();
        let (a, b) = tokio::join!(
            flights.run(1, || async { 1 }),
            flights.run(2, || async { 2 })
        );
        assert_eq!((a, b), (1, 2));
    }
}
