//! Migrations over data written by the versions before them, on both
//! backends: the rows, reports and sequence an upgrade must keep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyward_core::ids::{EventId, KeyId, RoleName};
use keyward_core::privilege::{Privilege, PrivilegeKind};
use keyward_core::store::{EventState, RBAC_CHANGED, Store};
use keyward_core::testing::{TestDatabase, change};
use sqlx::Connection;

/// The version before `outbox.key_id` became nullable.
const BEFORE_ANY_KIND: i64 = 2;

/// Three revocations as version 2 wrote them: the third published and
/// purged (so the sequence's high-water mark, 3, is above every row), the
/// second applied by one ingestor.
struct Written {
    pending: EventId,
    applied: EventId,
}

/// The script that writes `Written` as version 2 did; `at` is a time in
/// the backend's own column type. Ids are ULIDs (no quoting to get wrong).
fn v2_rows(at: &str) -> (String, Written) {
    let rows = [(); 3].map(|()| (EventId::new(), KeyId::new()));
    let mut script = String::new();
    for (event, key) in &rows {
        script += &format!(
            "INSERT INTO outbox (event_id, kind, tenant_id, key_id, created_at, next_attempt_at) \
             VALUES ('{event}', 'key.revoked', 'acme', '{key}', {at}, {at});\n"
        );
    }
    script +=
        &format!("UPDATE outbox SET published_at = {at}, live_ingestors = 1 WHERE id >= 2;\n");
    for (event, _) in &rows[1..] {
        script += &format!(
            "INSERT INTO event_acks (event_id, ingestor_id, applied_at) \
             VALUES ('{event}', 'i-1', {at});\n"
        );
    }
    script += "DELETE FROM outbox WHERE id = 3;\n";
    let written = Written {
        pending: rows[0].0,
        applied: rows[1].0,
    };
    (script, written)
}

async fn write_v2_sqlite(url: &str) -> Written {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let (script, written) = v2_rows("1");
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut conn)
        .await
        .unwrap();
    written
}

async fn write_v2_postgres(url: &str) -> Written {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let (script, written) = v2_rows("now()");
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&mut conn)
        .await
        .unwrap();
    written
}

/// After the upgrade: old events keep their state and reports, the outbox
/// takes events without a key, and the sequence goes on above the purged
/// row instead of reusing its number.
async fn upgraded(store: &dyn Store, written: Written) {
    store.migrate().await.unwrap();
    let applied = store.event_status(written.applied).await.unwrap().unwrap();
    assert_eq!(
        (applied.state, applied.applied_by),
        (EventState::Applied, 1)
    );
    let pending = store.event_status(written.pending).await.unwrap().unwrap();
    assert_eq!(pending.state, EventState::Pending);
    assert!(pending.key_id.is_some());
    // Acks written before 0007 took their event's publication time there:
    // none is left for the worker to settle, and the one published event
    // counts as acked by the node seen from the start.
    assert_eq!(store.settle_acks().await.unwrap(), 0);
    let epoch = chrono::DateTime::UNIX_EPOCH;
    store.ingestor_heartbeat("i-1", "q", epoch).await.unwrap();
    store.ingestor_heartbeat("i-2", "q", epoch).await.unwrap();
    let unacked: Vec<i64> = store
        .list_ingestors()
        .await
        .unwrap()
        .iter()
        .map(|i| i.unacked)
        .collect();
    assert_eq!(unacked, [0, 1]);

    let acme = keyward_core::testing::ensure_tenant(store, "acme").await;
    let change = change();
    let admin = [Privilege::new(PrivilegeKind::Admin, None)];
    store
        .put_role(&acme, &RoleName::parse("ops").unwrap(), &admin, &change)
        .await
        .unwrap();
    let claimed = store
        .claim_events(
            "w",
            std::time::Duration::from_secs(30),
            10,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let rbac = claimed
        .iter()
        .find(|e| e.event_id == change.event_id)
        .expect("the role change's event");
    assert_eq!((rbac.kind.as_str(), rbac.key_id), (RBAC_CHANGED, None));
    assert!(rbac.id > 3, "sequence {} reused a purged number", rbac.id);
}

#[tokio::test]
async fn sqlite_outbox_rebuild_keeps_reports_and_sequence() {
    let db = TestDatabase::sqlite_unmigrated().await;
    db.store().migrate_to(BEFORE_ANY_KIND).await.unwrap();
    let written = write_v2_sqlite(db.url.as_str()).await;
    upgraded(db.store().as_ref(), written).await;
}

#[tokio::test]
async fn postgres_outbox_change_keeps_reports_and_sequence() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    db.store().migrate_to(BEFORE_ANY_KIND).await.unwrap();
    let written = write_v2_postgres(db.url.as_str()).await;
    upgraded(db.store().as_ref(), written).await;
}
