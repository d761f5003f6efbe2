//! Outbox delivery figures (issue #5), against the local PostgreSQL and
//! RabbitMQ:
//!
//! 1. drain 20,000 pending events into RabbitMQ with the real worker, and
//!    next to it a bare lapin publisher with confirms publishing as many
//!    messages of the same size, in the same batches, in the same run:
//!    once waiting for each batch's confirms before the next, and once
//!    pipelined as the worker is (the broker's real limit: confirms of up
//!    to `IN_FLIGHT` batches outstanding);
//! 2. commit-to-delivery latency with an idle worker: a revoke commits,
//!    and a consumer bound to the exchange receives the event.
//!
//! Run: `cargo bench -p keyward-sync-worker --bench deliver`
//! (`KEYWARD_BENCH_EVENTS` changes the 20,000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures_util::StreamExt;
use keyward_core::events::EventMessage;
use keyward_core::ids::{EventId, KeyId, TenantId};
use keyward_core::store::{KEY_REVOKED, OutboxEvent};
use keyward_core::testing::{TestDatabase, ensure_tenant, placeholder_key};
use keyward_sync_worker::settings::Cli;
use keyward_sync_worker::startup::Application;
use keyward_tests::amqp::{TestBroker, amqp_url};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

const BATCH: usize = 256;
/// Batches whose confirms may be outstanding at once, as in the worker.
const IN_FLIGHT: usize = keyward_sync_worker::deliver::PIPELINE_DEPTH;

