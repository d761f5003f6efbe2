//! Periodic chores: outbox gauges for `/metrics`, purging delivered events
//! (with their acks) older than their retention, and audit records older
//! than theirs.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use keyward_core::store::{AuditStore, OutboxStore, Purged, error::chain};
use tokio_util::sync::CancellationToken;

/// How often the outbox gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often delivered history is purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// How long delivered history and audit records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: Duration,
    pub audit: Duration,
}

pub async fn run(
    store: Arc<dyn OutboxStore>,
    audit: Arc<dyn AuditStore>,
    retention: Retention,
    shutdown: CancellationToken,
) {
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut purge = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = stats.tick() => refresh_gauges(store.as_ref()).await,
            _ = purge.tick() => {
                purge_old(store.as_ref(), retention.events).await;
                purge_audit(audit.as_ref(), retention.audit).await;
            }
        }
    }
}

pub async fn refresh_gauges(store: &dyn OutboxStore) {
    match store.outbox_stats().await {
        Ok(s) => {
            let age = s
                .oldest_pending_at
                .map(|t| (Utc::now() - t).to_std().unwrap_or_default().as_secs_f64())
                .unwrap_or(0.0);
            metrics::gauge!("keyward_outbox_pending").set(s.pending as f64);
            metrics::gauge!("keyward_outbox_oldest_pending_age_seconds").set(age);
            metrics::gauge!("keyward_outbox_dead").set(s.dead as f64);
        }
        Err(e) => tracing::warn!(error = %chain(&e), "reading outbox statistics failed"),
    }
}

fn cutoff(retention: Duration) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX)
}

/// Deletes audit records older than `retention`; how many, if the database
/// answered.
pub async fn purge_audit(store: &dyn AuditStore, retention: Duration) -> Option<u64> {
    match store.purge_audit(cutoff(retention)).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(records = n, "purged old audit records");
            }
            Some(n)
        }
        Err(e) => {
            tracing::warn!(error = %chain(&e), "purging audit records failed");
            None
        }
    }
}

/// Deletes delivered events older than `retention`; what went, if the
/// database answered.
pub async fn purge_old(store: &dyn OutboxStore, retention: Duration) -> Option<Purged> {
    match store.purge(cutoff(retention)).await {
        Ok(p) => {
            metrics::counter!("keyward_outbox_purged_total").increment(p.events);
            if p.events > 0 {
                tracing::info!(events = p.events, acks = p.acks, "purged delivered history");
            }
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %chain(&e), "purging delivered events failed");
            None
        }
    }
}
