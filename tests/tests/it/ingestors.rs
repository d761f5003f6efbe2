//! The whole system from real binaries: `keyward-api`, `keyward-sync-worker`
//! and `keyward-ingestor` nodes on one PostgreSQL database and the real
//! RabbitMQ (an exchange and acks queue of the test's own).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::testing::TestDatabase;
use keyward_core::token::ApiKeyToken;
use keyward_ingestor::client::{VERIFY_TIMEOUT, VerifyClient};
use keyward_ingestor::consumer::{ConsumerSettings, RevocationConsumer};
use keyward_ingestor::verifier::Verifier;
use keyward_tests::amqp::TestBroker;
use keyward_tests::proxy::{FaultProxy, Mode};
use keyward_tests::{Running, eventually, start, start_api};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const PASSWORD: &str = "admin-pw-ingestors-e2e";

struct System {
    db: TestDatabase,
    broker: TestBroker,
    api: Running,
    worker: Running,
    verifier_key: String,
    http: reqwest::Client,
    /// Prefix of this test's ingestor ids (queues are per id).
    prefix: String,
}

impl System {
    /// `liveness`: the worker's and the API's liveness window, in seconds.
    async fn start(liveness: &str) -> Option<Self> {
        Self::start_with(liveness, &[]).await
    }

    /// With `worker_env` added to the worker's settings.
    async fn start_with(liveness: &str, worker_env: &[(&str, &str)]) -> Option<Self> {
        let broker = TestBroker::new().await?;
        Self::start_on(liveness, broker, worker_env).await
    }

    /// With the exchange and queues named after `prefix` (for broker
    /// permissions made before the system starts).
    async fn start_with_prefix(
        liveness: &str,
        prefix: &str,
        worker_env: &[(&str, &str)],
    ) -> Option<Self> {
        let broker = TestBroker::with_prefix(prefix).await?;
        Self::start_on(liveness, broker, worker_env).await
    }

