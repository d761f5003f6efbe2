//! The real `keyward-sync-worker` binary with the real API, PostgreSQL and
//! RabbitMQ: a revoke travels to a bound queue; a worker killed mid-batch
//! leaves nothing undelivered; SIGTERM exits 0; no broker means not ready.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use keyward_core::testing::{TestDatabase, revocations};
use keyward_tests::amqp::{TestBroker, amqp_url, collect_events, next_delivery};
use keyward_tests::{Running, eventually, free_port, start, start_api};
use lapin::types::FieldTable;

const READY: Duration = Duration::from_secs(30);

fn start_worker(
    db: &TestDatabase,
    broker: &TestBroker,
    amqp: &str,
    extra: &[(&str, &str)],
) -> Running {
    let mut env = vec![
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_AMQP_URL", amqp),
        ("KEYWARD_EXCHANGE", broker.exchange.as_str()),
        ("KEYWARD_ACKS_QUEUE", broker.acks_queue.as_str()),
        ("KEYWARD_LOG_FORMAT", "json"),
    ];
    env.extend_from_slice(extra);
    start("keyward-sync-worker", &env)
}

#[tokio::test]
async fn a_revoke_through_the_api_reaches_a_bound_queue() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let Some(mut broker) = TestBroker::new().await else {
        return;
    };
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let password = "admin-pw-e2e-worker";
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", password),
    ]);
    api.wait_ready("/readyz", READY).await;
    let mut worker = start_worker(&db, &broker, &amqp_url(), &[]);
    worker.wait_ready("/readyz", READY).await;

    let client = reqwest::Client::new();
    let res = client
        .post(api.url("/api/v1/tenants"))
        .basic_auth("admin", Some(password))
        .json(&serde_json::json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = client
        .post(api.url("/api/v1/tenants/acme/apikeys"))
        .basic_auth("admin", Some(password))
        .json(&serde_json::json!({"name": "doomed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_id = created["keyId"].as_str().unwrap().to_owned();
    let key_url = api.url(&format!("/api/v1/tenants/acme/apikeys/{key_id}"));
    let res = client
        .delete(&key_url)
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let revoked: serde_json::Value = res.json().await.unwrap();
    let event_id = revoked["revocation"]["eventId"]
        .as_str()
        .unwrap()
        .to_owned();

    let delivery = next_delivery(&mut queue, Duration::from_secs(10))
        .await
        .expect("the revocation arrives");
    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(body["keyId"], key_id.as_str());
    assert_eq!(body["eventId"], event_id.as_str());
    assert_eq!(body["tenantId"], "acme");
    assert_eq!(delivery.routing_key.as_str(), "key.revoked.acme");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let key: serde_json::Value = client
            .get(&key_url)
            .basic_auth("admin", Some(password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if key["revocation"]["state"] == "published" {
            assert!(key["revocation"]["publishedAt"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "not published: {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted once the mark that the key's state shows has returned to
    // the worker: a moment after the state can be read.
    eventually("counted as published", Duration::from_secs(5), || async {
        keyward_tests::bench::metrics(&worker)
            .await
            .contains("keyward_events_published_total")
    })
    .await;

    worker.signal("TERM");
    let status = worker.exit_status(Duration::from_secs(15)).await;
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let log = worker.stderr_text().await;
    assert!(!log.contains("guest:guest"), "no broker password in logs");
    broker.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_batch_leaves_nothing_undelivered() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let Some(mut broker) = TestBroker::new().await else {
        return;
    };
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let events = revocations(db.store().as_ref(), "acme", 1000).await;
    let small = [
        ("KEYWARD_OUTBOX_BATCH", "10"),
        ("KEYWARD_OUTBOX_LEASE_SECONDS", "2"),
    ];
    let mut first = start_worker(&db, &broker, &amqp_url(), &small);
    let mut seen = collect_events(&mut queue, 50, Duration::from_secs(20)).await;
    assert!(!seen.is_empty(), "delivery started");
    first.signal("KILL");
    first.exit_status(Duration::from_secs(5)).await;

    let mut successor = start_worker(&db, &broker, &amqp_url(), &small);
    seen.extend(collect_events(&mut queue, events.len(), Duration::from_secs(20)).await);
    let got: HashSet<String> = seen.iter().map(|m| m.event_id().to_string()).collect();
    let expected: HashSet<String> = events.iter().map(|(_, e)| e.to_string()).collect();
    assert!(
        expected.is_subset(&got),
        "{} of {} events never arrived",
        expected.difference(&got).count(),
        expected.len()
    );
    successor.signal("TERM");
    assert!(
        successor
            .exit_status(Duration::from_secs(15))
            .await
            .success()
    );
    let stats = db.store().outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
    broker.cleanup().await;
}

#[tokio::test]
async fn without_a_broker_the_worker_runs_unready_until_sigterm() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let Some(broker) = TestBroker::new().await else {
        return;
    };
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut worker = start_worker(&db, &broker, &nowhere, &[]);
    worker.wait_ready("/healthz", READY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = reqwest::get(worker.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["broker"], false);
    assert_eq!(body["database"], true);
    // Revokes meanwhile wait in the outbox; the worker keeps trying.
    revocations(db.store().as_ref(), "acme", 3).await;
    assert!(worker.child.try_wait().unwrap().is_none(), "still running");
    worker.signal("TERM");
    assert!(worker.exit_status(Duration::from_secs(15)).await.success());
    assert_eq!(db.store().outbox_stats().await.unwrap().pending, 3);
    broker.cleanup().await;
}

#[tokio::test]
async fn retry_dead_puts_dead_lettered_events_back() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = db.store();
    revocations(store.as_ref(), "acme", 2).await;
    let now = chrono::Utc::now();
    let claimed = store
        .claim_events("test", Duration::from_secs(60), 10, now)
        .await
        .unwrap();
    for e in &claimed {
        assert!(store.mark_dead("test", e.id, "gave up", now).await.unwrap());
    }
    assert_eq!(store.outbox_stats().await.unwrap().dead, 2);

    let (code, out, err) = keyward_tests::run_to_end(
        &keyward_tests::binary("keyward-sync-worker"),
        &["retry-dead"],
        &[("KEYWARD_DATABASE_URL", db.url.as_str())],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 dead-lettered event(s) put back"), "{out}");
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.dead, stats.pending), (0, 2));
}
