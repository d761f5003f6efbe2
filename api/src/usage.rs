//! `lastUsedAt` kept in memory and written in batches by a background task
//! (`verify::spawn_background`): the hot path never waits for a write.
//!
//! A key's use is written at most once per `USAGE_RESOLUTION`: a key in
//! steady use would otherwise rewrite its row on every flush. Measured
//! with 100,000 keys in use (`bench-verify miss`), those rewrites — every
//! row of `api_keys` every 10 s, and each commit discarding the page cache
//! of every reading connection — took a quarter of the API's CPU; on
//! PostgreSQL each is a dead tuple for vacuum. The first use after a quiet
//! minute is written at the next flush as before.
//!
//! A flush is written a chunk at a time with pauses between chunks
//! (`write_paced`): written back to back, the 100,000 uses of a busy
//! interval were ~0.25 s of a core on SQLite's writer thread in one burst,
//! each commit also making every reading connection reload its pages, and
//! the actix workers got ~15 % less CPU in that second (per-thread CPU
//! during `bench-verify miss`, docs/BENCHMARKS.md). Paced, the same work
//! is ~5 % of a core for five seconds.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::ids::KeyId;
use keyward_core::sharded::Sharded;

/// Least time between two uses of one key written by this replica:
/// `lastUsedAt` may lag a key in steady use by this much (plus the flush
/// interval).
pub const USAGE_RESOLUTION: Duration = Duration::from_secs(60);

/// Last use per key, to the second. Sharded by key id so that worker
/// threads recording different keys rarely meet on one lock; a key's
/// cached state (`KeyState::first_use_in`) hands it over at most once a
/// second.
#[derive(Default)]
pub struct UsageRecorder {
    shards: Sharded<UsageShard>,
}

#[derive(Default)]
struct UsageShard {
    /// Uses not taken for writing yet, the latest per key.
    pending: HashMap<KeyId, DateTime<Utc>>,
    /// The use last taken per key, for keys taken within the resolution:
    /// a later use before `taken + USAGE_RESOLUTION` is not kept.
    taken: HashMap<KeyId, DateTime<Utc>>,
}

/// One key's latest use.
pub type Use = (KeyId, DateTime<Utc>);

/// Uses written per statement: a short write transaction each, so that a
/// revoke waits for at most one chunk, not for the whole flush.
const USAGE_CHUNK: usize = 1000;
/// A big flush is spread over this much of the flush interval
/// (`verify::USAGE_FLUSH_INTERVAL`, 10 s)...
const USAGE_SPREAD: Duration = Duration::from_secs(5);
/// ...with at most this pause between two chunks, so that a flush of a few
/// chunks is not held back.
const USAGE_MAX_PAUSE: Duration = Duration::from_millis(50);

/// The pause between two chunks of a flush of `uses` uses.
fn pause_between_chunks(uses: usize) -> Duration {
    let chunks = u32::try_from(uses.div_ceil(USAGE_CHUNK)).unwrap_or(u32::MAX);
    (USAGE_SPREAD / chunks.max(1)).min(USAGE_MAX_PAUSE)
}

/// Writes `batch` through `write`, `USAGE_CHUNK` uses at a time in key id
/// order (so that two replicas' flushes of common keys meet in matching
/// chunks), pausing `pause_between_chunks` between two. On a failed write
/// it stops: the error, with the uses not written (that chunk's and the
/// rest), to be written at the next flush.
///
/// Each chunk is handed over as a `Vec` of its own (a copy of 1,000 small
/// pairs): a future borrowing the batch would keep the flush's task from
/// being `Send`.
pub async fn write_paced<E, Fut>(
    mut batch: Vec<Use>,
    mut write: impl FnMut(Vec<Use>) -> Fut,
) -> Result<(), (E, Vec<Use>)>
where
    Fut: Future<Output = Result<u64, E>>,
{
    batch.sort_unstable_by_key(|(key_id, _)| *key_id);
    let pause = pause_between_chunks(batch.len());
    let mut written = 0;
    while written < batch.len() {
        if written > 0 {
            tokio::time::sleep(pause).await;
        }
        let end = (written + USAGE_CHUNK).min(batch.len());
        if let Err(e) = write(batch[written..end].to_vec()).await {
            return Err((e, batch.split_off(written)));
        }
        written = end;
    }
    Ok(())
}

