//! Every process's resident memory and open files, sampled each second,
//! and its PostgreSQL connections: the maxima per process, before and
//! after the warm-up, with the bounds a leak would cross.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::fleet::Fleet;

/// A process may grow to this many times its warm-up maximum.
pub const RSS_GROWTH_BOUND: f64 = 1.5;
/// Open files per process: sockets to clients, the broker and the
/// database, and the binary's own; far more is a leak.
pub const FD_BOUND: u64 = 256;
/// PostgreSQL connections per process: the pool's 16 and a listener.
pub const DB_CONNECTIONS_BOUND: i64 = 18;

#[derive(Default, Clone, Copy)]
pub struct Peak {
    pub warmup_rss_kib: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub db_connections: i64,
    /// The process now sampled, since when, and how many there were:
    /// with SIGKILL among the faults a slot's processes live minutes,
    /// so the report says how long the longest one lived (a leak shows
    /// within one process's life).
    pid: u32,
    since: Option<Instant>,
    pub processes: u32,
    pub longest_life: Duration,
}

#[derive(Default)]
pub struct Peaks(Mutex<BTreeMap<String, Peak>>);

impl Peaks {
    pub fn snapshot(&self) -> BTreeMap<String, Peak> {
        self.0.lock().expect("peaks lock").clone()
    }

    /// The processes over a bound, with their figures.
    pub fn over_bounds(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in self.snapshot() {
            let bound = (p.warmup_rss_kib as f64 * RSS_GROWTH_BOUND) as u64;
            if p.warmup_rss_kib > 0 && p.rss_kib > bound {
                out.push(format!(
                    "{name}: RSS {} MiB after warm-up, over {RSS_GROWTH_BOUND} × its warm-up maximum {} MiB",
                    p.rss_kib / 1024,
                    p.warmup_rss_kib / 1024
                ));
            }
            if p.fds > FD_BOUND {
                out.push(format!("{name}: {} open files, over {FD_BOUND}", p.fds));
            }
            if p.db_connections > DB_CONNECTIONS_BOUND {
                out.push(format!(
                    "{name}: {} PostgreSQL connections, over {DB_CONNECTIONS_BOUND}",
                    p.db_connections
                ));
            }
        }
        out
    }

    pub fn report(&self) -> String {
        let mut out = String::from(
            "  process: max RSS during warm-up → after (MiB), max open files, max PostgreSQL connections, \
             processes (the longest-lived one's life)\n",
        );
        for (name, p) in self.snapshot() {
            out.push_str(&format!(
                "  {name}: {:.1} → {:.1}, {}, {}, {} ({:.0} s)\n",
                p.warmup_rss_kib as f64 / 1024.0,
                p.rss_kib as f64 / 1024.0,
                p.fds,
                p.db_connections,
                p.processes,
                p.longest_life.as_secs_f64()
            ));
        }
        out
    }
}

/// Samples until `stop`; samples before `warm_until` set each process's
/// warm-up maximum, later ones its maximum.
pub async fn sample(
    fleet: Arc<Fleet>,
    pool: PgPool,
    peaks: Arc<Peaks>,
    warm_until: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut stop) => return,
        }
        let warm = Instant::now() < warm_until;
        let connections = if n.is_multiple_of(5) {
            db_connections(&pool).await
        } else {
            BTreeMap::new()
        };
        n += 1;
        for slot in fleet.all() {
            let Some(pid) = slot.pid().await else {
                continue;
            };
            let rss = rss_kib(pid);
            let fds = open_files(pid);
            let mut peaks = peaks.0.lock().expect("peaks lock");
            let p = peaks.entry(slot.name.clone()).or_default();
            if warm {
                p.warmup_rss_kib = p.warmup_rss_kib.max(rss);
            } else {
                p.rss_kib = p.rss_kib.max(rss);
            }
            p.fds = p.fds.max(fds);
            if p.pid != pid {
                (p.pid, p.since) = (pid, Some(Instant::now()));
                p.processes += 1;
            }
            if let Some(since) = p.since {
                p.longest_life = p.longest_life.max(since.elapsed());
            }
            if let Some(c) = connections.get(&format!("kw-soak-{}", slot.name)) {
                p.db_connections = p.db_connections.max(*c);
            }
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

async fn db_connections(pool: &PgPool) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(
        "SELECT application_name, count(*) FROM pg_stat_activity \
         WHERE datname = current_database() GROUP BY application_name",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .collect()
}