    async fn start_on(
        liveness: &str,
        broker: TestBroker,
        worker_env: &[(&str, &str)],
    ) -> Option<Self> {
        let db = TestDatabase::postgres_unmigrated().await?;
        let mut api = start_api(&[
            ("KEYWARD_DATABASE_URL", db.url.as_str()),
            ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
            ("KEYWARD_INGESTOR_LIVENESS_SECONDS", liveness),
        ]);
        api.wait_ready("/readyz", READY).await;
        let amqp = keyward_tests::amqp::amqp_url();
        let mut env = vec![
            ("KEYWARD_DATABASE_URL", db.url.as_str()),
            ("KEYWARD_AMQP_URL", amqp.as_str()),
            ("KEYWARD_EXCHANGE", broker.exchange.as_str()),
            ("KEYWARD_ACKS_QUEUE", broker.acks_queue.as_str()),
            ("KEYWARD_INGESTOR_LIVENESS_SECONDS", liveness),
        ];
        env.extend_from_slice(worker_env);
        let mut worker = start("keyward-sync-worker", &env);
        worker.wait_ready("/readyz", READY).await;
        let prefix = broker.exchange.replace(".events", "");
        let mut system = Self {
            db,
            broker,
            api,
            worker,
            verifier_key: String::new(),
            http: reqwest::Client::new(),
            prefix,
        };
        let verifier = system
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants/_platform/apikeys",
                Some(json!({"name": "ingestors", "roles": ["verifier"]})),
            )
            .await;
        system.verifier_key = verifier["secret"].as_str().unwrap().to_owned();
        system
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants",
                Some(json!({"id": "acme"})),
            )
            .await;
        system
            .admin(
                reqwest::Method::PUT,
                "/api/v1/tenants/acme/roles/shippers",
                Some(json!({"privileges": [
                    {"privilege": "ingestor", "resource": {"stream": "clicks-*"}}
                ]})),
            )
            .await;
        Some(system)
    }

    /// An admin request that must succeed; its JSON body.
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let res = self.admin_call(method, path, body).await;
        res.json().await.unwrap_or(Value::Null)
    }

    /// An admin request that must succeed; the answer.
    async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, self.api.url(path))
            .basic_auth("admin", Some(PASSWORD));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res
    }

    /// A new key of `acme` holding `shippers`: (key id, secret).
    async fn key(&self) -> (String, String) {
        let created = self
            .admin(
                reqwest::Method::POST,
                "/api/v1/tenants/acme/apikeys",
                Some(
                    json!({"name": format!("k-{}", ulid::Ulid::generate()), "roles": ["shippers"]}),
                ),
            )
            .await;
        (
            created["keyId"].as_str().unwrap().to_owned(),
            created["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Revokes `key_id`; the event id its answer names (`Keyward-Event-Id`).
    async fn revoke(&self, key_id: &str) -> String {
        let path = format!("/api/v1/tenants/acme/apikeys/{key_id}");
        announced(self, reqwest::Method::DELETE, &path, None).await
    }

    async fn revocation(&self, key_id: &str) -> Value {
        let key = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/tenants/acme/apikeys/{key_id}"),
                None,
            )
            .await;
        key["revocation"].clone()
    }

    /// The ingestors as `GET /api/v1/ingestors` lists them.
    async fn ingestors(&self) -> Vec<serde_json::Value> {
        let list = self
            .admin(reqwest::Method::GET, "/api/v1/ingestors", None)
            .await;
        list["items"].as_array().unwrap().clone()
    }

    /// The ids of the ingestors the API lists as live.
    async fn live_ingestors(&self) -> Vec<String> {
        self.ingestors()
            .await
            .iter()
            .filter(|i| i["live"] == true)
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until the API counts `n` ingestors live. A test that waits
    /// for a revocation's `applied` starts here: `applied` counts the nodes
    /// live at the event's publication, and a node whose first heartbeat
    /// the worker had not yet recorded leaves it `published` for good
    /// (seen under CI's load: "applied: not within 10s").
    async fn until_live(&self, n: usize) {
        eventually("ingestors live", Duration::from_secs(10), || async {
            self.live_ingestors().await.len() == n
        })
        .await;
    }

    /// Starts an ingestor node named `{prefix}-{name}`, through `amqp`.
    async fn ingestor(&self, name: &str, amqp: &str) -> Running {
        self.ingestor_with(name, amqp, &[]).await
    }

    async fn ingestor_with(&self, name: &str, amqp: &str, extra: &[(&str, &str)]) -> Running {
        let id = format!("{}-{name}", self.prefix);
        let api_url = self.api.url("");
        let mut env = vec![
            ("KEYWARD_API_URL", api_url.as_str()),
            ("KEYWARD_VERIFIER_KEY", self.verifier_key.as_str()),
            ("KEYWARD_AMQP_URL", amqp),
            ("KEYWARD_EXCHANGE", self.broker.exchange.as_str()),
            ("KEYWARD_ACKS_QUEUE", self.broker.acks_queue.as_str()),
            ("KEYWARD_INGESTOR_ID", id.as_str()),
            ("KEYWARD_HEARTBEAT_SECONDS", "1"),
        ];
        env.extend_from_slice(extra);
        let mut node = start("keyward-ingestor", &env);
        node.wait_ready("/readyz", READY).await;
        node
    }

    async fn cleanup(self) {
        let ch = &self.broker.channel;
        for name in ["a", "b", "c", "lib"] {
            let queue = format!("keyward.ingestor.{}-{name}", self.prefix);
            let dead = keyward_core::amqp::dead_letter_queue(&queue);
            for q in [queue, dead] {
                let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
            }
        }
        drop((self.api, self.worker, self.db));
        self.broker.cleanup().await;
    }
}

/// The embeddable library's verifier, asking the API at `api` (this
/// system's, or a proxy in front of it) with the system's verifier key.
fn library_verifier(sys: &System, api: &str) -> Arc<Verifier> {
    let client = VerifyClient::new(
        &url::Url::parse(api).unwrap(),
        ApiKeyToken::parse(&sys.verifier_key).unwrap(),
        VERIFY_TIMEOUT,
    )
    .unwrap();
    Arc::new(Verifier::new(client, 1000))
}

/// The library's consumer as node `{prefix}-lib` (its queue is removed by
/// `cleanup`), through the broker at `amqp`, bound with `binding`.
fn library_consumer(
    sys: &System,
    amqp: &str,
    binding: &str,
    verifier: &Arc<Verifier>,
) -> RevocationConsumer {
    RevocationConsumer::new(
        ConsumerSettings {
            amqp_url: amqp.parse().unwrap(),
            exchange: sys.broker.exchange.clone(),
            ingestor_id: format!("{}-lib", sys.prefix),
            binding: binding.into(),
            acks_queue: sys.broker.acks_queue.clone(),
            quorum: false,
            prefetch: 16,
            heartbeat_every: Duration::from_secs(1),
        },
        Arc::clone(verifier),
    )
}

/// Waits until the API lists node `ingestor_id` as live (its heartbeats
/// arrive: its queue is bound and reports flow).
async fn library_node_live(sys: &System, ingestor_id: &str) {
    eventually("the library node live", Duration::from_secs(10), || async {
        sys.live_ingestors()
            .await
            .iter()
            .any(|id| id == ingestor_id)
    })
    .await;
}

/// `POST /ingest/{stream}` with `secret`; the status.
async fn ingest(http: &reqwest::Client, node: &Running, stream: &str, secret: &str) -> u16 {
    http.post(node.url(&format!("/ingest/{stream}")))
        .bearer_auth(secret)
        .body("{\"event\": 1}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn two_ingestors_accept_then_reject_at_once_and_the_revocation_is_applied() {
    let Some(sys) = System::start("30").await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let a = sys.ingestor("a", &amqp).await;
    let b = sys.ingestor("b", &amqp).await;
    let (key_id, secret) = sys.key().await;
    let http = &sys.http;

    for node in [&a, &b] {
        assert_eq!(ingest(http, node, "clicks-eu", &secret).await, 202);
        assert_eq!(
            ingest(http, node, "payments", &secret).await,
            403,
            "stream privileges"
        );
        assert_eq!(ingest(http, node, "clicks-eu", "kw_garbage").await, 401);
        let big = vec![b'x'; 1024 * 1024 + 1];
        let res = http
            .post(node.url("/ingest/clicks-eu"))
            .bearer_auth(&secret)
            .body(big)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413);
    }
    // Both nodes know both ingestors before the revoke, so both count.
    sys.until_live(2).await;

    let event = sys.revoke(&key_id).await;
    let revoked_at = Instant::now();
    eventually("both reject", Duration::from_secs(5), || async {
        ingest(http, &a, "clicks-eu", &secret).await == 401
            && ingest(http, &b, "clicks-eu", &secret).await == 401
    })
    .await;
    eprintln!("revoke → both reject: {:?}", revoked_at.elapsed());

    eventually("applied", Duration::from_secs(10), || async {
        sys.revocation(&key_id).await["state"] == "applied"
    })
    .await;
    let e = sys
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/events/{event}"),
            None,
        )
        .await;
    assert_eq!(
        (&e["state"], &e["appliedBy"], &e["ingestors"], &e["keyId"]),
        (&json!("applied"), &json!(2), &json!(2), &json!(key_id)),
        "the event's own view agrees: {e}"
    );
    assert!(e["publishedAt"].is_string());
    let r = sys.revocation(&key_id).await;
    assert_eq!(
        (r["appliedBy"].as_i64(), r["ingestors"].as_i64()),
        (Some(2), Some(2))
    );
    for i in &sys.ingestors().await {
        assert_eq!(i["unacked"], 0, "{i}");
        assert!(
            i["queue"]
                .as_str()
                .unwrap()
                .starts_with("keyward.ingestor.")
        );
    }

    // The same event again (a redelivery): harmless, still one ack each.
    let event_id = r["eventId"].as_str().unwrap();
    let body = json!({"eventId": event_id, "type": "key.revoked", "tenantId": "acme",
                      "keyId": key_id, "revokedAt": chrono::Utc::now(), "sequence": 1});
    sys.broker
        .publish_event("key.revoked.acme", body.to_string().as_bytes())
        .await;
    eventually("duplicate applied", Duration::from_secs(5), || async {
        let m = keyward_tests::bench::metrics(&a).await;
        m.contains("keyward_revocations_applied_total{redelivered=\"false\"} 2")
    })
    .await;
    assert_eq!(ingest(http, &a, "clicks-eu", &secret).await, 401);
    let r = sys.revocation(&key_id).await;
    assert_eq!(r["appliedBy"].as_i64(), Some(2));
    let m = keyward_tests::bench::metrics(&a).await;
    assert!(m.contains("keyward_ingest_total"), "{m}");
    assert!(m.contains("keyward_revocation_propagation_seconds"), "{m}");

    // A message that is no event, and an oversized one: each node moves
    // them to its dead-letter queue and goes on (never requeued).
    for body in [b"not an event".to_vec(), vec![b'{'; 100 * 1024]] {
        sys.broker.publish_event("key.revoked.acme", &body).await;
    }
    for name in ["a", "b"] {
        let queue = format!("keyward.ingestor.{}-{name}", sys.prefix);
        let mut dead = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while dead.len() < 2 && Instant::now() < deadline {
            dead.extend(sys.broker.take_dead_letters(&queue).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(dead.len(), 2, "{name}: {dead:?}");
        let ok =
            |(reason, len): &(String, usize)| reason == "not a known event" && *len <= 64 * 1024;
        assert!(dead.iter().all(ok), "{name}: {dead:?}");
    }
    assert_eq!(
        ingest(http, &a, "clicks-eu", &secret).await,
        401,
        "still serving"
    );

    // Neither the caller's key nor the node's own verifier key is logged.
    for mut node in [a, b] {
        node.signal("TERM");
        assert!(
            node.exit_status(Duration::from_secs(15)).await.success(),
            "SIGTERM exits 0"
        );
        let log = node.stderr_text().await;
        assert!(log.contains("event applied"), "{log}");
        for secret in [secret.as_str(), sys.verifier_key.as_str(), "guest:guest"] {
            assert!(!log.contains(secret), "a secret in the ingestor's log");
        }
    }
    sys.cleanup().await;
}

/// The worker and an ingestor at `RUST_LOG=trace` (pretty and JSON): after keys were
/// verified, refused and revoked through them, neither's log nor
/// `/metrics` holds a secret, the node's verifier key, a broker password,
/// a digest or a hash (issue #13; the API's own scan is `secret_scan`).
#[tokio::test]
async fn the_worker_and_an_ingestor_at_trace_show_no_secret_json() {
    trace_scan("json").await;
}

#[tokio::test]
async fn the_worker_and_an_ingestor_at_trace_show_no_secret_pretty() {
    trace_scan("pretty").await;
}

async fn trace_scan(format: &str) {
    let trace = [("RUST_LOG", "trace"), ("KEYWARD_LOG_FORMAT", format)];
    let Some(mut sys) = System::start_with("30", &trace).await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let mut node = sys.ingestor_with("c", &amqp, &trace).await;
    sys.until_live(1).await;
    let (key_id, secret) = sys.key().await;
    let http = &sys.http;
    assert_eq!(ingest(http, &node, "clicks-eu", &secret).await, 202);
    let forged = format!("{}AAAAAA", &secret[..secret.len() - 6]);
    assert_eq!(ingest(http, &node, "clicks-eu", &forged).await, 401);
    sys.revoke(&key_id).await;
    eventually("applied", Duration::from_secs(10), || async {
        sys.revocation(&key_id).await["state"] == "applied"
    })
    .await;
    assert_eq!(ingest(http, &node, "clicks-eu", &secret).await, 401);
    let mut seen = Vec::new();
    for running in [&node, &sys.worker] {
        let metrics = reqwest::get(running.url("/metrics")).await.unwrap();
        seen.push(("/metrics", metrics.text().await.unwrap()));
    }
    node.signal("TERM");
    assert!(node.exit_status(Duration::from_secs(15)).await.success());
    seen.push(("the ingestor's log", node.stderr_text().await));
    sys.worker.signal("TERM");
    assert!(
        sys.worker
            .exit_status(Duration::from_secs(15))
            .await
            .success()
    );
    seen.push(("the worker's log", sys.worker.stderr_text().await));
    let verifier = sys.verifier_key.clone();
    let secrets = [
        secret.as_str(),
        &secret[secret.len() - 20..],
        forged.as_str(),
        verifier.as_str(),
        &verifier[verifier.len() - 20..],
        "guest:guest",
        "sha256$",
        "$argon2",
    ];
    for (place, text) in &seen {
        assert!(text.len() > 1000, "{place} was written");
        for (i, needle) in secrets.iter().enumerate() {
            // The index, not the secret: the assertion's message is a log too.
            assert!(!text.contains(needle), "secret #{i} in {place}");
        }
    }
    assert!(seen[2].1.contains("TRACE"), "the ingestor logged at trace");
    sys.cleanup().await;
}

/// A client with a valid key that trickles its body is cut off: `408`
/// after `KEYWARD_REQUEST_TIMEOUT_SECONDS`, and the connection closes.
#[tokio::test]
async fn an_ingestor_cuts_off_a_trickled_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(sys) = System::start("30").await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let node = sys
        .ingestor_with("c", &amqp, &[("KEYWARD_REQUEST_TIMEOUT_SECONDS", "1")])
        .await;
    let (_, secret) = sys.key().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    let head = format!(
        "POST /ingest/clicks-eu HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {secret}\r\n\
         Content-Length: 100\r\n\r\npartial"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    drop(node);
    sys.cleanup().await;
}

#[tokio::test]
async fn a_restarted_ingestor_rejects_a_key_revoked_while_it_was_down() {
    let Some(sys) = System::start("2").await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let mut a = sys.ingestor("a", &amqp).await;
    let b = sys.ingestor("b", &amqp).await;
    let (key_id, secret) = sys.key().await;
    let http = &sys.http;
    assert_eq!(ingest(http, &a, "clicks-1", &secret).await, 202);
    assert_eq!(ingest(http, &b, "clicks-1", &secret).await, 202);

    a.signal("KILL");
    a.exit_status(Duration::from_secs(5)).await;
    // Past the liveness window, the dead node no longer counts.
    eventually("a not live", Duration::from_secs(10), || async {
        sys.ingestors()
            .await
            .iter()
            .any(|i| i["id"].as_str().unwrap().ends_with("-a") && i["live"] == false)
    })
    .await;
    sys.revoke(&key_id).await;
    eventually("b rejects", Duration::from_secs(5), || async {
        ingest(http, &b, "clicks-1", &secret).await == 401
    })
    .await;
    eventually(
        "applied by the live one",
        Duration::from_secs(10),
        || async { sys.revocation(&key_id).await["state"] == "applied" },
    )
    .await;
    let r = sys.revocation(&key_id).await;
    assert_eq!(
        (r["appliedBy"].as_i64(), r["ingestors"].as_i64()),
        (Some(1), Some(1))
    );

    // Back with the same id: its durable queue held the event.
    let a = sys.ingestor("a", &amqp).await;
    assert_eq!(ingest(http, &a, "clicks-1", &secret).await, 401);
    eventually("a applied it too", Duration::from_secs(10), || async {
        sys.revocation(&key_id).await["appliedBy"] == 2
    })
    .await;
    drop((a, b));
    sys.cleanup().await;
}

#[tokio::test]
async fn api_down_on_a_cache_miss_answers_503_never_202() {
    // Quorum queues, as on a RabbitMQ cluster: declared and consumed alike.
    // The worker and the ingestor agree on the reports queue's type.
    let quorum = [("KEYWARD_QUORUM_QUEUE", "true")];
    let Some(mut sys) = System::start_with("30", &quorum).await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let a = sys.ingestor_with("a", &amqp, &quorum).await;
    if let Ok(out) = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "name", "type"])
        .output()
    {
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let own = format!("keyward.ingestor.{}-a", sys.prefix);
        let reports = sys.broker.acks_queue.clone();
        for queue in [
            own.clone(),
            format!("{own}.dead"),
            reports.clone(),
            format!("{reports}.dead"),
        ] {
            let line = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(queue.as_str()))
                .unwrap_or_else(|| panic!("{queue} listed: {listed}"));
            assert!(line.ends_with("quorum"), "{line}");
        }
    }
    let (_, cached) = sys.key().await;
    let (_, uncached) = sys.key().await;
    let http = sys.http.clone();
    assert_eq!(ingest(&http, &a, "clicks-1", &cached).await, 202);

    sys.api.signal("KILL");
    sys.api.exit_status(Duration::from_secs(5)).await;
    assert_eq!(ingest(&http, &a, "clicks-1", &uncached).await, 503);
    assert_eq!(
        ingest(&http, &a, "clicks-1", &cached).await,
        202,
        "a cached key keeps working while revocations flow"
    );
    drop(a);
    sys.cleanup().await;
}

