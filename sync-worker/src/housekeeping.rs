//! Periodic chores: outbox and ingestor gauges for `/metrics`, purging
//! delivered events (with their acks) older than their retention, and
//! audit records older than theirs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::store::{
    AuditStore, IngestorRecord, IngestorStore, OutboxStore, Purged, error::chain,
};
use tokio_util::sync::CancellationToken;

/// How often the outbox gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often delivered history is purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// How often the ingestor gauges are refreshed: counting each ingestor's
/// unacked events reads the published outbox, so not every 5 s.
const INGESTORS_EVERY: Duration = Duration::from_secs(30);
/// An ingestor silent for longer than this is taken to be out of service
/// and no longer counts as stale (its row stays, for `GET
/// /api/v1/ingestors`): an alert on a node that went silent fires for a
/// day, not for ever after the node was retired.
const STALE_AT_MOST: Duration = Duration::from_secs(24 * 3600);

/// How long delivered history and audit records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: Duration,
    pub audit: Duration,
}

/// What the chores work on.
pub struct Chores {
    pub outbox: Arc<dyn OutboxStore>,
    pub ingestors: Arc<dyn IngestorStore>,
    pub audit: Arc<dyn AuditStore>,
    pub retention: Retention,
    /// An ingestor heard from within this is live (the worker's setting).
    pub liveness: Duration,
}

pub async fn run(chores: Chores, shutdown: CancellationToken) {
    let Chores {
        outbox: store,
        ingestors,
        audit,
        retention,
        liveness,
    } = chores;
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut fleet = tokio::time::interval(INGESTORS_EVERY);
    let mut purge = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = stats.tick() => refresh_gauges(store.as_ref()).await,
            _ = fleet.tick() => refresh_ingestor_gauges(ingestors.as_ref(), liveness).await,
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

/// The fleet as the gauges show it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fleet {
    /// Heard from within the liveness window.
    pub live: u64,
    /// Heard from within the last day, but not within the liveness window:
    /// a node that went silent.
    pub stale: u64,
    /// The most published events a live ingestor has not reported applied.
    pub max_unacked: i64,
}

impl Fleet {
    pub fn of(ingestors: &[IngestorRecord], now: DateTime<Utc>, liveness: Duration) -> Self {
        let age = |i: &IngestorRecord| (now - i.last_seen_at).to_std().unwrap_or_default();
        let mut fleet = Fleet::default();
        for i in ingestors {
            if age(i) <= liveness {
                fleet.live += 1;
                fleet.max_unacked = fleet.max_unacked.max(i.unacked);
            } else if age(i) <= STALE_AT_MOST {
                fleet.stale += 1;
            }
        }
        fleet
    }
}

/// `keyward_ingestors_live`, `keyward_ingestors_stale`,
/// `keyward_ingestors_max_unacked`: the alert for a node that stopped
/// heartbeating, and the dashboard's view of the fleet.
pub async fn refresh_ingestor_gauges(store: &dyn IngestorStore, liveness: Duration) {
    // Acks that outran their event's mark get its publication time, so
    // that counting them takes an index alone.
    if let Err(e) = store.settle_acks().await {
        tracing::warn!(error = %chain(&e), "settling ingestor acks failed");
    }
    match store.list_ingestors().await {
        Ok(list) => {
            let fleet = Fleet::of(&list, Utc::now(), liveness);
            metrics::gauge!("keyward_ingestors_live").set(fleet.live as f64);
            metrics::gauge!("keyward_ingestors_stale").set(fleet.stale as f64);
            metrics::gauge!("keyward_ingestors_max_unacked").set(fleet.max_unacked as f64);
        }
        Err(e) => tracing::warn!(error = %chain(&e), "reading the ingestors failed"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, secs_ago: i64, unacked: i64, now: DateTime<Utc>) -> IngestorRecord {
        IngestorRecord {
            id: id.into(),
            queue: format!("keyward.ingestor.{id}"),
            first_seen_at: now - chrono::Duration::days(3),
            last_seen_at: now - chrono::Duration::seconds(secs_ago),
            unacked,
        }
    }

    #[test]
    fn live_stale_and_retired_ingestors() {
        let now = Utc::now();
        let fleet = Fleet::of(
            &[
                seen("a", 2, 3, now),
                seen("b", 30, 7, now),
                seen("c", 31, 900, now),
                seen("d", 23 * 3600, 0, now),
                seen("e", 25 * 3600, 0, now),
            ],
            now,
            Duration::from_secs(30),
        );
        assert_eq!(
            fleet,
            Fleet {
                live: 2,
                stale: 2,
                // A silent node's backlog is the stale alert's business.
                max_unacked: 7,
            }
        );
        assert_eq!(
            Fleet::of(&[], now, Duration::from_secs(30)),
            Fleet::default()
        );
    }
}
