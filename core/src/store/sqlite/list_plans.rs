//! The key listing's statements, as SQLite plans them: each page one range
//! of an index, never a scan of the tenant's keys (issue #17 measured a
//! rare status filter at ~200 ms a page over 100,000 keys when one
//! statement carried every filter in its predicates).

use super::SqliteStore;
use super::keys::list_statement;
use crate::ids::{KeyId, TenantId};
use crate::store::{Backend, KeyQuery, StatusFilter};

/// SQLite's plan for the listing of `status`, with or without a cursor.
async fn plan(store: &SqliteStore, status: StatusFilter, before: Option<KeyId>) -> String {
    let tenant = TenantId::parse("acme").unwrap();
    let query = KeyQuery {
        status,
        limit: 50,
        before,
    };
    let statement = list_statement(&tenant, &query, chrono::Utc::now());
    // Unbound parameters are NULL: the plan does not depend on values.
    let explain = format!("EXPLAIN QUERY PLAN {}", statement.sql().as_str());
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .fetch_all(&store.pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(.., detail)| detail)
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn every_filter_and_cursor_reads_one_index_range() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let cursor = Some(KeyId::new());
    for (status, index) in [
        (StatusFilter::All, "(tenant_id=?"),
        (
            StatusFilter::Active,
            "api_keys_tenant_status (tenant_id=? AND status=?",
        ),
        (
            StatusFilter::Revoked,
            "api_keys_tenant_status (tenant_id=? AND status=?",
        ),
    ] {
        for before in [None, cursor] {
            let plan = plan(&store, status, before).await;
            let keys = plan.split("; ").next().unwrap();
            assert!(
                keys.starts_with("SEARCH k USING INDEX") && keys.contains(index),
                "{status:?} {before:?}: {plan}"
            );
            if before.is_some() {
                assert!(
                    keys.contains("key_id<?"),
                    "{status:?}: cursor not in the range: {plan}"
                );
            }
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{status:?} {before:?}: {plan}"
            );
        }
    }
    // Expired: the page's ids are a range of the swept keys' index (in
    // order, no sort) merged with the unswept ones from the expiring index
    // (a minute's worth, sorted), both covering; then those rows by id.
    for before in [None, cursor] {
        let plan = plan(&store, StatusFilter::Expired, before).await;
        let swept = if before.is_some() {
            "SEARCH e USING COVERING INDEX api_keys_tenant_expired (tenant_id=? AND key_id<?)"
        } else {
            "SEARCH e USING COVERING INDEX api_keys_tenant_expired (tenant_id=?)"
        };
        for part in [
            swept,
            "SEARCH e USING COVERING INDEX api_keys_tenant_expiring (tenant_id=? AND expires_at<?)",
            "SEARCH k USING INDEX sqlite_autoindex_api_keys_1 (key_id=?)",
        ] {
            assert!(plan.contains(part), "{before:?}: {part} not in {plan}");
        }
        // The only scans are of the two parts' own few ids.
        let scans: Vec<&str> = plan.split("; ").filter(|s| s.starts_with("SCAN")).collect();
        assert_eq!(scans, ["SCAN swept", "SCAN unswept"], "{before:?}: {plan}");
        // The swept range is read in order and cut at the page, unsorted
        // (the merge then orders at most a page of ids).
        assert!(
            plan.contains(&format!("{swept}; SCAN swept")),
            "{before:?}: the swept ids are sorted: {plan}"
        );
    }
}

/// A page's roles are its keys' own links, read by key id in the page's
/// statement. They were a second statement over the page's id range,
/// which for a sparse filter read the links of every key in between
/// (~49,000 at 1M keys for a page of revoked keys).
#[tokio::test]
async fn every_page_reads_only_its_own_keys_roles() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    for status in [
        StatusFilter::All,
        StatusFilter::Active,
        StatusFilter::Revoked,
        StatusFilter::Expired,
    ] {
        for before in [None, Some(KeyId::new())] {
            let plan = plan(&store, status, before).await;
            let links: Vec<&str> = plan.split("; ").filter(|s| s.contains(" r ")).collect();
            assert_eq!(
                links,
                ["SEARCH r USING COVERING INDEX sqlite_autoindex_api_key_roles_1 (key_id=?)"],
                "{status:?} {before:?}: {plan}"
            );
        }
    }
}