#[tokio::test]
async fn after_losing_the_broker_an_ingestor_trusts_no_cache_and_later_revocations_arrive() {
    let Some(sys) = System::start("30").await else {
        return;
    };
    let proxy = FaultProxy::start(keyward_tests::amqp::broker_addr()).await;
    let a = sys.ingestor("a", &proxy.amqp_url()).await;
    let http = &sys.http;
    let (first_id, first) = sys.key().await;
    let (second_id, second) = sys.key().await;
    assert_eq!(ingest(http, &a, "clicks-1", &first).await, 202);
    assert_eq!(ingest(http, &a, "clicks-1", &second).await, 202);

    proxy.set(Mode::Refuse);
    proxy.cut();
    eventually("a unready", Duration::from_secs(10), || async {
        reqwest::get(a.url("/readyz")).await.unwrap().status() == 503
    })
    .await;
    // The revocation can't reach a; its cache is not trusted, so the API
    // answers: rejected at once all the same.
    sys.revoke(&first_id).await;
    assert_eq!(ingest(http, &a, "clicks-1", &first).await, 401);

    proxy.set(Mode::Pass);
    eventually("a ready again", Duration::from_secs(15), || async {
        reqwest::get(a.url("/readyz")).await.unwrap().status() == 200
    })
    .await;
    assert_eq!(ingest(http, &a, "clicks-1", &second).await, 202);
    sys.revoke(&second_id).await;
    eventually(
        "a rejects the later revocation",
        Duration::from_secs(5),
        || async { ingest(http, &a, "clicks-1", &second).await == 401 },
    )
    .await;
    drop(a);
    sys.cleanup().await;
}

