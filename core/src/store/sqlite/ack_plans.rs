//! `GET /api/v1/ingestors`' `unacked` and the worker's settling of acks,
//! as SQLite plans them: the kept counts (migration 0009) and the acks not
//! yet settled — never a probe per published event and ingestor (issue
//! #17: ~455 ms with 150,000 events and three ingestors), a range of the
//! events kept (161 ms), nor a scan of every ack.

use super::SqliteStore;
use super::ingestors::{LIST_INGESTORS, SETTLE_ACKS};
use crate::store::Backend;

async fn plan(store: &SqliteStore, statement: &str) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {statement}");
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .fetch_all(&store.pool)
        .await
        .unwrap();
    rows.into_iter().map(|(.., detail)| detail).collect()
}

#[tokio::test]
async fn unacked_is_read_from_kept_counts() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let plan = plan(&store, LIST_INGESTORS).await;
    // The acks not yet settled (`published_at IS NULL`), each looked up in
    // the outbox: the only reads of acks or events.
    for wanted in [
        "SEARCH a USING INDEX event_acks_ingestor (ingestor_id=? AND published_at=?)",
        "SEARCH o USING INDEX sqlite_autoindex_outbox_1 (event_id=?)",
    ] {
        assert!(
            plan.iter().any(|step| step == wanted),
            "{wanted}: {plan:#?}"
        );
    }
    assert_eq!(
        plan.iter()
            .filter(|step| step.starts_with("SEARCH"))
            .count(),
        2,
        "{plan:#?}"
    );
    // The scans are of the ingestors and the one row of counts.
    assert_scans(
        &plan,
        &["SCAN i USING INDEX sqlite_autoindex_ingestors_1", "SCAN t"],
    );
}

#[tokio::test]
async fn settling_reads_the_unsettled_acks_alone() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let plan = plan(&store, SETTLE_ACKS.sqlite).await;
    // A scan of the partial index: the unsettled acks, not every ack.
    assert_scans(&plan, &["SCAN event_acks USING INDEX event_acks_unsettled"]);
}

/// The plan's scans (steps that read a table or index whole) are these.
fn assert_scans(plan: &[String], expected: &[&str]) {
    let scans: Vec<&str> = plan
        .iter()
        .map(String::as_str)
        .filter(|step| step.starts_with("SCAN"))
        .collect();
    assert_eq!(scans, expected, "{plan:#?}");
}
