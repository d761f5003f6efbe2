//! The worker in-process against a real database and the real RabbitMQ:
//! each test has its own database, exchange and queues, and cuts its own
//! broker connection through a fault-injecting proxy when it needs to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keyward_core::events::EventMessage;
use keyward_core::ids::{KeyId, TenantId};
use keyward_core::store::{EventState, Store};
use keyward_core::testing::{TestDatabase, revocations};
use keyward_sync_worker::health::Health;
use keyward_sync_worker::settings::Cli;
use keyward_sync_worker::startup::Application;
use keyward_tests::amqp::{TestBroker, amqp_url, broker_addr, collect_events, next_delivery};
use keyward_tests::eventually;
use keyward_tests::proxy::{FaultProxy, Mode};
use lapin::types::{AMQPValue, FieldTable};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A worker running in this process until stopped.
struct RunningWorker {
    health: Arc<Health>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningWorker {
    /// Starts the worker as its binary does (`startup::Application`).
    async fn start(db: &TestDatabase, broker: &TestBroker, amqp: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "keyward-sync-worker",
            "--database-url",
            db.url.as_str(),
            "--amqp-url",
            amqp,
            "--exchange",
            &broker.exchange,
            "--acks-queue",
            &broker.acks_queue,
            "--retry-initial-ms",
            "20",
            "--retry-max-ms",
            "100",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).expect("worker settings");
        let app = Application::build(&cli.settings).await.expect("worker");
        let health = app.health();
        let shutdown = app.shutdown_token();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            health,
            shutdown,
            task,
        }
    }

    /// Starts the worker and waits until it is connected to the broker.
    async fn connected(db: &TestDatabase, broker: &TestBroker, amqp: &str, extra: &[&str]) -> Self {
        let worker = Self::start(db, broker, amqp, extra).await;
        eventually("connected", Duration::from_secs(10), || async {
            worker.health.broker_connected()
        })
        .await;
        worker
    }

    /// Asks for shutdown and waits for the worker to be gone.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("worker stops within 15 s")
            .expect("worker task");
    }
}

/// A worker connected through a fault proxy (in `mode` from the start),
/// with 30 s for a confirm, and a queue bound to every event.
async fn behind_proxy(
    db: &TestDatabase,
    broker: &mut TestBroker,
    mode: Mode,
) -> (FaultProxy, RunningWorker, lapin::Consumer) {
    let proxy = FaultProxy::start(broker_addr()).await;
    proxy.set(mode);
    let queue = broker.bind("all", "#", FieldTable::default()).await;
    let worker = RunningWorker::connected(
        db,
        broker,
        &proxy.amqp_url(),
        &["--confirm-timeout-ms", "30000"],
    )
    .await;
    (proxy, worker, queue)
}

async fn revocation_state(store: &dyn Store, tenant: &str, key: KeyId) -> EventState {
    let tenant = TenantId::parse(tenant).unwrap();
    let key = store
        .get_key(&tenant, key, chrono::Utc::now())
        .await
        .unwrap();
    key.revocation
        .expect("a revoked key has a revocation")
        .state
}

/// Waits (10 s at most) until the key's revocation is in `state`.
async fn wait_for_state(store: &dyn Store, tenant: &str, key: KeyId, state: EventState) {
    eventually(&format!("{state:?}"), Duration::from_secs(10), || async {
        revocation_state(store, tenant, key).await == state
    })
    .await;
}

async fn outbox_settled(store: &dyn Store) -> bool {
    let stats = store.outbox_stats().await.unwrap();
    stats.pending == 0
}

fn distinct(messages: &[EventMessage]) -> HashSet<String> {
    messages.iter().map(|m| m.event_id().to_string()).collect()
}

macro_rules! services {
    ($db:expr) => {{
        let Some(db) = $db else { return };
        let Some(broker) = TestBroker::new().await else {
            return;
        };
        (db, broker)
    }};
}