#[tokio::main]
async fn main() {
    let events: usize = std::env::var("KEYWARD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let db = TestDatabase::postgres().await.expect("PostgreSQL");
    let mut broker = TestBroker::new().await.expect("RabbitMQ");
    // Routed messages cost the broker more than dropped ones: bind a queue.
    let _sink = broker
        .bind("sink", "key.revoked.#", FieldTable::default())
        .await;
    let sink_queue = format!("{}.sink", broker.exchange);

    println!("== drain {events} events (PostgreSQL → RabbitMQ, batch {BATCH})");
    fill_outbox(&db, events).await;
    let worker_rate = drain_with_worker(&db, &broker).await;
    purge(&broker, &sink_queue).await;
    let bare_rate = bare_publisher(&broker, events, 1).await;
    purge(&broker, &sink_queue).await;
    let pipelined_rate = bare_publisher(&broker, events, IN_FLIGHT).await;
    purge(&broker, &sink_queue).await;
    // No window at all: every confirm outstanding until the end.
    let unbounded_rate = bare_publisher(&broker, events, usize::MAX).await;
    purge(&broker, &sink_queue).await;
    println!(
        "worker {worker_rate:.0} events/s; bare lapin publisher, a batch at a time \
         {bare_rate:.0} msgs/s ({:.0} %); {IN_FLIGHT} batches in flight \
         {pipelined_rate:.0} msgs/s (**{:.0} %**); every confirm outstanding \
         {unbounded_rate:.0} msgs/s ({:.0} %)",
        100.0 * worker_rate / bare_rate,
        100.0 * worker_rate / pipelined_rate,
        100.0 * worker_rate / unbounded_rate
    );

    println!("== commit → delivered latency, idle worker, 200 revokes one at a time");
    latency(&db, &mut broker).await;
    broker.cleanup().await;
}

/// Writes `n` due events straight into the outbox in one statement (the
/// revoke path is measured elsewhere; here only delivery is).
async fn fill_outbox(db: &TestDatabase, n: usize) {
    let pool = sqlx::PgPool::connect(db.url.as_str()).await.unwrap();
    let event_ids: Vec<String> = (0..n).map(|_| EventId::new().to_string()).collect();
    let key_ids: Vec<String> = (0..n).map(|_| KeyId::new().to_string()).collect();
    sqlx::query(
        "INSERT INTO outbox (event_id, kind, tenant_id, key_id, created_at, next_attempt_at) \
         SELECT e, 'key.revoked', 'acme', k, now(), now() FROM UNNEST($1::text[], $2::text[]) AS t(e, k)",
    )
    .bind(&event_ids)
    .bind(&key_ids)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The worker as its binary starts it (`startup::Application`).
async fn worker(
    db: &TestDatabase,
    broker: &TestBroker,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let cli = Cli::try_parse_from([
        "keyward-sync-worker",
        "--database-url",
        db.url.as_str(),
        "--amqp-url",
        &amqp_url(),
        "--exchange",
        &broker.exchange,
        "--acks-queue",
        &broker.acks_queue,
        "--listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    let app = Application::build(&cli.settings).await.unwrap();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run_until_stopped());
    (shutdown, task)
}

async fn drain_with_worker(db: &TestDatabase, broker: &TestBroker) -> f64 {
    let store = db.store();
    let pending = store.outbox_stats().await.unwrap().pending;
    let started = Instant::now();
    let (shutdown, task) = worker(db, broker).await;
    while store.outbox_stats().await.unwrap().pending > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    task.await.unwrap();
    let rate = pending as f64 / took.as_secs_f64();
    println!("worker: {pending} events in {took:.2?} ({rate:.0} events/s)");
    rate
}

/// The same messages, batches and confirms, without a database; the
/// confirms of up to `in_flight` batches outstanding at once.
async fn bare_publisher(broker: &TestBroker, n: usize, in_flight: usize) -> f64 {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let started = Instant::now();
    let mut sent = 0;
    let mut outstanding = std::collections::VecDeque::new();
    while sent < n {
        let mut confirms = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min(n - sent) {
            let event = OutboxEvent {
                id: sent as i64,
                event_id: EventId::new(),
                kind: KEY_REVOKED.into(),
                tenant_id: tenant.clone(),
                key_id: Some(KeyId::new()),
                created_at: Utc::now(),
                attempts: 0,
            };
            let message = EventMessage::try_from(&event).unwrap();
            let body = serde_json::to_vec(&message).unwrap();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(event.event_id.to_string().into())
                .with_type(KEY_REVOKED.into())
                .with_content_type("application/json".into());
            let confirm = channel
                .basic_publish(
                    broker.exchange.as_str().into(),
                    message.routing_key().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await
                .unwrap();
            confirms.push(confirm);
            sent += 1;
        }
        outstanding.push_back(futures_util::future::join_all(confirms));
        if outstanding.len() >= in_flight {
            let oldest = outstanding.pop_front().unwrap();
            for c in oldest.await {
                assert!(c.unwrap().is_ack());
            }
        }
    }
    for batch in outstanding {
        for c in batch.await {
            assert!(c.unwrap().is_ack());
        }
    }
    let took = started.elapsed();
    let rate = n as f64 / took.as_secs_f64();
    let window = if in_flight == usize::MAX {
        "every".to_owned()
    } else {
        in_flight.to_string()
    };
    println!(
        "bare lapin publisher, {window} batch(es) in flight: {n} messages in {took:.2?} \
         ({rate:.0} msgs/s)"
    );
    let _ = conn.close(200, "done".into()).await;
    rate
}

async fn purge(broker: &TestBroker, queue: &str) {
    broker
        .channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .unwrap();
}

async fn latency(db: &TestDatabase, broker: &mut TestBroker) {
    let store = db.store();
    let mut consumer = broker
        .bind("latency", "key.revoked.#", FieldTable::default())
        .await;
    let tenant = ensure_tenant(store.as_ref(), "lat").await;
    let (shutdown, task) = worker(db, broker).await;
    // Let the worker connect and go idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let key = placeholder_key(store.as_ref(), &tenant).await;
        let change = keyward_core::testing::change();
        let event = change.event_id;
        store.revoke_key(&tenant, key, &change).await.unwrap();
        let committed = Instant::now();
        loop {
            let d = consumer.next().await.unwrap().unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
            let m: EventMessage = serde_json::from_slice(&d.data).unwrap();
            if m.event_id() == event {
                break;
            }
        }
        samples.push(committed.elapsed());
        // Idle between revokes, as a real worker mostly is.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "commit → delivered: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    shutdown.cancel();
    task.await.unwrap();
}