/// `KEYWARD_AMQP_URL` naming two brokers (here one broker twice, the first
/// behind a proxy): the worker and an ingestor connect to the first; when
/// it hangs (accepts, answers nothing) and their connections drop, each
/// reconnects to the other within seconds, and revocations keep reaching
/// `applied`.
#[tokio::test]
async fn with_several_broker_addresses_a_hanging_node_is_passed_over() {
    let proxy = FaultProxy::start(keyward_tests::amqp::broker_addr()).await;
    let brokers = format!("{},{}", proxy.amqp_url(), keyward_tests::amqp::amqp_url());
    let Some(sys) = System::start_with("30", &[("KEYWARD_AMQP_URL", &brokers)]).await else {
        return;
    };
    let a = sys.ingestor("a", &brokers).await;
    let http = &sys.http;
    let applied = |key_id: String| {
        let sys = &sys;
        async move {
            eventually("applied", Duration::from_secs(20), || async {
                sys.revocation(&key_id).await["state"] == "applied"
            })
            .await;
        }
    };
    sys.until_live(1).await;
    let (first_id, first) = sys.key().await;
    assert_eq!(ingest(http, &a, "clicks-1", &first).await, 202);
    sys.revoke(&first_id).await;
    applied(first_id).await;
    assert_eq!(ingest(http, &a, "clicks-1", &first).await, 401);

    proxy.set(Mode::Stall);
    proxy.cut();
    let (second_id, second) = sys.key().await;
    eventually("a ready again", Duration::from_secs(20), || async {
        reqwest::get(a.url("/readyz")).await.unwrap().status() == 200
    })
    .await;
    assert_eq!(ingest(http, &a, "clicks-1", &second).await, 202);
    sys.revoke(&second_id).await;
    applied(second_id).await;
    assert_eq!(ingest(http, &a, "clicks-1", &second).await, 401);
    drop(a);
    sys.cleanup().await;
}

