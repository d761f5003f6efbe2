//! (2) Revocation storm: 50,000 revokes (`KEYWARD_SCALE_STORM`) written
//! in the store while no worker runs, then drained by one and by two sync
//! workers; and 50,000 more through the API at the rate it sustains with
//! two workers running. Each time: events/s, and when each of 3 reference
//! ingestors had applied every one (their reports in `event_acks`);
//! nothing lost (every event applied by every node, none dead).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, TenantId};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::testing::change;
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use keyward_tests::bench::{PASSWORD, busy_share, cpu_seconds, env_or, machine_ticks, ms};
use sqlx::PgPool;

use crate::fleet::Fleet;
use crate::report;

pub const INGESTORS: usize = 3;
/// Writers into the store, and clients of the API.
const CONCURRENCY: usize = 16;

pub async fn run() {
    let storm: usize = env_or("KEYWARD_SCALE_STORM", 50_000);
    let Some(mut fleet) = Fleet::new().await else {
        return;
    };
    fleet.start_ingestors(INGESTORS).await;
    let store = fleet.db.store();
    let db = PgPool::connect(fleet.db.url.as_str()).await.unwrap();
    let mut rows = Vec::new();
    for workers in [1, 2] {
        let keys = create_keys(&store, storm).await;
        crate::analyze(fleet.db.url.as_str()).await;
        let began = Instant::now();
        revoke_in_store(&store, keys).await;
        let written = began.elapsed();
        let acked = count(&db, "SELECT COUNT(*) FROM event_acks").await;
        let began = Instant::now();
        let ticks = machine_ticks();
        fleet.start_workers(workers).await;
        let (drained, applied) = until_applied(&db, acked, storm).await;
        let busy = busy_share(ticks, machine_ticks());
        let worker_cpu: f64 = fleet
            .workers
            .iter()
            .map(|w| cpu_seconds(w.child.id().unwrap_or(0)))
            .sum();
        let drained = drained.duration_since(began);
        let applied = applied.duration_since(began);
        rows.push(vec![
            format!(
                "in the store ({:.0} revokes/s written), then {workers} worker(s) started",
                rate(storm, written)
            ),
            format!("{} ({:.0} events/s)", secs(drained), rate(storm, drained)),
            secs(applied),
            format!(
                "{:.0} % of 2 cores; workers {:.1} s of CPU",
                busy * 100.0,
                worker_cpu
            ),
            lost(&db).await,
        ]);
        fleet.workers.clear();
        // The outbox and the acks grew by a storm's worth.
        crate::analyze(fleet.db.url.as_str()).await;
    }
    let keys = create_keys(&store, storm).await;
    crate::analyze(fleet.db.url.as_str()).await;
    fleet.start_workers(2).await;
    let acked = count(&db, "SELECT COUNT(*) FROM event_acks").await;
    let began = Instant::now();
    let ticks = machine_ticks();
    let api_cpu = cpu_seconds(fleet.api.child.id().unwrap_or(0));
    revoke_through_api(&fleet, keys).await;
    let answered = began.elapsed();
    let api_cpu = cpu_seconds(fleet.api.child.id().unwrap_or(0)) - api_cpu;
    let (drained, applied) = until_applied(&db, acked, storm).await;
    let busy = busy_share(ticks, machine_ticks());
    rows.push(vec![
        format!(
            "through the API ({CONCURRENCY} clients: {:.0} revokes/s, all answered in {}), 2 workers running",
            rate(storm, answered),
            secs(answered)
        ),
        format!(
            "{} after the first revoke ({:.0} events/s)",
            secs(drained.duration_since(began)),
            rate(storm, drained.duration_since(began))
        ),
        secs(applied.duration_since(began)),
        format!(
            "{:.0} % of 2 cores; API {:.0} µs of CPU per revoke",
            busy * 100.0,
            api_cpu * 1e6 / storm as f64
        ),
        lost(&db).await,
    ]);
    let took = Instant::now();
    let res = keyward_tests::bench::admin(
        &fleet.http,
        &fleet.api,
        reqwest::Method::GET,
        "/api/v1/ingestors",
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let listed = took.elapsed();
    let text = format!(
        "{}\n`GET /api/v1/ingestors` after the storms ({} events, {INGESTORS} ingestors): {}\n",
        report::table(
            &[
                &format!("{storm} revokes"),
                "outbox drained",
                &format!("applied by all {INGESTORS} ingestors"),
                "machine busy (start → all applied)",
                "lost",
            ],
            &rows,
        ),
        3 * storm,
        ms(listed),
    );
    println!("{text}");
    report::write("storm", &text);
    drop(db);
    fleet.cleanup().await;
}

/// `n` keys of `acme`, written through the store; their ids.
pub async fn create_keys(store: &Arc<dyn Store>, n: usize) -> Vec<KeyId> {
    let acme = TenantId::parse("acme").unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let made = futures_util::future::join_all((0..CONCURRENCY).map(|_| {
        let (store, next, acme) = (Arc::clone(store), Arc::clone(&next), acme.clone());
        async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let key_id = KeyId::new();
                let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
                let key = NewApiKey {
                    key_id,
                    tenant_id: acme.clone(),
                    name: KeyName::parse(&format!("storm-{key_id}")).unwrap(),
                    roles: Vec::new(),
                    start: token.start(),
                    secret_hash: KeyDigest::of(token.expose_secret()).encode(),
                    created_by: "scale".into(),
                    created_at: chrono::Utc::now(),
                    expires_at: None,
                };
                store.create_key(&key, &change()).await.unwrap();
                ids.push(key_id);
            }
            ids
        }
    }))
    .await;
    made.concat()
}

