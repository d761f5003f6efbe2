//! TLS on every link, through the real binaries: the API and a reference
//! ingestor serve HTTPS with certificates of a CA made for the test; the
//! ingestor calls the API over HTTPS trusting that CA only; the worker and
//! the ingestor reach RabbitMQ over `amqps://` (a TLS-terminating proxy in
//! front of the local broker, certificate of the same CA); both talk to
//! PostgreSQL with `sslmode=require`. A wrong CA or host name is an error
//! that says so, never a plain-text fallback.

use std::time::Duration;

use http::Method;
use keyward_core::testing::TestDatabase;
use keyward_tests::amqp::{TestBroker, broker_addr};
use keyward_tests::tls::{Auth, Https, TestPki, TlsProxy};
use keyward_tests::{Running, eventually, start, start_api};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const PASSWORD: &str = "tls-admin-password-1";

/// `url` of a fresh database, asking for TLS.
fn with_tls(db: &TestDatabase) -> String {
    let url = db.url.as_str();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode=require")
}

/// Waits until `https` answers `GET /readyz` with 200, the process alive.
async fn ready(process: &mut Running, https: &Https) {
    let deadline = tokio::time::Instant::now() + READY;
    while !https.ok("/readyz").await {
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!(
                "exited early with {status}: {}",
                process.stderr_text().await
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready over HTTPS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_revoke_path_runs_with_tls_on_every_link() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let Some(broker) = TestBroker::new().await else {
        return;
    };
    let pki = TestPki::new("every-link");
    let server = pki.server("server", &["localhost", "127.0.0.1"]);
    let amqps = TlsProxy::start(&server, broker_addr()).await;
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let (cert, key) = (server.cert.to_str().unwrap(), server.key.to_str().unwrap());
    let database_url = with_tls(&db);

    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", &database_url),
        ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
        ("KEYWARD_TLS_CERT", cert),
        ("KEYWARD_TLS_KEY", key),
    ]);
    let to_api = Https::new(&api.https_url(""), &pki.ca_file());
    ready(&mut api, &to_api).await;
    let plain = reqwest::Client::new().get(api.url("/healthz")).send().await;
    assert!(plain.is_err(), "no plain HTTP on the TLS port: {plain:?}");
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let to_api = &to_api;
        let path = path.to_owned();
        async move {
            to_api
                .call(method, &path, Auth::Basic("admin", PASSWORD), body)
                .await
                .unwrap()
        }
    };
    let (status, verifier) = admin(
        Method::POST,
        "/api/v1/tenants/_platform/apikeys",
        Some(json!({"name": "node", "roles": ["verifier"]})),
    )
    .await;
    assert_eq!(status, 201);
    for (method, path, body) in [
        (Method::POST, "/api/v1/tenants", json!({"id": "acme"})),
        (
            Method::PUT,
            "/api/v1/tenants/acme/roles/shippers",
            json!({"privileges": [{"privilege": "ingestor"}]}),
        ),
    ] {
        assert_eq!(admin(method, path, Some(body)).await.0, 201, "{path}");
    }
    let (status, created) = admin(
        Method::POST,
        "/api/v1/tenants/acme/apikeys",
        Some(json!({"name": "k", "roles": ["shippers"]})),
    )
    .await;
    assert_eq!(status, 201);
    let key_id = created["keyId"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();

    let amqps_url = amqps.amqps_url("localhost");
    let mut worker = start(
        "keyward-sync-worker",
        &[
            ("KEYWARD_DATABASE_URL", &database_url),
            ("KEYWARD_AMQP_URL", &amqps_url),
            ("KEYWARD_AMQP_CA_FILE", ca),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
        ],
    );
    worker.wait_ready("/readyz", READY).await;
    let node_id = format!("{}-tls", broker.exchange.replace(".events", ""));
    let api_url = api.https_url("");
    let mut node = start(
        "keyward-ingestor",
        &[
            ("KEYWARD_API_URL", &api_url),
            ("KEYWARD_API_CA_FILE", ca),
            ("KEYWARD_VERIFIER_KEY", verifier["secret"].as_str().unwrap()),
            ("KEYWARD_AMQP_URL", &amqps_url),
            ("KEYWARD_AMQP_CA_FILE", ca),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
            ("KEYWARD_INGESTOR_ID", &node_id),
            ("KEYWARD_TLS_CERT", cert),
            ("KEYWARD_TLS_KEY", key),
        ],
    );
    let to_node = Https::new(&node.https_url(""), &pki.ca_file());
    ready(&mut node, &to_node).await;
    let ingest = || async {
        to_node
            .call(
                Method::POST,
                "/ingest/clicks",
                Auth::Bearer(&secret),
                Some(json!({})),
            )
            .await
            .unwrap()
            .0
    };
    assert_eq!(ingest().await, 202, "verified through the API over HTTPS");
    // `applied` counts the nodes live when the event is published: the
    // node's first heartbeat must have been recorded before the revoke.
    eventually("the node live", Duration::from_secs(20), || async {
        let (_, list) = admin(Method::GET, "/api/v1/ingestors", None).await;
        list["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["id"] == node_id.as_str() && i["live"] == true)
        })
    })
    .await;

    let revoke = format!("/api/v1/tenants/acme/apikeys/{key_id}");
    assert_eq!(admin(Method::DELETE, &revoke, None).await.0, 202);
    eventually(
        "the node refuses the key",
        Duration::from_secs(20),
        || async { ingest().await == 401 },
    )
    .await;
    eventually(
        "the revocation applied",
        Duration::from_secs(20),
        || async { admin(Method::GET, &revoke, None).await.1["revocation"]["state"] == "applied" },
    )
    .await;

    drop((node, worker, api));
    broker.delete_ingestor_queues(&node_id).await;
    broker.cleanup().await;
}