/// The embeddable library against the real API: concurrent misses share
/// one call, hits cost none, a wrong secret for a cached key is refused
/// from memory, expiry is honoured locally, evictions and an untrusted
/// cache go back to the API.
#[tokio::test]
async fn the_library_verifier_coalesces_caches_and_honours_expiry() {
    use keyward_core::token::KeyPrefix;
    use keyward_ingestor::verifier::Verdict;

    let Some(sys) = System::start("30").await else {
        return;
    };
    let verifier = library_verifier(&sys, &sys.api.url(""));
    verifier.set_trusted(true);
    let (_, secret) = sys.key().await;

    let all = futures_util::future::join_all((0..20).map(|_| verifier.verify(&secret))).await;
    assert!(
        all.iter().all(|v| matches!(v, Verdict::Valid(_))),
        "{all:?}"
    );
    assert_eq!(verifier.api_calls(), 1, "20 concurrent misses, one call");
    assert!(all[0].may_ingest("clicks-eu"));
    assert!(!all[0].may_ingest("payments"));

    assert!(matches!(verifier.verify(&secret).await, Verdict::Valid(_)));
    assert_eq!(verifier.api_calls(), 1, "a hit asks nobody");
    let parsed = ApiKeyToken::parse(&secret).unwrap();
    let forged = ApiKeyToken::generate(&KeyPrefix::default(), parsed.key_id()).unwrap();
    assert_eq!(
        verifier.verify(forged.expose_secret()).await,
        Verdict::Invalid("unknown".into())
    );
    assert_eq!(
        verifier.api_calls(),
        1,
        "a wrong secret is refused from memory"
    );
    assert_eq!(
        verifier.verify("kw_nonsense").await,
        Verdict::Invalid("malformed".into())
    );
    assert_eq!(verifier.api_calls(), 1, "a bad checksum needs no call");

    verifier.evict(parsed.key_id());
    assert!(matches!(verifier.verify(&secret).await, Verdict::Valid(_)));
    assert_eq!(verifier.api_calls(), 2);
    verifier.set_trusted(false);
    verifier.verify(&secret).await;
    verifier.verify(&secret).await;
    assert_eq!(
        verifier.api_calls(),
        4,
        "untrusted: every request asks the API"
    );
    assert!(!verifier.cached(parsed.key_id()));

    // A revoked key hammered afterwards costs one call, then none.
    verifier.set_trusted(true);
    sys.revoke(&parsed.key_id().to_string()).await;
    verifier.evict(parsed.key_id());
    let calls = verifier.api_calls();
    for _ in 0..5 {
        assert_eq!(
            verifier.verify(&secret).await,
            Verdict::Invalid("revoked".into())
        );
    }
    assert_eq!(verifier.api_calls(), calls + 1);

    // Expiry is checked on every hit, without the API.
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let created = sys
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/apikeys",
            Some(json!({"name": "short-lived", "roles": ["shippers"], "expiresAt": expires})),
        )
        .await;
    let short = created["secret"].as_str().unwrap();
    assert!(matches!(verifier.verify(short).await, Verdict::Valid(_)));
    let calls = verifier.api_calls();
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(2100)).await;
    assert_eq!(
        verifier.verify(short).await,
        Verdict::Invalid("expired".into())
    );
    assert_eq!(verifier.api_calls(), calls);
    sys.cleanup().await;
}

/// A `key.revoked` event leaves a tombstone: the node refuses the key from
/// memory, with no call to the API — with the API stopped it still answers
/// 401, where a mere eviction would have to ask the API and answer 503.
#[tokio::test]
async fn a_revoked_key_is_refused_from_memory_with_the_api_stopped() {
    let Some(mut sys) = System::start("30").await else {
        return;
    };
    let a = sys.ingestor("a", &keyward_tests::amqp::amqp_url()).await;
    sys.until_live(1).await;
    let http = sys.http.clone();
    let (key_id, secret) = sys.key().await;
    let (_, other) = sys.key().await;
    assert_eq!(ingest(&http, &a, "clicks-1", &secret).await, 202);
    sys.revoke(&key_id).await;
    eventually(
        "the revocation applied",
        Duration::from_secs(10),
        || async { sys.revocation(&key_id).await["state"] == "applied" },
    )
    .await;

    sys.api.signal("KILL");
    sys.api.exit_status(Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert_eq!(ingest(&http, &a, "clicks-1", &secret).await, 401);
    }
    assert_eq!(
        ingest(&http, &a, "clicks-1", &other).await,
        503,
        "an unknown key still needs the API"
    );
    drop(a);
    sys.cleanup().await;
}

/// Apply → report (confirmed) → ack: the connection cut after the report
/// and before the ack redelivers the event; it is applied again and the
/// revocation still reaches `applied`.
#[tokio::test]
async fn a_connection_cut_between_report_and_ack_redelivers_the_event() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let Some(sys) = System::start("30").await else {
        return;
    };
    let proxy = Arc::new(FaultProxy::start(keyward_tests::amqp::broker_addr()).await);
    let verifier = library_verifier(&sys, &sys.api.url(""));
    let ingestor_id = format!("{}-lib", sys.prefix);
    let applied = Arc::new(AtomicUsize::new(0));
    let hook = {
        let (proxy, applied) = (Arc::clone(&proxy), Arc::clone(&applied));
        Arc::new(move || {
            let (proxy, applied) = (Arc::clone(&proxy), Arc::clone(&applied));
            Box::pin(async move {
                // The first time: the connection dies before the ack.
                if applied.fetch_add(1, Ordering::SeqCst) == 0 {
                    proxy.cut();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }) as futures_util::future::BoxFuture<'static, ()>
        })
    };
    let consumer =
        library_consumer(&sys, &proxy.amqp_url(), "key.revoked.#", &verifier).before_ack(hook);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    library_node_live(&sys, &ingestor_id).await;

    let (key_id, _) = sys.key().await;
    sys.revoke(&key_id).await;
    eventually(
        "the event comes again after the cut",
        Duration::from_secs(20),
        || async { applied.load(Ordering::SeqCst) >= 2 },
    )
    .await;
    eventually(
        "the revocation applied",
        Duration::from_secs(20),
        || async { sys.revocation(&key_id).await["state"] == "applied" },
    )
    .await;
    assert!(verifier.is_buried(keyward_core::ids::KeyId::parse(&key_id).unwrap()));
    let revocation = sys.revocation(&key_id).await;
    assert_eq!(revocation["appliedBy"], 1, "{revocation}");
    shutdown.cancel();
    running.await.unwrap();
    sys.cleanup().await;
}

/// An event whose report is not yet confirmed and acked holds back no
/// event behind it: the first event's ack is held (the hook runs between
/// its confirmed report and its ack), and the second revocation is applied
/// meanwhile. When the node waited for each report before taking the next
/// event, the second key stayed usable until the first ack (tried: this
/// test then fails).
#[tokio::test]
async fn an_unacked_report_does_not_hold_back_the_next_event() {
    let Some(sys) = System::start("30").await else {
        return;
    };
    let verifier = library_verifier(&sys, &sys.api.url(""));
    let ingestor_id = format!("{}-lib", sys.prefix);
    let (held, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook = {
        let (held, release, first) = (Arc::clone(&held), Arc::clone(&release), first);
        Arc::new(move || {
            let (held, release, first) =
                (Arc::clone(&held), Arc::clone(&release), Arc::clone(&first));
            Box::pin(async move {
                if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    held.notify_one();
                    release.notified().await;
                }
            }) as futures_util::future::BoxFuture<'static, ()>
        })
    };
    let consumer =
        library_consumer(&sys, &keyward_tests::amqp::amqp_url(), "#", &verifier).before_ack(hook);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    library_node_live(&sys, &ingestor_id).await;

    let (one, _) = sys.key().await;
    let (two, _) = sys.key().await;
    sys.revoke(&one).await;
    tokio::time::timeout(Duration::from_secs(10), held.notified())
        .await
        .expect("the first event's report confirmed, its ack held");
    sys.revoke(&two).await;
    eventually(
        "the second revocation applied while the first ack is held",
        Duration::from_secs(10),
        || async { verifier.is_buried(keyward_core::ids::KeyId::parse(&two).unwrap()) },
    )
    .await;
    // The first event's report was confirmed before its ack was held: the
    // store gets it. (Not its state: the worker marks an event published
    // once the broker confirms it, and a node under load can apply and
    // report before that — the state was still `pending` once.)
    eventually(
        "the first report recorded while its ack is held",
        Duration::from_secs(10),
        || async { sys.revocation(&one).await["appliedBy"] == 1 },
    )
    .await;

    release.notify_one();
    for key in [&one, &two] {
        eventually("applied", Duration::from_secs(20), || async {
            sys.revocation(key).await["state"] == "applied"
        })
        .await;
    }
    shutdown.cancel();
    running.await.unwrap();
    sys.cleanup().await;
}