pub async fn revoke_in_store(store: &Arc<dyn Store>, keys: Vec<KeyId>) {
    let acme = TenantId::parse("acme").unwrap();
    let keys = Arc::new(keys);
    let next = Arc::new(AtomicUsize::new(0));
    futures_util::future::join_all((0..CONCURRENCY).map(|_| {
        let (store, keys, next, acme) = (
            Arc::clone(store),
            Arc::clone(&keys),
            Arc::clone(&next),
            acme.clone(),
        );
        async move {
            while let Some(id) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
                let revoked = store.revoke_key(&acme, *id, &change()).await.unwrap();
                assert!(revoked.newly_revoked, "a revoke that changed nothing");
            }
        }
    }))
    .await;
}

async fn revoke_through_api(fleet: &Fleet, keys: Vec<KeyId>) {
    let keys = Arc::new(keys);
    let next = Arc::new(AtomicUsize::new(0));
    futures_util::future::join_all((0..CONCURRENCY).map(|_| {
        let (keys, next) = (Arc::clone(&keys), Arc::clone(&next));
        let http = reqwest::Client::new();
        async move {
            while let Some(id) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
                let res = http
                    .delete(fleet.api.url(&format!("/api/v1/tenants/acme/apikeys/{id}")))
                    .basic_auth("admin", Some(PASSWORD))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
            }
        }
    }))
    .await;
}

/// Waits until the outbox holds nothing pending, then until the ingestors
/// have reported `storm` more events each than `acked`; when each was
/// first seen (polled every 20 ms).
async fn until_applied(db: &PgPool, acked: i64, storm: usize) -> (Instant, Instant) {
    let want = acked + (INGESTORS * storm) as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut drained = None;
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "the storm was not applied within 10 minutes"
        );
        if drained.is_none()
            && count(
                db,
                "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL",
            )
            .await
                == 0
        {
            drained = Some(now);
        }
        if let Some(drained) = drained
            && count(db, "SELECT COUNT(*) FROM event_acks").await >= want
        {
            return (drained, now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events dead, or not applied by every ingestor: "none", or how many.
pub async fn lost(db: &PgPool) -> String {
    let dead = count(db, "SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL").await;
    let unapplied: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox o WHERE o.kind = 'key.revoked' AND \
         (SELECT COUNT(*) FROM event_acks a WHERE a.event_id = o.event_id) < $1",
    )
    .bind(INGESTORS as i64)
    .fetch_one(db)
    .await
    .unwrap();
    if dead == 0 && unapplied == 0 {
        "none".into()
    } else {
        format!("**{dead} dead, {unapplied} not applied by every ingestor**")
    }
}

pub async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

pub fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
