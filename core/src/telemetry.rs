//! Logs and metrics, set up alike by the three binaries. Logs: `RUST_LOG`
//! picks the levels, `KEYWARD_LOG_FORMAT` (`pretty` or `json`) the shape.
//! Metrics: one Prometheus recorder per process, rendered by `/metrics`.

use std::sync::OnceLock;

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
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
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
