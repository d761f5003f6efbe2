//! What the benchmark binaries share: starting the real binaries with
//! their output drained, reading their metrics and CPU time, latency
//! quantiles, and the admin's requests.

pub mod raw_client;
pub mod wrk;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{Running, start_under};

/// The admin password the benches start `keyward-api` with.
pub const PASSWORD: &str = "benchmark admin password";
/// How long a started binary may take to answer its readiness probe.
pub const READY: Duration = Duration::from_secs(60);

/// A binary started with `env` at the default log level, its output
/// drained (a full pipe would stall it), ready.
pub async fn started(name: &str, env: &[(&str, &str)]) -> Running {
    started_under(&[], name, env).await
}

/// `started`, run by the command `under` names (see `start_under`).
pub async fn started_under(under: &[&str], name: &str, env: &[(&str, &str)]) -> Running {
    // Processes start with a clean environment; where logs are kept, the
    // bench's RUST_LOG goes to them.
    let log_filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|_| std::env::var_os("KEYWARD_BENCH_LOGS").is_some());
    let mut env = env.to_vec();
    if let Some(filter) = &log_filter {
        env.push(("RUST_LOG", filter));
    }
    // KEYWARD_BENCH_SETTINGS="NAME=value,…": settings for every binary the
    // bench starts, after its own, for trials against the defaults (say
    // which were set next to any figure they gave).
    let trial = std::env::var("KEYWARD_BENCH_SETTINGS").unwrap_or_default();
    env.extend(trial.split(',').filter_map(|s| s.split_once('=')));
    let mut node = start_under(under, name, &env);
    if let Some(mut out) = node.child.stdout.take() {
        tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
    }
    if let Some(mut err) = node.child.stderr.take() {
        // KEYWARD_BENCH_LOGS=dir keeps each process's log there (with
        // RUST_LOG set as wanted), to trace a tail to its cause.
        let kept = std::env::var_os("KEYWARD_BENCH_LOGS").map(|dir| {
            static STARTED: AtomicUsize = AtomicUsize::new(0);
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            std::path::PathBuf::from(dir).join(format!("{n:02}-{name}.log"))
        });
        tokio::spawn(async move {
            match kept.and_then(|path| std::fs::File::create(path).ok()) {
                Some(file) => {
                    let mut file = tokio::fs::File::from_std(file);
                    tokio::io::copy(&mut err, &mut file).await
                }
                None => tokio::io::copy(&mut err, &mut tokio::io::sink()).await,
            }
        });
    }
    node.wait_ready("/readyz", READY).await;
    node
}

pub async fn metrics(node: &Running) -> String {
    reqwest::get(node.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric's samples whose labels contain every one of `with`.
pub fn metric(text: &str, name: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks (100 per s).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

/// Resident memory of a process now, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// An admin request to the API at `node`, as `admin` (Basic).
pub fn admin(
    http: &reqwest::Client,
    node: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let req = http
        .request(method, node.url(path))
        .basic_auth("admin", Some(PASSWORD));
    match body {
        Some(body) => req.json(&body),
        None => req,
    }
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pause between calls while waiting for a change to reach the nodes
/// (`KEYWARD_BENCH_POLL_PAUSE_MS`, 0: back to back). Calling without pause
/// put the bench itself among the busiest processes on two cores shared
/// with the broker, the database and the nodes it measures; a pause of
/// 1 ms makes a sample late by at most that pause (tokio's timer ticks in
/// milliseconds).
pub fn poll_pause() -> Duration {
    Duration::from_millis(env_or("KEYWARD_BENCH_POLL_PAUSE_MS", 1))
}

/// Ingests with `secret` at every node, each called on its own, until each
/// answers `want`; how long the last one took (zero when every node did at
/// the first call).
pub async fn until_all(
    http: &reqwest::Client,
    nodes: &[Running],
    secret: &str,
    want: u16,
) -> Duration {
    let pause = poll_pause();
    let started = std::time::Instant::now();
    let firsts = futures_util::future::join_all(nodes.iter().map(|node| async move {
        let mut first = true;
        loop {
            let res = http
                .post(node.url("/ingest/clicks"))
                .bearer_auth(secret)
                .body("{}")
                .send()
                .await
                .unwrap();
            if res.status().as_u16() == want {
                return first;
            }
            first = false;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never answered {want}"
            );
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }))
    .await;
    if firsts.iter().all(|first| *first) {
        Duration::ZERO
    } else {
        started.elapsed()
    }
}

/// The upper bound of the histogram bucket holding quantile `q` of `name`
/// (Prometheus text, cumulative `_bucket{le="…"}` counts), in the metric's
/// unit; `None` when it has no samples.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = rest.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    (total > 0.0)
        .then(|| {
            buckets
                .iter()
                .find(|(_, n)| *n >= q * total)
                .map(|(le, _)| *le)
        })
        .flatten()
}

/// The machine's CPU time so far, from `/proc/stat`: (busy, all), in
/// clock ticks summed over every core. Two readings give how busy the
/// machine was in between (`busy_share`).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: idle and iowait
    // are not busy.
    let all: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (all - idle, all)
}

/// The share of the machine's CPU that was busy between two readings.
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 / all
}
