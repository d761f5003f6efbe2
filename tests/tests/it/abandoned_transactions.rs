//! A store write abandoned while its `BEGIN` is on the wire — its task
//! aborted, as the sync worker aborts its reports consumer when a broker
//! connection ends, or its client gone — must leave no session inside a
//! transaction. sqlx 0.9.0 left one (sqlx issue #4393, fixed in 0.9.1): the pool handed
//! the session out again, the statements that followed ran inside the stale
//! transaction and held their locks for good. The chaos soak saw both sync
//! workers stall behind one (every mark waited for `outbox_totals`), and
//! PostgreSQL logged "unexpected EOF on client connection with an open
//! transaction" for their sessions when they were killed.
//!
//! The store talks to PostgreSQL through a proxy that answers slowly, so
//! that each round trip takes 300 ms and the abort lands in the middle of
//! the `BEGIN`'s (after the pool's ping on acquire). Checked against sqlx
//! 0.9.0: the session stayed `idle in transaction`.

use std::time::Duration;

use keyward_core::config::DatabaseUrl;
use keyward_core::testing::TestDatabase;
use keyward_tests::eventually;
use keyward_tests::proxy::{FaultProxy, Mode};

/// One answer from the server takes this long through the proxy.
const ROUND_TRIP: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_write_abandoned_during_its_begin_leaves_no_transaction_open() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let mut direct = url::Url::parse(db.url.as_str()).unwrap();
    let upstream = (
        direct.host_str().unwrap().to_owned(),
        direct.port().unwrap_or(5432),
    );
    let upstream = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = FaultProxy::start(upstream).await;
    direct.set_port(Some(proxy.addr.port())).unwrap();
    direct.set_host(Some("127.0.0.1")).unwrap();
    let proxied: DatabaseUrl = direct.as_str().parse().unwrap();
    let store = keyward_core::store::connect(&proxied).await.unwrap();
    // One connection in the pool, idle, for the write to take.
    store.outbox_stats().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    proxy.set(Mode::SlowReplies(ROUND_TRIP));
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.settle_acks().await }
    });
    // The ping's answer came at one round trip, the `BEGIN`'s comes at two.
    tokio::time::sleep(ROUND_TRIP * 3 / 2).await;
    write.abort();
    assert!(
        write.await.unwrap_err().is_cancelled(),
        "aborted before its end"
    );

    let watch = sqlx::PgPool::connect(db.url.as_str()).await.unwrap();
    // The abort came after the `BEGIN` went out (the session's last
    // statement is it, or the `ROLLBACK` that ends it) ...
    eventually(
        "the BEGIN reached the server",
        Duration::from_secs(5),
        || {
            let watch = watch.clone();
            async move { sessions(&watch).await.began > 0 }
        },
    )
    .await;
    // ... and is ended: no session stays inside a transaction.
    eventually(
        "no session left inside a transaction",
        Duration::from_secs(5),
        || {
            let watch = watch.clone();
            async move { sessions(&watch).await.in_transaction == 0 }
        },
    )
    .await;
    proxy.set(Mode::Pass);
    // The pool's session works as before: a write commits.
    store.settle_acks().await.unwrap();
    assert_eq!(sessions(&watch).await.in_transaction, 0);
}

/// The sessions of the store (of this database, but the watcher's).
struct Sessions {
    /// Whose last statement was a `BEGIN` or a `ROLLBACK`.
    began: i64,
    /// Idle inside a transaction.
    in_transaction: i64,
}

async fn sessions(watch: &sqlx::PgPool) -> Sessions {
    let (began, in_transaction) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE query IN ('BEGIN', 'ROLLBACK')), \
                COUNT(*) FILTER (WHERE state LIKE 'idle in transaction%') \
         FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(watch)
    .await
    .unwrap();
    Sessions {
        began,
        in_transaction,
    }
}