#[tokio::test]
async fn events_reach_a_bound_queue_with_the_documented_properties_and_body() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut all = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let mut acme_only = broker
        .bind("acme", "key.revoked.acme", FieldTable::default())
        .await;
    let worker = RunningWorker::start(&db, &broker, &amqp_url(), &[]).await;

    let acme = revocations(store.as_ref(), "acme", 3).await;
    let other = revocations(store.as_ref(), "other", 1).await;

    let first = next_delivery(&mut all, Duration::from_secs(10))
        .await
        .expect("a message");
    let p = &first.properties;
    let body: EventMessage = serde_json::from_slice(&first.data).unwrap();
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        Some(body.event_id().to_string())
    );
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("key.revoked"));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert!(p.timestamp().is_some());
    assert_eq!(first.routing_key.as_str(), "key.revoked.acme");
    let raw: serde_json::Value = serde_json::from_slice(&first.data).unwrap();
    for field in [
        "eventId",
        "type",
        "tenantId",
        "keyId",
        "revokedAt",
        "sequence",
    ] {
        assert!(raw.get(field).is_some(), "{field} in {raw}");
    }
    assert_eq!(body.event_id(), acme[0].1);
    assert_eq!(body.key_id(), Some(acme[0].0));
    assert_eq!(body.tenant_id().as_str(), "acme");

    let rest = collect_events(&mut all, 3, Duration::from_secs(10)).await;
    assert_eq!(distinct(&rest).len(), 3);
    let sequences: Vec<i64> = std::iter::once(body.sequence())
        .chain(rest.iter().map(|m| m.sequence()))
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert!(rest.iter().any(|m| m.event_id() == other[0].1));

    let acme_seen = collect_events(&mut acme_only, 4, Duration::from_millis(500)).await;
    assert_eq!(
        acme_seen.len(),
        3,
        "the tenant binding sees its tenant only"
    );

    wait_for_state(store.as_ref(), "acme", acme[2].0, EventState::Published).await;
    assert!(worker.health.broker_connected());
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn broker_loss_during_revokes_loses_nothing() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let proxy = FaultProxy::start(broker_addr()).await;
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let worker = RunningWorker::start(&db, &broker, &proxy.amqp_url(), &[]).await;

    let before = revocations(store.as_ref(), "acme", 10).await;
    let seen = collect_events(&mut queue, 10, Duration::from_secs(10)).await;
    assert_eq!(distinct(&seen).len(), before.len());
    // A consumer can see a message before its publisher sees the confirm.
    eventually("confirmed", Duration::from_secs(5), || {
        outbox_settled(store.as_ref())
    })
    .await;

    // The broker goes away: open connections drop, new ones are refused.
    proxy.set(Mode::Refuse);
    proxy.cut();
    eventually("worker notices", Duration::from_secs(10), || async {
        !worker.health.broker_connected()
    })
    .await;
    // Revokes go on: they only touch the database.
    let during = revocations(store.as_ref(), "acme", 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.outbox_stats().await.unwrap().pending, 20);
    assert!(!worker.health.broker_connected());

    proxy.set(Mode::Pass);
    let seen = collect_events(&mut queue, 20, Duration::from_secs(15)).await;
    let expected: HashSet<String> = during.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(distinct(&seen), expected, "every event after the outage");
    eventually("settled", Duration::from_secs(5), || {
        outbox_settled(store.as_ref())
    })
    .await;
    assert!(worker.health.broker_connected());
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_stalled_broker_times_out_and_the_event_is_retried() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let proxy = FaultProxy::start(broker_addr()).await;
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let worker = RunningWorker::connected(
        &db,
        &broker,
        &proxy.amqp_url(),
        &["--confirm-timeout-ms", "300"],
    )
    .await;

    proxy.set(Mode::Stall);
    let revoked = revocations(store.as_ref(), "acme", 1).await;
    let tenant = TenantId::parse("acme").unwrap();
    eventually(
        "a failed attempt recorded",
        Duration::from_secs(10),
        || async {
            let key = store
                .get_key(&tenant, revoked[0].0, chrono::Utc::now())
                .await
                .unwrap();
            let r = key.revocation.unwrap();
            r.attempts >= 1 && r.last_error.as_deref() == Some("no confirm from the broker in time")
        },
    )
    .await;

    proxy.set(Mode::Pass);
    proxy.cut();
    let seen = collect_events(&mut queue, 1, Duration::from_secs(20)).await;
    assert!(seen.iter().any(|m| m.event_id() == revoked[0].1));
    wait_for_state(store.as_ref(), "acme", revoked[0].0, EventState::Published).await;
    worker.stop().await;
    broker.cleanup().await;
}