/// A wrong CA (the API's certificate, the broker's) or a certificate for
/// another host name: the link is refused and the logs say why; nothing
/// goes in plain text instead.
#[tokio::test]
async fn a_wrong_ca_or_host_name_is_refused_and_said() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let Some(broker) = TestBroker::new().await else {
        return;
    };
    let pki = TestPki::new("right");
    let other = TestPki::new("other");
    let server = pki.server("server", &["localhost", "127.0.0.1"]);
    let elsewhere = pki.server("elsewhere", &["elsewhere.invalid"]);
    let amqps = TlsProxy::start(&server, broker_addr()).await;
    let amqps_elsewhere = TlsProxy::start(&elsewhere, broker_addr()).await;
    let (right_ca, other_ca) = (pki.ca_file(), other.ca_file());
    let (right_ca, other_ca) = (right_ca.to_str().unwrap(), other_ca.to_str().unwrap());

    // The worker: a broker whose certificate chains to another CA, then
    // one whose certificate names another host. Unready, and says so.
    for (url, ca, why) in [
        (amqps.amqps_url("localhost"), other_ca, "UnknownIssuer"),
        (
            amqps_elsewhere.amqps_url("localhost"),
            right_ca,
            "not valid for name",
        ),
    ] {
        let mut worker = start(
            "keyward-sync-worker",
            &[
                ("KEYWARD_DATABASE_URL", db.url.as_str()),
                ("KEYWARD_AMQP_URL", &url),
                ("KEYWARD_AMQP_CA_FILE", ca),
                ("KEYWARD_EXCHANGE", &broker.exchange),
                ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
            ],
        );
        worker.wait_ready("/healthz", READY).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready = reqwest::get(worker.url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 503, "not ready without a trusted broker");
        let err = stop(worker).await;
        assert!(
            err.contains("cannot reach the broker") && err.contains(why),
            "{why}: {err}"
        );
    }

    // The ingestor: the API's certificate is of a CA it does not trust.
    let api_files = pki.server("api", &["localhost"]);
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", PASSWORD),
        ("KEYWARD_TLS_CERT", api_files.cert.to_str().unwrap()),
        ("KEYWARD_TLS_KEY", api_files.key.to_str().unwrap()),
    ]);
    let to_api = Https::new(&api.https_url(""), &pki.ca_file());
    ready(&mut api, &to_api).await;
    let api_url = api.https_url("");
    let node_id = format!("{}-wrong-ca", broker.exchange.replace(".events", ""));
    // Well-formed keys: the call fails before either is looked at.
    let any_key = || {
        keyward_core::token::ApiKeyToken::generate(
            &keyward_core::token::KeyPrefix::default(),
            keyward_core::ids::KeyId::new(),
        )
        .unwrap()
    };
    let (verifier_key, caller_key) = (any_key(), any_key());
    let mut node = start(
        "keyward-ingestor",
        &[
            ("KEYWARD_API_URL", &api_url),
            ("KEYWARD_API_CA_FILE", other_ca),
            ("KEYWARD_VERIFIER_KEY", verifier_key.expose_secret()),
            ("KEYWARD_AMQP_URL", &keyward_tests::amqp::amqp_url()),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
            ("KEYWARD_INGESTOR_ID", &node_id),
        ],
    );
    node.wait_ready("/readyz", READY).await;
    let status = reqwest::Client::new()
        .post(node.url("/ingest/clicks"))
        .bearer_auth(caller_key.expose_secret())
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 503, "an API it cannot trust is an unavailable API");
    let err = stop(node).await;
    assert!(
        err.contains("verify call failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    drop(api);
    broker.delete_ingestor_queues(&node_id).await;
    broker.cleanup().await;
}

async fn stop(mut process: Running) -> String {
    process.child.start_kill().unwrap();
    process.child.wait().await.unwrap();
    process.stderr_text().await
}

/// PostgreSQL with `sslmode=verify-full` and a CA that did not sign the
/// server's certificate, and an API given a certificate without its key:
/// each start ends at once with one line that says why.
#[tokio::test]
async fn a_database_it_cannot_trust_or_an_unusable_certificate_stops_the_start() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let pki = TestPki::new("not-the-database-ca");
    let url = db.url.as_str();
    let sep = if url.contains('?') { '&' } else { '?' };
    let distrusted = format!(
        "{url}{sep}sslmode=verify-full&sslrootcert={}",
        pki.ca_file().display()
    );
    let (code, _, err) = keyward_tests::run_to_end(
        &keyward_tests::binary("keyward-api"),
        &["migrate"],
        &[("KEYWARD_DATABASE_URL", &distrusted)],
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot open the database") && err.contains("certificate"),
        "{err}"
    );

    let server = pki.server("api", &["localhost"]);
    let empty = pki.dir().join("empty.key");
    std::fs::write(&empty, "").unwrap();
    let (code, _, err) = keyward_tests::run_to_end(
        &keyward_tests::binary("keyward-api"),
        &[],
        &[
            ("KEYWARD_DATABASE_URL", url),
            ("KEYWARD_TLS_CERT", server.cert.to_str().unwrap()),
            ("KEYWARD_TLS_KEY", empty.to_str().unwrap()),
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("KEYWARD_TLS_KEY") && err.contains("no private key"),
        "{err}"
    );
}