impl UsageRecorder {
    pub fn record(&self, key_id: KeyId, at: DateTime<Utc>) {
        let mut shard = self.shards.lock(&key_id);
        if shard
            .taken
            .get(&key_id)
            .is_some_and(|&taken| at < taken + USAGE_RESOLUTION)
        {
            return;
        }
        keep_latest(&mut shard.pending, key_id, at);
    }

    /// The uses to write now; each key's is remembered until `now` is a
    /// resolution past it.
    pub fn take(&self, now: DateTime<Utc>) -> Vec<Use> {
        let mut all = Vec::new();
        for mut shard in self.shards.each() {
            let UsageShard { pending, taken } = &mut *shard;
            taken.retain(|_, at| now < *at + USAGE_RESOLUTION);
            for (key_id, at) in pending.drain() {
                taken.insert(key_id, at);
                all.push((key_id, at));
            }
        }
        all
    }

    /// Uses taken whose write failed: written at the next flush.
    pub fn restore(&self, batch: Vec<Use>) {
        for (key_id, at) in batch {
            keep_latest(&mut self.shards.lock(&key_id).pending, key_id, at);
        }
    }
}

fn keep_latest(pending: &mut HashMap<KeyId, DateTime<Utc>>, key_id: KeyId, at: DateTime<Utc>) {
    let slot = pending.entry(key_id).or_insert(at);
    if *slot < at {
        *slot = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    #[test]
    fn usage_keeps_the_latest_second() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        u.record(k, t - secs(5));
        u.record(k, t - secs(2));
        assert_eq!(u.take(t), vec![(k, t)]);
        assert!(u.take(t).is_empty());
    }

    /// A key in steady use is written once a resolution, not every flush;
    /// without the `taken` check every use below would be written.
    #[test]
    fn a_key_in_steady_use_is_written_once_a_resolution() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        assert_eq!(u.take(t), vec![(k, t)]);
        let resolution = secs(USAGE_RESOLUTION.as_secs() as i64);
        for later in [secs(1), secs(30), resolution - secs(1)] {
            u.record(k, t + later);
            assert!(u.take(t + later).is_empty(), "{later} after the write");
        }
        u.record(k, t + resolution);
        assert_eq!(u.take(t + resolution), vec![(k, t + resolution)]);
    }

    /// Keys apart: one key's write holds back no other's.
    #[test]
    fn each_key_has_its_own_resolution() {
        let u = UsageRecorder::default();
        let (a, b) = (KeyId::new(), KeyId::new());
        let t = Utc::now();
        u.record(a, t);
        assert_eq!(u.take(t), vec![(a, t)]);
        u.record(a, t + secs(5));
        u.record(b, t + secs(5));
        assert_eq!(u.take(t + secs(5)), vec![(b, t + secs(5))]);
    }

    /// A failed write is written at the next flush, resolution or not.
    #[test]
    fn a_failed_write_is_kept_for_the_next_flush() {
        let u = UsageRecorder::default();
        let k = KeyId::new();
        let t = Utc::now();
        u.record(k, t);
        let failed = u.take(t);
        u.restore(failed);
        assert_eq!(u.take(t + secs(10)), vec![(k, t)]);
    }

    fn uses(n: usize) -> Vec<Use> {
        let t = Utc::now();
        (0..n).map(|i| (KeyId::new(), t + secs(i as i64))).collect()
    }

    /// A flush is written in chunks of `USAGE_CHUNK`, in key id order, with
    /// the pause between each two: 2,500 uses are three writes and two
    /// pauses of the flush's share of `USAGE_SPREAD`. Time is paused, so
    /// the pauses are counted, not timed.
    #[tokio::test(start_paused = true)]
    async fn a_flush_is_written_in_chunks_with_pauses_between() {
        let batch = uses(2 * USAGE_CHUNK + USAGE_CHUNK / 2);
        let mut sorted = batch.clone();
        sorted.sort_unstable_by_key(|(key_id, _)| *key_id);
        let pause = pause_between_chunks(batch.len());
        assert_eq!(pause, USAGE_MAX_PAUSE, "three chunks: the longest pause");
        let began = tokio::time::Instant::now();
        let mut writes: Vec<(Duration, Vec<Use>)> = Vec::new();
        let done = write_paced(batch, |chunk: Vec<Use>| {
            let n = chunk.len() as u64;
            writes.push((began.elapsed(), chunk));
            std::future::ready(Ok::<u64, ()>(n))
        })
        .await;
        assert!(done.is_ok());
        let at: Vec<Duration> = writes.iter().map(|(at, _)| *at).collect();
        assert_eq!(at, [Duration::ZERO, pause, 2 * pause]);
        let written: Vec<Use> = writes.into_iter().flat_map(|(_, c)| c).collect();
        assert_eq!(written, sorted, "every use once, in key id order");
    }

    /// However many chunks, a flush is spread over at most `USAGE_SPREAD`.
    #[test]
    fn a_big_flush_is_spread_over_the_spread_at_most() {
        for uses in [1, USAGE_CHUNK, 10 * USAGE_CHUNK, 1_000 * USAGE_CHUNK] {
            let chunks = uses.div_ceil(USAGE_CHUNK) as u32;
            let pause = pause_between_chunks(uses);
            assert!(pause * (chunks - 1) <= USAGE_SPREAD, "{uses} uses");
            assert!(pause <= USAGE_MAX_PAUSE, "{uses} uses");
        }
        assert_eq!(
            pause_between_chunks(0),
            USAGE_MAX_PAUSE,
            "nothing to spread"
        );
    }

    /// A write that fails stops the flush: its chunk and the ones after it
    /// come back to be written at the next flush, the chunks written
    /// before it do not.
    #[tokio::test(start_paused = true)]
    async fn a_failed_chunk_returns_it_and_the_rest() {
        let batch = uses(3 * USAGE_CHUNK);
        let mut sorted = batch.clone();
        sorted.sort_unstable_by_key(|(key_id, _)| *key_id);
        let mut calls = 0;
        let done = write_paced(batch, |chunk: Vec<Use>| {
            calls += 1;
            std::future::ready(if calls == 2 {
                Err("down")
            } else {
                Ok(chunk.len() as u64)
            })
        })
        .await;
        let (e, unwritten) = done.expect_err("the second chunk failed");
        assert_eq!(e, "down");
        assert_eq!(calls, 2, "nothing written after the failure");
        assert_eq!(
            unwritten,
            sorted[USAGE_CHUNK..],
            "the failed chunk and the rest"
        );
        let u = UsageRecorder::default();
        u.restore(unwritten);
        assert_eq!(u.take(Utc::now()).len(), 2 * USAGE_CHUNK);
    }

    /// What was taken is forgotten a resolution later: memory holds the
    /// keys used in the last minute, not every key ever used.
    #[test]
    fn taken_uses_are_forgotten_a_resolution_later() {
        let u = UsageRecorder::default();
        let t = Utc::now();
        for _ in 0..100 {
            u.record(KeyId::new(), t);
        }
        assert_eq!(u.take(t).len(), 100);
        let remembered =
            |u: &UsageRecorder| -> usize { u.shards.each().map(|s| s.taken.len()).sum() };
        assert_eq!(remembered(&u), 100);
        let _ = u.take(t + secs(USAGE_RESOLUTION.as_secs() as i64));
        assert_eq!(remembered(&u), 0);
    }
}
