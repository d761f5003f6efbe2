//! Revoke-to-reject latency (issue #6): the DELETE is answered → both
//! ingestors answer 401 for a key they had cached. The whole system runs
//! in this process on the local PostgreSQL and RabbitMQ — the API, the sync
//! worker and two reference ingestors, each started by its binary's own
//! `startup::Application` — over real connections. (`bench-verify
//! propagation` measures the same with the release binaries as processes.)
//!
//! Run: `cargo bench -p keyward-tests --bench propagation`
//! (`KEYWARD_BENCH_KEYS` changes the 200 keys).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use keyward_api::settings::Settings as ApiSettings;
use keyward_core::ids::Password;
use keyward_core::password::Argon2Settings;
use keyward_core::testing::TestDatabase;
use keyward_tests::amqp::{TestBroker, amqp_url};
use serde_json::{Value, json};

const PASSWORD: &str = "benchmark password";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let keys: usize = std::env::var("KEYWARD_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let db = TestDatabase::postgres().await.expect("PostgreSQL");
    let broker = TestBroker::new().await.expect("RabbitMQ");

    // The API.
    let app = keyward_api::startup::Application::build(ApiSettings {
        admin_password: Some(Password::parse(PASSWORD).unwrap()),
        argon2: Argon2Settings::cheap(),
        ..ApiSettings::local(db.url.clone())
    })
    .await
    .unwrap();
    let api = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{api}{path}"))
            .basic_auth("admin", Some(PASSWORD))
            .json(&body)
            .send()
    };

    // The worker.
    let cli = keyward_sync_worker::settings::Cli::try_parse_from([
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
    let worker = keyward_sync_worker::startup::Application::build(&cli.settings)
        .await
        .unwrap();
    let stop_worker = worker.shutdown_token();
    let worker = tokio::spawn(worker.run_until_stopped());

    // Two ingestor nodes.
    let verifier: Value = admin(
        reqwest::Method::POST,
        "/api/v1/tenants/_platform/apikeys",
        json!({"name": "ingestors", "roles": ["verifier"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let verifier_key = verifier["secret"].as_str().unwrap();
    let prefix = broker.exchange.replace(".events", "");
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        nodes.push(
            ingestor(
                &http,
                &api,
                verifier_key,
                &broker,
                &format!("{prefix}-{name}"),
            )
            .await,
        );
    }

    admin(
        reqwest::Method::POST,
        "/api/v1/tenants",
        json!({"id": "acme"}),
    )
    .await
    .unwrap();
    admin(
        reqwest::Method::PUT,
        "/api/v1/tenants/acme/roles/shippers",
        json!({"privileges": [{"privilege": "ingestor"}]}),
    )
    .await
    .unwrap();

    let mut samples = Vec::with_capacity(keys);
    for _ in 0..keys {
        let created: Value = admin(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/apikeys",
            json!({"name": format!("k-{}", ulid::Ulid::generate()), "roles": ["shippers"]}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let key_id = created["keyId"].as_str().unwrap().to_owned();
        let secret = created["secret"].as_str().unwrap().to_owned();
        for node in &nodes {
            assert_eq!(
                ingest(&http, node, &secret).await,
                202,
                "cached at every node"
            );
        }
        let res = admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenants/acme/apikeys/{key_id}"),
            Value::Null,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 202);
        let answered = Instant::now();
        let mut rejected = [false, false];
        while !rejected.iter().all(|r| *r) {
            for (i, node) in nodes.iter().enumerate() {
                if !rejected[i] {
                    rejected[i] = ingest(&http, node, &secret).await == 401;
                }
            }
            assert!(
                answered.elapsed() < Duration::from_secs(30),
                "never rejected"
            );
        }
        samples.push(answered.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "revoke answered → both ingestors 401, {} keys (PostgreSQL): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    stop_worker.cancel();
    let _ = worker.await;
    for name in ["a", "b"] {
        let queue = format!("keyward.ingestor.{prefix}-{name}");
        let _ = broker
            .channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    broker.cleanup().await;
}

/// One reference ingestor, as its binary starts it; its base URL once it
/// is ready (receiving revocations).
async fn ingestor(
    http: &reqwest::Client,
    api: &str,
    verifier_key: &str,
    broker: &TestBroker,
    id: &str,
) -> String {
    let cli = keyward_ingestor::settings::Cli::try_parse_from([
        "keyward-ingestor",
        "--api-url",
        api,
        "--verifier-key",
        verifier_key,
        "--amqp-url",
        &amqp_url(),
        "--exchange",
        &broker.exchange,
        "--acks-queue",
        &broker.acks_queue,
        "--ingestor-id",
        id,
        "--listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    let node = keyward_ingestor::startup::Application::build(cli.settings)
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}", node.port());
    tokio::spawn(node.run_until_stopped());
    let ready = Instant::now();
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "ingestor {id} never ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    url
}

async fn ingest(http: &reqwest::Client, node: &str, secret: &str) -> u16 {
    http.post(format!("{node}/ingest/clicks"))
        .bearer_auth(secret)
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