/// `key.updated` drops the key's cached answer, `rbac.changed` every cached
/// key of its tenant (and no other's); a message of an unknown type is
/// dropped without stopping the node. Events published straight to the
/// exchange, as the sync worker publishes them, to a library node bound `#`.
#[tokio::test]
async fn key_updated_and_rbac_changed_drop_cached_answers() {
    use keyward_core::ids::{EventId, KeyId};
    use keyward_ingestor::verifier::Verdict;
    use lapin::options::BasicPublishOptions;

    let Some(sys) = System::start("30").await else {
        return;
    };
    let verifier = library_verifier(&sys, &sys.api.url(""));
    let consumer = library_consumer(&sys, &keyward_tests::amqp::amqp_url(), "#", &verifier);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    eventually(
        "the consumer connected",
        Duration::from_secs(10),
        || async { verifier.is_trusted() },
    )
    .await;

    let (key_id, secret) = sys.key().await;
    let key = KeyId::parse(&key_id).unwrap();
    let platform = ApiKeyToken::parse(&sys.verifier_key).unwrap().key_id();
    let cache_both = || async {
        assert!(matches!(verifier.verify(&secret).await, Verdict::Valid(_)));
        assert!(matches!(
            verifier.verify(&sys.verifier_key).await,
            Verdict::Valid(_)
        ));
        assert!(verifier.cached(key) && verifier.cached(platform));
    };
    let publish = |routing: &'static str, body: Value| {
        let ch = sys.broker.channel.clone();
        let exchange = sys.broker.exchange.clone();
        async move {
            ch.basic_publish(
                exchange.as_str().into(),
                routing.into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&body).unwrap(),
                keyward_core::amqp::message_properties(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    let now = chrono::Utc::now();

    cache_both().await;
    publish(
        "key.updated.acme",
        json!({"eventId": EventId::new(), "type": "key.updated", "tenantId": "acme",
               "keyId": key_id, "updatedAt": now, "sequence": 1}),
    )
    .await;
    eventually("key.updated applied", Duration::from_secs(5), || async {
        !verifier.cached(key)
    })
    .await;
    assert!(verifier.cached(platform), "only that key");

    // Unknown: dropped (not requeued for ever); the node goes on.
    publish(
        "key.exploded.acme",
        json!({"eventId": EventId::new(), "type": "key.exploded", "tenantId": "acme", "sequence": 2}),
    )
    .await;
    cache_both().await;
    publish(
        "rbac.changed.acme",
        json!({"eventId": EventId::new(), "type": "rbac.changed", "tenantId": "acme",
               "changedAt": now, "sequence": 3}),
    )
    .await;
    eventually("rbac.changed applied", Duration::from_secs(5), || async {
        !verifier.cached(key)
    })
    .await;
    assert!(verifier.cached(platform), "another tenant's key stays");
    let calls = verifier.api_calls();
    assert!(matches!(verifier.verify(&secret).await, Verdict::Valid(_)));
    assert_eq!(verifier.api_calls(), calls + 1, "asked the API again");

    shutdown.cancel();
    running.await.unwrap();
    sys.cleanup().await;
}

/// `rbac.changed` arriving while a verify call for a key of that tenant is
/// in flight: the answer, read before the change, is returned but not
/// cached. Made deterministic by stalling the call at a proxy: hold the
/// fill, apply the change, release. (Checked: with `evict_tenant` not
/// bumping the eviction epoch, the last assertion fails.)
#[tokio::test]
async fn a_tenant_eviction_during_a_verify_call_is_not_undone() {
    use keyward_core::ids::{KeyId, TenantId};
    use keyward_ingestor::verifier::Verdict;

    let Some(sys) = System::start("30").await else {
        return;
    };
    let api_addr = url::Url::parse(&sys.api.url(""))
        .unwrap()
        .socket_addrs(|| None)
        .unwrap()[0];
    let proxy = FaultProxy::start(api_addr).await;
    let verifier = library_verifier(&sys, &format!("http://{}", proxy.addr));
    verifier.set_trusted(true);
    let (key_id, secret) = sys.key().await;
    let key = KeyId::parse(&key_id).unwrap();

    proxy.set(Mode::Stall);
    let fill = tokio::spawn({
        let (verifier, secret) = (Arc::clone(&verifier), secret.clone());
        async move { verifier.verify(&secret).await }
    });
    eventually("the call is in flight", Duration::from_secs(5), || async {
        verifier.api_calls() == 1
    })
    .await;
    verifier.evict_tenant(&TenantId::parse("acme").unwrap());
    proxy.set(Mode::Pass);
    assert!(matches!(fill.await.unwrap(), Verdict::Valid(_)));
    assert!(
        !verifier.cached(key),
        "an answer from before the change is not kept"
    );
    verifier.verify(&secret).await;
    assert_eq!(verifier.api_calls(), 2);
    sys.cleanup().await;
}

/// A change of a request that must succeed, and the event its answer
/// names (`Keyward-Event-Id`).
async fn announced(
    sys: &System,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> String {
    let res = sys.admin_call(method, path, body).await;
    res.headers()
        .get("keyward-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Keyward-Event-Id on {path}"))
        .to_owned()
}

/// Privileges withdrawn by an RBAC change stop working at both ingestors
/// for keys they had cached (ingestors cache answers for 60 s; an
/// `rbac.changed` event drops them): a stream privilege taken from a role,
/// a key taken out of a group, a role taken away and deleted.
#[tokio::test]
async fn privileges_withdrawn_stop_working_at_both_ingestors() {
    let Some(sys) = System::start("30").await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let (a, b) = (
        sys.ingestor("a", &amqp).await,
        sys.ingestor("b", &amqp).await,
    );
    // Its events are awaited `applied` at the end.
    sys.until_live(2).await;
    let http = &sys.http;
    let (key_id, secret) = sys.key().await;
    let both = |stream: &'static str, want: u16| {
        let secret = secret.clone();
        let (a, b) = (&a, &b);
        async move {
            ingest(http, a, stream, &secret).await == want
                && ingest(http, b, stream, &secret).await == want
        }
    };
    let put = reqwest::Method::PUT;

    // 1. The role loses a stream: cached answers at both nodes said yes.
    assert!(both("clicks-eu", 202).await);
    let narrowed =
        json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "clicks-us"}}]});
    announced(
        &sys,
        put.clone(),
        "/api/v1/tenants/acme/roles/shippers",
        Some(narrowed),
    )
    .await;
    let withdrawn = Instant::now();
    eventually("both refuse clicks-eu", Duration::from_secs(5), || {
        both("clicks-eu", 403)
    })
    .await;
    eprintln!("role narrowed → both refuse: {:?}", withdrawn.elapsed());
    assert!(both("clicks-us", 202).await);

    // 2. A group grants `readers-all`'s stream; the key leaves the group.
    let wide = json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "logs-*"}}]});
    announced(
        &sys,
        put.clone(),
        "/api/v1/tenants/acme/roles/loggers",
        Some(wide),
    )
    .await;
    let group = json!({"roles": ["loggers"], "users": [], "apiKeys": [key_id]});
    announced(
        &sys,
        put.clone(),
        "/api/v1/tenants/acme/groups/ops",
        Some(group),
    )
    .await;
    eventually("both accept logs", Duration::from_secs(5), || {
        both("logs-app", 202)
    })
    .await;
    let emptied = json!({"roles": ["loggers"], "users": [], "apiKeys": []});
    let event = announced(
        &sys,
        put.clone(),
        "/api/v1/tenants/acme/groups/ops",
        Some(emptied),
    )
    .await;
    eventually("both refuse logs", Duration::from_secs(5), || {
        both("logs-app", 403)
    })
    .await;

    // 3. The key's own role is taken away (a key update), then the role
    //    that granted the rest is deleted once nothing holds it.
    let path = format!("/api/v1/tenants/acme/apikeys/{key_id}");
    announced(
        &sys,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"roles": ["loggers"]})),
    )
    .await;
    eventually("both refuse clicks-us", Duration::from_secs(5), || {
        both("clicks-us", 403)
    })
    .await;
    assert!(both("logs-app", 202).await);
    announced(
        &sys,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"roles": []})),
    )
    .await;
    announced(
        &sys,
        reqwest::Method::DELETE,
        "/api/v1/tenants/acme/groups/ops",
        None,
    )
    .await;
    let deleted = announced(
        &sys,
        reqwest::Method::DELETE,
        "/api/v1/tenants/acme/roles/loggers",
        None,
    )
    .await;
    eventually("both refuse everything", Duration::from_secs(5), || {
        both("logs-app", 403)
    })
    .await;

    // Every one of those events reaches `applied` at both nodes.
    for event in [event, deleted] {
        eventually("rbac event applied", Duration::from_secs(10), || async {
            let e = sys
                .admin(
                    reqwest::Method::GET,
                    &format!("/api/v1/events/{event}"),
                    None,
                )
                .await;
            e["type"] == "rbac.changed" && e["state"] == "applied"
        })
        .await;
    }
    sys.cleanup().await;
}

