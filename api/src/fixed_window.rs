//! Fixed-window counters per key (a username, a client address): at most
//! `limit` slots in a window that starts at the key's first slot. Windows
//! are forgotten when they end, and at most 100,000 keys are held, so a
//! flood of made-up keys costs bounded memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Slots taken in one window.
struct Window {
    started: Instant,
    used: AtomicU32,
}

pub struct Counter {
    windows: Cache<String, Arc<Window>>,
    limit: u32,
    window: Duration,
}

/// A slot taken: it counts unless given back.
#[must_use]
pub struct Slot(Arc<Window>);

impl Slot {
    pub fn give_back(self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Counter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            windows: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            limit,
            window,
        }
    }

    /// Takes a slot of `key`'s window, or says how long until it ends.
    pub fn take(&self, key: &str) -> Result<Slot, Duration> {
        let window = self.windows.get_with_by_ref(key, || {
            Arc::new(Window {
                started: Instant::now(),
                used: AtomicU32::new(0),
            })
        });
        let taken = window
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(window)),
            Err(_) => Err(self.window.saturating_sub(window.started.elapsed())),
        }
    }
}