/// A confirm that is slow to come (the broker writing to disk) holds back
/// nothing behind it: the next event is published while the one before is
/// still unconfirmed, and each is marked published only once its own
/// confirm arrives. Without the pipeline the second event waits for the
/// first one's confirm and this test times out (tried).
///
/// The link is slow until the worker is ready, so a worker that said ready
/// before its last request was answered (its reports consumer) would have
/// that answer held below and deliver nothing (tried: the first event is
/// never out).
#[tokio::test]
async fn a_slow_confirm_does_not_hold_back_the_next_event() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let (proxy, worker, mut queue) = behind_proxy(
        &db,
        &mut broker,
        Mode::SlowReplies(Duration::from_millis(150)),
    )
    .await;

    proxy.set(Mode::HoldReplies);
    let first = revocations(store.as_ref(), "acme", 1).await[0];
    let seen = collect_events(&mut queue, 1, Duration::from_secs(10)).await;
    assert_eq!(
        seen.first().map(EventMessage::event_id),
        Some(first.1),
        "the first event is out"
    );
    let second = revocations(store.as_ref(), "acme", 1).await[0];
    let seen = collect_events(&mut queue, 1, Duration::from_secs(10)).await;
    assert_eq!(
        seen.first().map(EventMessage::event_id),
        Some(second.1),
        "the second event is out while the first one's confirm is held"
    );
    for key in [first.0, second.0] {
        assert_eq!(
            revocation_state(store.as_ref(), "acme", key).await,
            EventState::Pending,
            "not published before its confirm"
        );
    }

    proxy.set(Mode::Pass);
    wait_for_state(store.as_ref(), "acme", first.0, EventState::Published).await;
    wait_for_state(store.as_ref(), "acme", second.0, EventState::Published).await;
    worker.stop().await;
    broker.cleanup().await;
}