/// A rotation with a 2 s grace: both keys work at both ingestors during the
/// grace (the old one was cached before the rotation), the old one is
/// refused everywhere once it ends; the new one goes on working.
#[tokio::test]
async fn rotation_grace_holds_at_both_ingestors_then_ends() {
    let Some(sys) = System::start("30").await else {
        return;
    };
    let amqp = keyward_tests::amqp::amqp_url();
    let (a, b) = (
        sys.ingestor("a", &amqp).await,
        sys.ingestor("b", &amqp).await,
    );
    let http = &sys.http;
    let (old_id, old) = sys.key().await;
    for node in [&a, &b] {
        assert_eq!(ingest(http, node, "clicks-eu", &old).await, 202);
    }
    // The grace runs from a moment after this one (the API's clock reading
    // during the request): measured from here, it lasts at least 2 s.
    let started = Instant::now();
    let rotated = sys
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/tenants/acme/apikeys/{old_id}/rotate"),
            Some(json!({"gracePeriodSeconds": 2})),
        )
        .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    // Within the grace: both keys, both nodes, every time.
    while started.elapsed() < Duration::from_millis(1_500) {
        for node in [&a, &b] {
            assert_eq!(
                ingest(http, node, "clicks-eu", &old).await,
                202,
                "old key in grace"
            );
            assert_eq!(ingest(http, node, "clicks-eu", &new).await, 202, "new key");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        "old key refused at both",
        Duration::from_secs(5),
        || async {
            ingest(http, &a, "clicks-eu", &old).await == 401
                && ingest(http, &b, "clicks-eu", &old).await == 401
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "refused before the grace ended"
    );
    for node in [&a, &b] {
        assert_eq!(ingest(http, node, "clicks-eu", &new).await, 202);
    }
    sys.cleanup().await;
}

/// A broker user made with `rabbitmqctl`, deleted when dropped.
struct BrokerUser(String);

impl BrokerUser {
    /// `permissions`: configure, write, read (regular expressions).
    fn add(name: &str, permissions: [&str; 3]) -> Self {
        let ctl = |args: &[&str]| {
            let out = std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .expect("rabbitmqctl runs");
            assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
        };
        ctl(&["add_user", name, PASSWORD]);
        let [conf, write, read] = permissions;
        ctl(&["set_permissions", "-p", "/", name, conf, write, read]);
        Self(name.to_owned())
    }

    fn url(&self) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:5672/%2f",
            self.0,
            PASSWORD.replace(' ', "%20")
        )
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .output();
    }
}

