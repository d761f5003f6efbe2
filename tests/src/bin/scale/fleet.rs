//! The whole system on PostgreSQL and RabbitMQ, as the storm and fan-out
//! parts run it: one API, sync workers and reference ingestors, started
//! and stopped as a part needs them, all release binaries at defaults.

use keyward_core::testing::TestDatabase;
use keyward_tests::Running;
use keyward_tests::amqp::{TestBroker, amqp_url, unique_prefix};
use keyward_tests::bench::{PASSWORD, admin, started};
use serde_json::{Value, json};

/// The brokers a fleet runs on.
pub struct Brokers {
    /// `KEYWARD_AMQP_URL` of the worker and ingestors: one or several.
    pub urls: String,
    /// `KEYWARD_QUORUM_QUEUE`.
    pub quorum: bool,
    /// One address, for the bench's own declarations and clean-up.
    pub admin: String,
}

impl Brokers {
    /// The broker the tests use.
    pub fn local() -> Self {
        Self {
            urls: amqp_url(),
            quorum: false,
            admin: amqp_url(),
        }
    }
}

pub struct Fleet {
    pub db: TestDatabase,
    brokers: Brokers,
    pub broker: TestBroker,
    pub api: Running,
    pub http: reqwest::Client,
    pub workers: Vec<Running>,
    pub ingestors: Vec<Running>,
    verifier: String,
    /// Every ingestor id started, for their queues' clean-up.
    ingestor_ids: Vec<String>,
}

impl Fleet {
    /// A fresh database and broker prefix, the API on them, its verifier
    /// key for the ingestors, and tenant `acme` with a role `shippers`
    /// that may ingest anywhere. `None` when a service is missing.
    pub async fn new() -> Option<Self> {
        Self::on(Brokers::local()).await
    }

    /// As `new`, on `brokers`.
    pub async fn on(brokers: Brokers) -> Option<Self> {
        let db = TestDatabase::postgres_unmigrated().await?;
        let broker = TestBroker::at(&brokers.admin, &unique_prefix()).await?;
        let api = started(
            "keyward-api",
            &[
                ("KEYWARD_DATABASE_URL", db.url.as_str()),
                ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
            ],
        )
        .await;
        let http = reqwest::Client::new();
        let mut fleet = Self {
            db,
            brokers,
            broker,
            api,
            http,
            workers: Vec::new(),
            ingestors: Vec::new(),
            verifier: String::new(),
            ingestor_ids: Vec::new(),
        };
        let created = fleet
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants/_platform/apikeys",
                Some(json!({"name": "ingestors", "roles": ["verifier"]})),
            )
            .await;
        fleet.verifier = created["secret"].as_str().unwrap().to_owned();
        fleet
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants",
                Some(json!({"id": "acme"})),
            )
            .await;
        fleet
            .admin(
                reqwest::Method::PUT,
                "/api/v1/tenants/acme/roles/shippers",
                Some(json!({"privileges": [{"privilege": "ingestor"}]})),
            )
            .await;
        Some(fleet)
    }

    /// An admin request that must succeed; its JSON answer.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let res = admin(&self.http, &self.api, method, path, body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// A key of `acme` holding `shippers`; its (id, secret).
    pub async fn create_key(&self, name: &str) -> (String, String) {
        let created = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants/acme/apikeys",
                Some(json!({"name": name, "roles": ["shippers"]})),
            )
            .await;
        (
            created["keyId"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Starts `n` more sync workers.
    pub async fn start_workers(&mut self, n: usize) {
        let quorum = self.brokers.quorum.to_string();
        for _ in 0..n {
            let worker = started(
                "keyward-sync-worker",
                &[
                    ("KEYWARD_DATABASE_URL", self.db.url.as_str()),
                    ("KEYWARD_AMQP_URL", &self.brokers.urls),
                    ("KEYWARD_QUORUM_QUEUE", &quorum),
                    ("KEYWARD_EXCHANGE", &self.broker.exchange),
                    ("KEYWARD_ACKS_QUEUE", &self.broker.acks_queue),
                ],
            )
            .await;
            self.workers.push(worker);
        }
    }

    /// Starts `n` more reference ingestors, each on its own queue.
    pub async fn start_ingestors(&mut self, n: usize) {
        let quorum = self.brokers.quorum.to_string();
        let api = self.api.url("");
        for _ in 0..n {
            let id = format!(
                "{}-{}",
                self.broker.exchange.trim_end_matches(".events"),
                self.ingestor_ids.len()
            );
            let node = started(
                "keyward-ingestor",
                &[
                    ("KEYWARD_API_URL", api.as_str()),
                    ("KEYWARD_VERIFIER_KEY", self.verifier.as_str()),
                    ("KEYWARD_AMQP_URL", &self.brokers.urls),
                    ("KEYWARD_QUORUM_QUEUE", &quorum),
                    ("KEYWARD_EXCHANGE", &self.broker.exchange),
                    ("KEYWARD_ACKS_QUEUE", &self.broker.acks_queue),
                    ("KEYWARD_INGESTOR_ID", &id),
                ],
            )
            .await;
            self.ingestors.push(node);
            self.ingestor_ids.push(id);
        }
    }

    /// Stops every ingestor and deletes their queues.
    pub async fn stop_ingestors(&mut self) {
        self.ingestors.clear();
        for id in &self.ingestor_ids {
            self.broker.delete_ingestor_queues(id).await;
        }
    }

    pub async fn cleanup(mut self) {
        self.stop_ingestors().await;
        self.workers.clear();
        self.broker.cleanup().await;
    }
}