/// An ingestor that joins while an event's confirm is on its way bound its
/// queue after the event was routed: it never gets it, so the event must
/// not wait for its report. The confirm is held, the late node's first
/// heartbeat recorded, the confirm released: the event counts the node that
/// was there before it went out, and reaches `applied` with its report.
/// Checked by marking with the time of the confirm instead of the send: the
/// late node was counted and the event stayed `published`.
#[tokio::test]
async fn a_node_that_joins_during_the_confirm_is_not_awaited() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let (proxy, worker, mut queue) = behind_proxy(&db, &mut broker, Mode::Pass).await;
    let heartbeat = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .ingestor_heartbeat(id, &format!("keyward.ingestor.{id}"), chrono::Utc::now())
                .await
                .unwrap();
        }
    };
    heartbeat("early").await;

    proxy.set(Mode::HoldReplies);
    let (key, event) = revocations(store.as_ref(), "acme", 1).await[0];
    let seen = collect_events(&mut queue, 1, Duration::from_secs(10)).await;
    assert_eq!(seen.first().map(EventMessage::event_id), Some(event));
    heartbeat("late").await;
    assert_eq!(
        revocation_state(store.as_ref(), "acme", key).await,
        EventState::Pending,
        "the confirm is still held"
    );
    proxy.set(Mode::Pass);

    wait_for_state(store.as_ref(), "acme", key, EventState::Published).await;
    let tenant = TenantId::parse("acme").unwrap();
    let r = store
        .get_key(&tenant, key, chrono::Utc::now())
        .await
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!(r.ingestors, 1, "only the node there before the send");
    store
        .record_applied(event, "early", chrono::Utc::now())
        .await
        .unwrap();
    wait_for_state(store.as_ref(), "acme", key, EventState::Applied).await;
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn two_workers_deliver_everything_once_without_sharing_leases() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let events = revocations(store.as_ref(), "acme", 600).await;
    let a = RunningWorker::start(
        &db,
        &broker,
        &amqp_url(),
        &["--batch", "25", "--worker-id", "a"],
    )
    .await;
    let b = RunningWorker::start(
        &db,
        &broker,
        &amqp_url(),
        &["--batch", "25", "--worker-id", "b"],
    )
    .await;

    let seen = collect_events(&mut queue, events.len(), Duration::from_secs(20)).await;
    let expected: HashSet<String> = events.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(distinct(&seen), expected);
    // Leases never expired here, so a duplicate would mean two workers
    // held one row at once.
    let extra = collect_events(&mut queue, 1, Duration::from_millis(500)).await;
    assert_eq!(
        seen.len() + extra.len(),
        events.len(),
        "no event published twice"
    );
    eventually("settled", Duration::from_secs(5), || {
        outbox_settled(store.as_ref())
    })
    .await;
    a.stop().await;
    b.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn refused_events_are_dead_lettered_then_retried_back() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    // A full queue that refuses every message: the broker nacks.
    let mut refusing = FieldTable::default();
    refusing.insert("x-max-length".into(), AMQPValue::LongInt(0));
    refusing.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let _full = broker.bind("full", "key.revoked.#", refusing).await;
    let worker = RunningWorker::start(
        &db,
        &broker,
        &amqp_url(),
        &["--retry-max-attempts", "3", "--poll-interval-ms", "50"],
    )
    .await;

    let revoked = revocations(store.as_ref(), "acme", 1).await;
    let tenant = TenantId::parse("acme").unwrap();
    wait_for_state(store.as_ref(), "acme", revoked[0].0, EventState::Failed).await;
    let key = store
        .get_key(&tenant, revoked[0].0, chrono::Utc::now())
        .await
        .unwrap();
    let r = key.revocation.unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(
        r.last_error.as_deref(),
        Some("the broker refused the event")
    );
    assert_eq!(store.outbox_stats().await.unwrap().dead, 1);

    // The operator fixes the broker and puts the event back.
    broker.delete_queue("full").await;
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    store
        .retry_revocation(&tenant, revoked[0].0, &keyward_core::testing::change())
        .await
        .unwrap();
    let seen = collect_events(&mut queue, 1, Duration::from_secs(10)).await;
    assert_eq!(seen[0].event_id(), revoked[0].1);
    wait_for_state(store.as_ref(), "acme", revoked[0].0, EventState::Published).await;
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn sqlite_single_worker_end_to_end_and_unrouted_events() {
    let (db, mut broker) = services!(Some(TestDatabase::sqlite().await));
    let store = db.store();
    keyward_core::telemetry::metrics();
    let mut acme = broker
        .bind("acme", "key.revoked.acme", FieldTable::default())
        .await;
    let worker = RunningWorker::start(&db, &broker, &amqp_url(), &[]).await;

    let routed = revocations(store.as_ref(), "acme", 5).await;
    // Nobody listens for this tenant: confirmed, returned, counted.
    let lonely = revocations(store.as_ref(), "lonely", 1).await;
    let seen = collect_events(&mut acme, 5, Duration::from_secs(10)).await;
    let expected: HashSet<String> = routed.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(distinct(&seen), expected);
    wait_for_state(store.as_ref(), "lonely", lonely[0].0, EventState::Published).await;
    // Counted once the mark returns to the worker, a moment after the
    // state it wrote can be read.
    eventually("counted", Duration::from_secs(5), || async {
        let metrics = keyward_core::telemetry::render_metrics();
        metrics.contains("keyward_events_unrouted_total")
            && metrics.contains("keyward_events_published_total")
    })
    .await;
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn acks_record_heartbeats_and_applied_events() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let worker = RunningWorker::start(&db, &broker, &amqp_url(), &[]).await;

    broker.send_ack(&serde_json::json!("not an ack")).await;
    broker.send_raw_ack(&vec![b'x'; 100 * 1024]).await;
    // Poison: ids the database refuses or that no ingestor sends. Dead-
    // lettered once each, never handed back: they must not starve the
    // real ones.
    for _ in 0..20 {
        for id in ["nul\u{0}byte", &"x".repeat(8_000)] {
            broker
                .send_ack(&serde_json::json!({
                    "type": "heartbeat", "ingestorId": id,
                    "queue": "keyward.ingestor.x", "at": chrono::Utc::now(),
                }))
                .await;
        }
    }
    broker
        .send_ack(&serde_json::json!({
            "type": "heartbeat", "ingestorId": "ing-1",
            "queue": "keyward.ingestor.ing-1", "at": chrono::Utc::now(),
        }))
        .await;
    eventually("heartbeat recorded", Duration::from_secs(10), || async {
        store
            .list_ingestors()
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == "ing-1")
    })
    .await;

    let revoked = revocations(store.as_ref(), "acme", 1).await;
    let seen = collect_events(&mut queue, 1, Duration::from_secs(10)).await;
    assert_eq!(seen[0].event_id(), revoked[0].1);
    wait_for_state(store.as_ref(), "acme", revoked[0].0, EventState::Published).await;
    let applied = serde_json::json!({
        "type": "applied", "eventId": revoked[0].1.to_string(),
        "ingestorId": "ing-1", "appliedAt": chrono::Utc::now(),
    });
    // Twice: a redelivered ack is one ack.
    broker.send_ack(&applied).await;
    broker.send_ack(&applied).await;
    let tenant = TenantId::parse("acme").unwrap();
    wait_for_state(store.as_ref(), "acme", revoked[0].0, EventState::Applied).await;
    let r = store
        .get_key(&tenant, revoked[0].0, chrono::Utc::now())
        .await
        .unwrap()
        .revocation
        .unwrap();
    assert_eq!((r.applied_by, r.ingestors), (1, 1));
    let listed = store.list_ingestors().await.unwrap();
    assert_eq!(listed.len(), 1, "only the real ingestor: {listed:?}");
    let metrics = keyward_core::telemetry::render_metrics();
    let invalid: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keyward_acks_total{result=\"invalid\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(invalid >= 40.0, "{metrics}");
    // Everything refused is in the dead-letter queue, for a look.
    let dead = broker.take_dead_letters(&broker.acks_queue).await;
    let count = |reason: &str| dead.iter().filter(|(r, _)| r == reason).count();
    assert_eq!(count("malformed"), 1, "{dead:?}");
    assert_eq!(count("invalid ingestorId"), 40, "{dead:?}");
    assert_eq!(count("oversized"), 1, "{dead:?}");
    assert!(
        dead.iter().all(|(_, len)| *len <= 64 * 1024),
        "bodies are cut"
    );
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn shutdown_finishes_the_batch_in_hand_and_holds_no_lease() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let events = revocations(store.as_ref(), "acme", 300).await;
    // A lease far longer than the test: a lease left behind would stall
    // its events until the test times out.
    let lease = ["--batch", "20", "--lease-seconds", "600"];
    let first = RunningWorker::start(&db, &broker, &amqp_url(), &lease).await;
    next_delivery(&mut queue, Duration::from_secs(10))
        .await
        .expect("delivery started");
    first.stop().await;

    let second = RunningWorker::start(&db, &broker, &amqp_url(), &lease).await;
    eventually(
        "the successor drains the rest",
        Duration::from_secs(15),
        || outbox_settled(store.as_ref()),
    )
    .await;
    let seen = collect_events(&mut queue, events.len(), Duration::from_secs(5)).await;
    assert!(distinct(&seen).len() >= events.len() - 1);
    second.stop().await;
    broker.cleanup().await;
}

