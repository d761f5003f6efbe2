//! Logs and metrics, set up alike by the three binaries. Logs: `RUST_LOG`
//! picks the levels, `KEYWARD_LOG_FORMAT` (`pretty` or `json`) the shape.
//! Metrics: one Prometheus recorder per process, rendered by `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Installs the global subscriber. Logs go to stderr; stdout stays free
/// for what a command prints on purpose.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log file or collector gets no
        // escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests starting several apps) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets from 100 µs to 10 s: verify answers from memory in
/// microseconds, argon2 and broker confirms take milliseconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use; later calls
/// (tests starting several apps in one process) share it. `/metrics`
/// renders it.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    keep_up(handle.clone(), UPKEEP_INTERVAL);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// How often recorded histogram values are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Folds `handle`'s histogram values into their buckets every `every`, on
/// a thread of its own. The recorder keeps each value a histogram records
/// until then — rendering `/metrics` folds them too, but nothing says
/// anyone scrapes it: unfolded, the request latency alone grew the API by
/// ~2 MB a second under load (16 bytes a value), for as long as it ran.
/// A plain thread: the recorder is installed before (and outlives) any
/// runtime.
fn keep_up(handle: PrometheusHandle, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "metrics upkeep not started: histograms grow until /metrics is read");
    }
}

thread_local! {
    /// Counter handles by name and labels, for `counter`.
    static COUNTERS: std::cell::RefCell<Vec<CachedCounter>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

struct CachedCounter {
    name: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    handle: metrics::Counter,
}

/// Adds one to a counter whose labels are fixed strings, for hot paths:
/// the handle is looked up in the registry once per thread, not on every
/// increment (label building and hashing showed in the verify path's
/// profile), and used where it is kept (a clone and a drop are two writes
/// to a reference count that every thread shares).
/// A handle taken before the process installs its recorder (`metrics()`,
/// or an embedding service's own) stays a no-op on that thread: install first.
pub fn count(name: &'static str, labels: &[(&'static str, &'static str)]) {
    COUNTERS.with(|cell| {
        let mut cached = cell.borrow_mut();
        if let Some(c) = cached.iter().find(|c| c.name == name && c.labels == labels) {
            return c.handle.increment(1);
        }
        let owned: Vec<metrics::Label> = labels
            .iter()
            .map(|&(k, v)| metrics::Label::from_static_parts(k, v))
            .collect();
        let handle = metrics::counter!(name, owned);
        handle.increment(1);
        cached.push(CachedCounter {
            name,
            labels: labels.to_vec(),
            handle,
        });
    })
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render_metrics() -> String {
    metrics().map(PrometheusHandle::render).unwrap_or_default()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    /// Set in the child process that does the measuring.
    const CHILD: &str = "KEYWARD_TELEMETRY_UPKEEP_CHILD";
    const NAME: &str = "telemetry::tests::histogram_values_do_not_pile_up_unscraped";

    /// This process's resident set, in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/self/status")
    }

    /// 8 million latencies recorded and never scraped: with the upkeep
    /// the process stays within a few MB; without it (checked by removing
    /// the `keep_up` call below) it grew by ~125 MB — 16 bytes a
    /// value, kept until someone reads `/metrics`. Measured in a process of
    /// its own: the other tests' memory would blur a figure of this size.
    #[test]
    fn histogram_values_do_not_pile_up_unscraped() {
        if std::env::var_os(CHILD).is_some() {
            return record_and_measure();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("1 passed"), "the child ran the test: {said}");
    }

    fn record_and_measure() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), super::BUCKETS)
            .unwrap()
            .build_recorder();
        super::keep_up(recorder.handle(), Duration::from_millis(5));
        let latency = metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("keyward_upkeep_test_seconds")
        });
        let record = |n: u32| {
            for i in 0..n {
                latency.record(f64::from(i % 1000) * 1e-6);
            }
            // Time for the upkeep to come round, as it does in a server.
            std::thread::sleep(Duration::from_millis(20));
        };
        record(200_000);
        let before = rss_kib();
        for _ in 0..40 {
            record(200_000);
        }
        let grown = rss_kib().saturating_sub(before);
        eprintln!("resident set grew by {grown} KiB over 8,000,000 values");
        assert!(grown < 16 * 1024, "grew by {grown} KiB");
    }
}
