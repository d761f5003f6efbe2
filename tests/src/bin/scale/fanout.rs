//! (3) Fan-out: 1, 4 and 16 reference ingestors (processes on loopback),
//! one sync worker: revoke → every node rejects, clock from the DELETE's
//! answer (each node called on its own until it answers 401), and the
//! worker's publish → confirm time, as the count of nodes grows.

use keyward_tests::bench::{env_or, histogram_quantile, metrics, ms, quantile, until_all};

use crate::fleet::Fleet;
use crate::report;

pub async fn run() {
    let keys: usize = env_or("KEYWARD_SCALE_FANOUT_KEYS", 100);
    let Some(mut fleet) = Fleet::new().await else {
        return;
    };
    let mut rows = Vec::new();
    for nodes in [1, 4, 16] {
        fleet.stop_ingestors().await;
        fleet.workers.clear();
        fleet.start_workers(1).await;
        fleet.start_ingestors(nodes).await;
        let mut took = Vec::with_capacity(keys);
        for i in 0..keys {
            let (id, secret) = fleet.create_key(&format!("fan{nodes}-{i}")).await;
            let cached = until_all(&fleet.http, &fleet.ingestors, &secret, 202).await;
            assert!(cached.is_zero(), "a new key was not accepted at once");
            fleet
                .admin(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/tenants/acme/apikeys/{id}"),
                    None,
                )
                .await;
            took.push(until_all(&fleet.http, &fleet.ingestors, &secret, 401).await);
        }
        took.sort();
        let worker = metrics(&fleet.workers[0]).await;
        let confirm = |q: f64| {
            histogram_quantile(&worker, "keyward_event_publish_seconds", q)
                .map_or("—".into(), |s| format!("≤ {:.2} ms", s * 1e3))
        };
        rows.push(vec![
            nodes.to_string(),
            format!(
                "p50 {}, **p99 {}**, max {}",
                ms(quantile(&took, 0.5)),
                ms(quantile(&took, 0.99)),
                ms(*took.last().unwrap())
            ),
            format!("p50 {}, p99 {}", confirm(0.5), confirm(0.99)),
        ]);
    }
    let text = report::table(
        &[
            "ingestors",
            &format!("revoke → all reject ({keys} keys, PostgreSQL)"),
            "publish → confirm (worker's histogram, bucket bounds)",
        ],
        &rows,
    );
    println!("{text}");
    report::write("fanout", &text);
    fleet.cleanup().await;
}