/// Closes, from the broker's side, every connection whose client named
/// itself `name`; how many it closed (`None`: no `rabbitmqctl` here).
fn close_connections_named(name: &str) -> Option<usize> {
    let listed = match std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => {
            return keyward_core::testing::missing_service("rabbitmqctl", &e);
        }
    };
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in listed.lines().filter(|l| l.contains(&needle)) {
        let pid = line.split('\t').next().unwrap_or_default();
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by a test"])
            .status()
            .expect("rabbitmqctl close_connection");
        assert!(status.success());
        closed += 1;
    }
    Some(closed)
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened_and_nothing_is_lost() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let name = format!("worker-{}", KeyId::new());
    let worker = RunningWorker::start(&db, &broker, &amqp_url(), &["--worker-id", &name]).await;
    let before = revocations(store.as_ref(), "acme", 5).await;
    let seen = collect_events(&mut queue, 5, Duration::from_secs(10)).await;
    assert_eq!(distinct(&seen).len(), before.len());

    let Some(closed) = close_connections_named(&name) else {
        worker.stop().await;
        broker.cleanup().await;
        return;
    };
    assert_eq!(closed, 1, "the worker's one connection");
    let after = revocations(store.as_ref(), "acme", 5).await;
    let seen = collect_events(&mut queue, 5, Duration::from_secs(15)).await;
    let expected: HashSet<String> = after.iter().map(|(_, e)| e.to_string()).collect();
    assert!(expected.is_subset(&distinct(&seen)));
    eventually("settled", Duration::from_secs(5), || {
        outbox_settled(store.as_ref())
    })
    .await;
    assert!(worker.health.broker_connected());
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn housekeeping_reports_the_outbox_and_purges_delivered_history() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    keyward_core::telemetry::metrics();
    let _queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    revocations(store.as_ref(), "acme", 2).await;
    keyward_sync_worker::housekeeping::refresh_gauges(store.as_ref()).await;
    store
        .ingestor_heartbeat("node-1", "keyward.ingestor.node-1", chrono::Utc::now())
        .await
        .unwrap();
    keyward_sync_worker::housekeeping::refresh_ingestor_gauges(
        store.as_ref(),
        Duration::from_secs(30),
    )
    .await;
    let metrics = keyward_core::telemetry::render_metrics();
    assert!(metrics.contains("keyward_outbox_pending"), "{metrics}");
    assert!(metrics.contains("keyward_outbox_oldest_pending_age_seconds"));
    // Their values are the process's (other tests' workers set them too);
    // `Fleet::of` is tested for what they say.
    for gauge in [
        "keyward_ingestors_live",
        "keyward_ingestors_stale",
        "keyward_ingestors_max_unacked",
    ] {
        assert!(metrics.contains(gauge), "{gauge}");
    }

    let worker = RunningWorker::start(&db, &broker, &amqp_url(), &[]).await;
    eventually("settled", Duration::from_secs(10), || {
        outbox_settled(store.as_ref())
    })
    .await;
    worker.stop().await;
    // Undelivered rows are never purged; delivered ones past the retention are.
    let pending = revocations(store.as_ref(), "acme", 1).await;
    let purged = keyward_sync_worker::housekeeping::purge_old(store.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(purged.events, 2, "the delivered events go");
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.pending, 1, "the undelivered event stays");
    let tenant = TenantId::parse("acme").unwrap();
    let key = store
        .get_key(&tenant, pending[0].0, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(key.revocation.unwrap().state, EventState::Pending);

    // Audit records past their retention go; younger ones stay.
    let audit = keyward_core::store::audit::AuditQuery {
        limit: 200,
        ..Default::default()
    };
    let kept =
        keyward_sync_worker::housekeeping::purge_audit(store.as_ref(), Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(kept, 0);
    assert!(!store.list_audit(&audit).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let purged = keyward_sync_worker::housekeeping::purge_audit(store.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert!(purged > 0);
    assert!(store.list_audit(&audit).await.unwrap().is_empty());
    broker.cleanup().await;
}

#[tokio::test]
async fn the_worker_rides_out_a_database_outage_without_restarting() {
    let (db, mut broker) = services!(TestDatabase::postgres().await);
    let store = db.store();
    let mut queue = broker
        .bind("all", "key.revoked.#", FieldTable::default())
        .await;
    let worker =
        RunningWorker::start(&db, &broker, &amqp_url(), &["--poll-interval-ms", "200"]).await;
    let before = revocations(store.as_ref(), "acme", 2).await;
    let seen = collect_events(&mut queue, 2, Duration::from_secs(10)).await;
    assert_eq!(distinct(&seen).len(), before.len());
    // Their confirms recorded first: were the outage to cut the recording,
    // they would go out again only when their lease ends (30 s; the
    // conformance test `claim_lease_publish` covers a lease's end).
    eventually("settled before the outage", Duration::from_secs(10), || {
        outbox_settled(store.as_ref())
    })
    .await;

    // The database goes away (its connections cut, new ones refused) and
    // comes back: the worker's pool and its LISTEN connection recover.
    assert!(db.set_reachable(false).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(db.set_reachable(true).await);
    let after = revocations(store.as_ref(), "acme", 3).await;
    let seen = collect_events(&mut queue, 3, Duration::from_secs(15)).await;
    let expected: HashSet<String> = after.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(distinct(&seen), expected);
    eventually("settled", Duration::from_secs(10), || {
        outbox_settled(store.as_ref())
    })
    .await;
    worker.stop().await;
    broker.cleanup().await;
}
