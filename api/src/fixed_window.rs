//! Fixed-window counters per key (a username, a client address): at most
//! `limit` slots in a window that starts at the key's first slot. A window
//! that ended counts nothing: the key's next slot starts a new one. At most
//! 100,000 keys are held (keys seen once leave first), so a flood of
//! made-up keys costs bounded memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Keys are chosen by clients: SipHash, seeded at random, keeps them from
/// piling up in one bucket.
type Cache = quick_cache::sync::Cache<
    String,
    Arc<Window>,
    quick_cache::UnitWeighter,
    std::hash::RandomState,
>;

/// Keys held at most.
const KEYS: usize = 100_000;

/// Slots taken in one window.
struct Window {
    started: Instant,
    used: AtomicU32,
}

pub struct Counter {
    windows: Cache,
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
            windows: Cache::with(
                KEYS,
                KEYS as u64,
                quick_cache::UnitWeighter,
                std::hash::RandomState::new(),
                Default::default(),
            ),
            limit,
            window,
        }
    }

    /// Takes a slot of `key`'s window, or says how long until it ends.
    pub fn take(&self, key: &str) -> Result<Slot, Duration> {
        let window = self.current_window(key);
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

    /// `key`'s window, a new one if it had none or its window ended. One
    /// window at a time: a concurrent caller that finds none waits for the
    /// one being made, and an ended window is removed only if it is still
    /// the one in place.
    fn current_window(&self, key: &str) -> Arc<Window> {
        loop {
            let Ok(window) = self.windows.get_or_insert_with(key, || {
                Ok::<_, Infallible>(Arc::new(Window {
                    started: Instant::now(),
                    used: AtomicU32::new(0),
                }))
            });
            if window.started.elapsed() < self.window {
                return window;
            }
            self.retire(key, &window);
        }
    }

    /// Removes `key`'s ended window, unless another caller has replaced it
    /// meanwhile: removing that one would hand out its slots again.
    fn retire(&self, key: &str, ended: &Arc<Window>) {
        self.windows.remove_if(key, |held| Arc::ptr_eq(held, ended));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails when `retire` removes whatever window the key holds (checked
    /// by making it a plain `remove`).
    #[test]
    fn a_late_retirement_leaves_the_new_window_in_place() {
        let window = Duration::from_secs(60);
        let counter = Counter::new(1, window);
        let started = Instant::now().checked_sub(window + Duration::from_secs(1));
        counter.windows.insert(
            "x".into(),
            Arc::new(Window {
                started: started.expect("a monotonic clock over a minute old"),
                used: AtomicU32::new(1),
            }),
        );
        // A caller that found the window after it ended...
        let ended = counter.windows.get("x").unwrap();
        // ...is overtaken by one that replaces it and takes its slot...
        drop(counter.take("x").unwrap());
        // ...then retires the window it found: the new one stays full.
        counter.retire("x", &ended);
        assert!(
            counter.take("x").is_err(),
            "the new window's slot was handed out again"
        );
    }
}