/// The broker permissions docs/SECURITY.md tells operators to set are
/// enough: a worker and an ingestor each with only their own deliver a
/// revocation end to end; and the ingestor's user cannot publish events.
#[tokio::test]
async fn least_privilege_broker_users_suffice() {
    let Some(probe) = TestBroker::new().await else {
        return;
    };
    let p = probe.exchange.replace(".events", "");
    probe.cleanup().await;
    let node_queue = format!(r"keyward\.ingestor\.{p}-c");
    let worker_user = BrokerUser::add(
        &format!("{p}-worker"),
        [
            &format!(r"^{p}\.(events|acks|acks\.dead)$"),
            &format!(r"^({p}\.events|amq\.default)$"),
            &format!(r"^{p}\.acks$"),
        ],
    );
    let node_user = BrokerUser::add(
        &format!("{p}-node"),
        [
            &format!(r"^({p}\.events|{p}\.acks|{node_queue}|{node_queue}\.dead)$"),
            &format!(r"^({node_queue}|amq\.default)$"),
            &format!(r"^({p}\.events|{node_queue})$"),
        ],
    );
    let worker_url = worker_user.url();
    let Some(sys) =
        System::start_with_prefix("30", &p, &[("KEYWARD_AMQP_URL", worker_url.as_str())]).await
    else {
        return;
    };
    let node = sys.ingestor_with("c", &node_user.url(), &[]).await;
    sys.until_live(1).await;
    let (key_id, secret) = sys.key().await;
    assert_eq!(ingest(&sys.http, &node, "clicks-eu", &secret).await, 202);
    sys.revoke(&key_id).await;
    eventually("applied", Duration::from_secs(10), || async {
        sys.revocation(&key_id).await["state"] == "applied"
    })
    .await;
    assert_eq!(ingest(&sys.http, &node, "clicks-eu", &secret).await, 401);

    // The node's user may not publish an event (a forged revocation or a
    // forged `rbac.changed`): the broker closes its channel.
    let conn = lapin::Connection::connect(&node_user.url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let published = async {
        channel
            .basic_publish(
                sys.broker.exchange.as_str().into(),
                "key.revoked.acme".into(),
                Default::default(),
                b"{}",
                Default::default(),
            )
            .await?
            .await
    }
    .await;
    assert!(
        published.is_err() || !channel.status().connected(),
        "the node's user published an event: {published:?}"
    );
    drop(node);
    sys.cleanup().await;
}

/// The drop-in guards (`keyward_ingestor::guard`) in front of a service's
/// own routes, against the real API: admit with the key in the request's
/// extensions, 401, 403, 503, and a revocation counts at once.
#[tokio::test]
async fn the_guards_admit_refuse_and_say_why() {
    use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, test, web};
    use keyward_ingestor::client::ValidKey;
    use keyward_ingestor::guard::{RequireKey, RequireKeyLayer};
    use tower_layer::Layer;

    let Some(sys) = System::start("30").await else {
        return;
    };
    let verifier = library_verifier(&sys, &sys.api.url(""));
    let (key_id, secret) = sys.key().await; // `ingestor` on `clicks-*`
    let bearer = format!("Bearer {secret}");

    // actix-web: one guarded resource, one open one beside it.
    async fn accepted(req: HttpRequest) -> HttpResponse {
        let key = req.extensions().get::<Arc<ValidKey>>().cloned();
        HttpResponse::Accepted().body(key.map(|k| k.key_id.to_string()).unwrap_or_default())
    }
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/events/{stream}")
                    .wrap(RequireKey::new(Arc::clone(&verifier)))
                    .route(web::post().to(accepted)),
            )
            .route("/open", web::get().to(HttpResponse::Ok)),
    )
    .await;
    let post = |uri: &str, auth: Option<&str>| {
        let mut req = test::TestRequest::post().uri(uri);
        if let Some(auth) = auth {
            req = req.insert_header(("authorization", auth.to_owned()));
        }
        req.to_request()
    };
    let res = test::call_service(&app, post("/events/clicks-web", Some(&bearer))).await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        test::read_body(res).await,
        key_id.as_bytes(),
        "the key, for the handler"
    );
    let res = test::call_service(&app, post("/events/views", Some(&bearer))).await;
    assert_eq!(res.status(), 403);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"]["code"], "forbidden");
    let res = test::call_service(&app, post("/events/clicks-web", None)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    let res = test::call_service(&app, post("/events/clicks-web", Some("Bearer kw_nope"))).await;
    assert_eq!(res.status(), 401);
    let res = test::call_service(&app, test::TestRequest::get().uri("/open").to_request()).await;
    assert_eq!(res.status(), 200, "the open route stays open");

    // tower: the same decisions, the stream from the path.
    #[derive(Clone)]
    struct Echo;
    impl tower_service::Service<http::Request<String>> for Echo {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: http::Request<String>) -> Self::Future {
            let key = req.extensions().get::<Arc<ValidKey>>();
            let key = key.map(|k| k.key_id.to_string()).unwrap_or_default();
            std::future::ready(Ok(http::Response::new(key)))
        }
    }
    let layer = |verifier: Arc<Verifier>| {
        RequireKeyLayer::new(verifier, |parts| {
            parts.uri.path().strip_prefix("/events/").map(str::to_owned)
        })
    };
    async fn call(
        layer: &RequireKeyLayer,
        path: &str,
        auth: Option<&str>,
    ) -> http::Response<String> {
        use tower_service::Service;
        let mut service = layer.layer(Echo);
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .unwrap();
        let mut req = http::Request::post(path);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        service
            .call(req.body(String::new()).unwrap())
            .await
            .unwrap()
    }
    let guarded = layer(Arc::clone(&verifier));
    let res = call(&guarded, "/events/clicks-app", Some(&bearer)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.body(), &key_id);
    assert_eq!(
        call(&guarded, "/events/views", Some(&bearer))
            .await
            .status(),
        403
    );
    assert_eq!(
        call(&guarded, "/elsewhere", Some(&bearer)).await.status(),
        403
    );
    let res = call(&guarded, "/events/clicks-app", None).await;
    assert_eq!(res.status(), 401);
    let body: Value = serde_json::from_str(res.body()).unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    // No API to ask: 503 with Retry-After, never a pass.
    let stranded = layer(library_verifier(&sys, "http://127.0.0.1:9/"));
    let res = call(&stranded, "/events/clicks-app", Some(&bearer)).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");

    // Revoked: refused by both at once (this verifier hears no events, so
    // it trusts no cached answer and asks the API).
    sys.revoke(&key_id).await;
    let res = test::call_service(&app, post("/events/clicks-web", Some(&bearer))).await;
    assert_eq!(res.status(), 401);
    let res = call(&guarded, "/events/clicks-app", Some(&bearer)).await;
    assert_eq!(res.status(), 401);
    sys.cleanup().await;
}
