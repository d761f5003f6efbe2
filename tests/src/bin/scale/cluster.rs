//! (4) A RabbitMQ cluster: three nodes on this machine
//! (`scripts/rabbitmq-cluster.sh`), quorum queues, and the worker and
//! three ingestors given all three addresses. 20,000 revokes
//! (`KEYWARD_SCALE_CLUSTER`) written in the store, one worker draining
//! them; once a third have been applied everywhere, the first node — the
//! one every process connected to — is killed (`kill -9`). Measured: when
//! reports flow again after the kill, when every event was applied by
//! every ingestor, and that nothing was lost.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use keyward_tests::bench::env_or;
use sqlx::PgPool;

use crate::fleet::{Brokers, Fleet};
use crate::report;
use crate::storm::{INGESTORS, count, create_keys, lost, rate, revoke_in_store, secs};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/rabbitmq-cluster.sh")
}

fn cluster(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .output()
        .expect("run scripts/rabbitmq-cluster.sh");
    assert!(
        out.status.success(),
        "rabbitmq-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub async fn run() {
    let events: usize = env_or("KEYWARD_SCALE_CLUSTER", 20_000);
    cluster(&["stop"]);
    cluster(&["start"]);
    let urls = cluster(&["urls"]);
    // The bench's own connection goes to a node that stays up.
    let admin = urls.split(',').nth(1).unwrap().to_owned();
    let brokers = Brokers {
        urls,
        quorum: true,
        admin,
    };
    let Some(mut fleet) = Fleet::on(brokers).await else {
        cluster(&["stop"]);
        return;
    };
    fleet.start_ingestors(INGESTORS).await;
    let store = fleet.db.store();
    let db = PgPool::connect(fleet.db.url.as_str()).await.unwrap();
    let keys = create_keys(&store, events).await;
    revoke_in_store(&store, keys).await;
    let want = (INGESTORS * events) as i64;
    let acks = || count(&db, "SELECT COUNT(*) FROM event_acks");

    let began = Instant::now();
    fleet.start_workers(1).await;
    until(|| async { acks().await >= want / 3 }).await;
    let before_kill = acks().await;
    let on_node_1 = cluster(&["connections", "1"]);
    cluster(&["kill", "1"]);
    let killed = Instant::now();
    let killed_at = killed.duration_since(began);
    // For each ingestor, the longest time without a new report of its own
    // from the kill until every report is in: how long its delivery
    // stopped while the processes moved to the other nodes and the quorum
    // queues elected new leaders.
    let mut seen: HashMap<String, (i64, Instant)> = HashMap::new();
    let mut stall = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "not applied within 5 minutes");
        let per_ingestor: Vec<(String, i64)> =
            sqlx::query_as("SELECT ingestor_id, COUNT(*) FROM event_acks GROUP BY ingestor_id")
                .fetch_all(&db)
                .await
                .unwrap();
        let now = Instant::now();
        for (id, n) in &per_ingestor {
            let (last, since) = seen.entry(id.clone()).or_insert((*n, killed));
            if *n > *last {
                stall = stall.max(since.elapsed());
                (*last, *since) = (*n, now);
            }
        }
        if per_ingestor.iter().map(|(_, n)| n).sum::<i64>() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_applied = began.elapsed();
    let lost = lost(&db).await;
    let pending = count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL",
    )
    .await;

    let text = report::table(
        &[
            &format!("{events} revokes, 3 nodes, quorum queues, {INGESTORS} ingestors, 1 worker"),
            "node 1 killed",
            "longest pause in an ingestor's reports after the kill",
            "all applied by all",
            "lost",
        ],
        &[vec![
            format!("every process connected to node 1 first ({on_node_1} connections there)"),
            format!(
                "after {} ({before_kill} of {want} reports in)",
                secs(killed_at)
            ),
            format!("{:.2} s", stall.as_secs_f64()),
            format!(
                "{} ({:.0} events/s overall; {pending} pending)",
                secs(all_applied),
                rate(events, all_applied)
            ),
            lost,
        ]],
    );
    println!("{text}");
    report::write("cluster", &text);
    drop(db);
    fleet.cleanup().await;
    cluster(&["stop"]);
}

/// Polls `done` every 20 ms; panics after 5 minutes.
async fn until<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done().await {
        assert!(Instant::now() < deadline, "not within 5 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
