//! How long a verify cache lookup can wait while the cache frees its stale
//! entries (`GuardedCache::drop_stale`, every 10 s in the API). Rerun:
//! `cargo bench -p keyward-api --bench cache_sweep`.
//!
//! The default capacity (100,000 keys) filled and left past its TTL; one
//! thread looks keys up as requests do while another sweeps, next to the
//! same lookups with no sweep; three rounds of each. In-process, because
//! what it measures is how long the sweep holds a shard's lock, which load
//! from outside sees only as one p99 among others.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keyward_api::generations::Generations;
use keyward_api::verify_cache::{Filled, KeyCache, KeyEntry, KeyState};
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, TenantId};
use keyward_core::rbac::Permissions;
use keyward_tests::bench::quantile;

/// As in `keyward-api`'s main: what a sweep frees is freed by this.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `KEYWARD_VERIFY_CACHE_CAPACITY`'s default.
const KEYS: usize = 100_000;
const TTL: Duration = Duration::from_millis(1);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("| lookups of a full verify cache while | took | lookups | p99.9 | longest |");
    println!("| --- | --- | --- | --- | --- |");
    for sweeping in [false, true, false, true, false, true] {
        round(sweeping);
    }
}

fn round(sweeping: bool) {
    let generations = Arc::new(Generations::default());
    let cache = Arc::new(KeyCache::new(KEYS as u64, TTL, Arc::clone(&generations)));
    let permissions = Arc::new(Permissions::from_grants(
        TenantId::parse("bench").unwrap(),
        [],
    ));
    let ids: Arc<Vec<KeyId>> = Arc::new((0..KEYS).map(|_| KeyId::new()).collect());
    for id in ids.iter() {
        let entry = Filled {
            value: KeyEntry {
                digest: KeyDigest::of(&id.to_string()),
                state: KeyState::new(true, None, Arc::clone(&permissions)),
            },
            filled: generations.snapshot(),
        };
        cache.insert(*id, Arc::new(entry));
    }
    std::thread::sleep(TTL * 5);
    let stop = Arc::new(AtomicBool::new(false));
    let looking = {
        let (cache, ids, stop) = (Arc::clone(&cache), Arc::clone(&ids), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut waits = Vec::with_capacity(4_000_000);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                std::hint::black_box(cache.get(&ids[i % ids.len()]));
                waits.push(started.elapsed());
                i += 7_919;
            }
            waits
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    if sweeping {
        cache.drop_stale();
    } else {
        std::thread::sleep(Duration::from_millis(30));
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let mut waits = looking.join().unwrap();
    waits.sort_unstable();
    let what = if sweeping {
        format!(
            "`drop_stale` frees {KEYS} stale keys ({} left)",
            cache.entry_count()
        )
    } else {
        "nothing else runs (30 ms)".to_owned()
    };
    println!(
        "| {what} | {:.1} ms | {} | {:.1} µs | {:.2} ms |",
        took.as_secs_f64() * 1e3,
        waits.len(),
        quantile(&waits, 0.999).as_secs_f64() * 1e6,
        waits.last().unwrap().as_secs_f64() * 1e3
    );
}
