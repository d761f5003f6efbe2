//! The real binaries start, parse their settings and fail cleanly.

use std::time::Duration;

use keyward_core::testing::TestDatabase;
use keyward_tests::{binary, run_to_end, start_api};

const READY: Duration = Duration::from_secs(30);

async fn stop_and_read_stderr(mut api: keyward_tests::Running) -> String {
    api.child.start_kill().unwrap();
    api.child.wait().await.unwrap();
    api.stderr_text().await
}

#[tokio::test]
async fn api_serves_on_sqlite_and_bootstraps_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let mut api = start_api(&[("KEYWARD_DATABASE_URL", &url)]);
    api.wait_ready("/readyz", READY).await;
    let health = reqwest::get(api.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let err = stop_and_read_stderr(api).await;
    assert_eq!(
        err.matches("with password:").count(),
        1,
        "printed once: {err}"
    );

    // A second start on the same file keeps the admin it has.
    let mut again = start_api(&[("KEYWARD_DATABASE_URL", &url)]);
    again.wait_ready("/readyz", READY).await;
    let err = stop_and_read_stderr(again).await;
    assert!(!err.contains("with password:"), "never again: {err}");
}

#[tokio::test]
async fn api_serves_on_postgres_with_a_configured_password() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let password = "correct horse battery staple";
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", password),
        ("KEYWARD_LOG_FORMAT", "json"),
    ]);
    api.wait_ready("/readyz", READY).await;
    let err = stop_and_read_stderr(api).await;
    assert!(
        !err.contains(password),
        "the configured password is never printed"
    );
    assert!(!err.contains("with password:"));
    let first = err.lines().find(|l| !l.is_empty()).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "json logs: {first}"
    );
    // The bootstrap wrote the admin, with superadmin.
    let store = db.store();
    let admin = keyward_core::ids::Username::parse("admin").unwrap();
    let user = store
        .get_user(&keyward_core::ids::TenantId::platform(), &admin)
        .await
        .unwrap();
    assert_eq!(user.roles[0].as_str(), "superadmin");
}

#[tokio::test]
async fn api_migrate_subcommand_only_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let (code, _, err) = run_to_end(
        &binary("keyward-api"),
        &["migrate"],
        &[("KEYWARD_DATABASE_URL", &url)],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("with password:"),
        "migrate does not bootstrap"
    );
    assert!(dir.path().join("k.db").exists());
}

#[tokio::test]
async fn api_reports_an_unreachable_database_in_one_line() {
    let (code, _, err) = run_to_end(
        &binary("keyward-api"),
        &[],
        &[(
            "KEYWARD_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
        )],
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("cannot open the database"), "{err}");
}

#[tokio::test]
async fn api_reports_a_port_in_use_in_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let (code, _, err) = run_to_end(
        &binary("keyward-api"),
        &[],
        &[
            ("KEYWARD_DATABASE_URL", &url),
            ("KEYWARD_LISTEN", &addr),
            ("KEYWARD_ADMIN_PASSWORD", "correct horse battery"),
        ],
    )
    .await;
    assert_ne!(code, 0);
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.contains("cannot listen on") && last.contains("in use"),
        "{err}"
    );
}

/// Secrets never reach the log, even at debug level; SIGTERM drains and
/// exits 0.
#[tokio::test]
async fn secrets_stay_out_of_logs_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let admin_pw = "admin-pw-7f3a9c2e1b";
    let user_pw = "user-pw-5d8e2a1c9f";
    let wrong_pw = "wrong-pw-1a2b3c4d5e";
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", &url),
        ("KEYWARD_ADMIN_PASSWORD", admin_pw),
        ("KEYWARD_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ]);
    api.wait_ready("/readyz", READY).await;
    let client = reqwest::Client::new();
    let res = client
        .post(api.url("/api/v1/tenants"))
        .basic_auth("admin", Some(admin_pw))
        .json(&serde_json::json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .post(api.url("/api/v1/tenants/acme/users"))
        .basic_auth("admin", Some(admin_pw))
        .json(&serde_json::json!({"username": "alice", "password": user_pw}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = client
        .get(api.url("/api/v1/tenants/acme/users"))
        .basic_auth("alice", Some(wrong_pw))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = client
        .post(api.url("/api/v1/tenants/acme/apikeys"))
        .basic_auth("admin", Some(admin_pw))
        .json(&serde_json::json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: serde_json::Value = res.json().await.unwrap();
    let key_secret = created["secret"].as_str().unwrap().to_owned();
    let res = client
        .get(api.url("/api/v1/tenants/acme/apikeys"))
        .bearer_auth(&key_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "a key without roles authenticates, may not act"
    );

    let pid = api.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), api.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let err = api.stderr_text().await;
    assert!(
        err.contains("request finished"),
        "requests are logged: {err}"
    );
    for secret in [
        admin_pw,
        user_pw,
        wrong_pw,
        "$argon2",
        &key_secret,
        &key_secret[30..],
    ] {
        assert!(!err.contains(secret), "{secret} leaked into the log");
    }
}

/// A file holding `content` in `dir`; its path.
fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    // A trailing line break, as `echo secret > file` leaves it.
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Every secret setting of the three binaries also reads `…_FILE` (Docker
/// and Kubernetes secrets): the API's database URL and admin password, the
/// worker's database and broker URLs, an ingestor's broker URL and verifier
/// key. The system runs from files alone: the admin logs in with the
/// password from its file, the worker and the node become ready, and the
/// node verifies a key through the API with the verifier key from its file.
#[tokio::test]
async fn every_secret_setting_reads_a_file() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let Some(broker) = keyward_tests::amqp::TestBroker::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let password = "from-a-file-3c9e71d2";
    let db_file = secret_file(dir.path(), "db", db.url.as_str());
    let amqp_file = secret_file(dir.path(), "amqp", &keyward_tests::amqp::amqp_url());
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL_FILE", &db_file),
        (
            "KEYWARD_ADMIN_PASSWORD_FILE",
            &secret_file(dir.path(), "pw", password),
        ),
    ]);
    api.wait_ready("/readyz", READY).await;
    let http = reqwest::Client::new();
    // As the admin of the password file: the platform's verifier key, a
    // tenant, a role that may ingest, and a key holding it.
    let mut created = Vec::new();
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/v1/tenants/_platform/apikeys",
            serde_json::json!({"name": "node", "roles": ["verifier"]}),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tenants",
            serde_json::json!({"id": "acme"}),
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/tenants/acme/roles/shippers",
            serde_json::json!({"privileges": [{"privilege": "ingestor"}]}),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/tenants/acme/apikeys",
            serde_json::json!({"name": "k", "roles": ["shippers"]}),
        ),
    ] {
        let res = http
            .request(method, api.url(path))
            .basic_auth("admin", Some(password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{path}");
        created.push(res.json::<serde_json::Value>().await.unwrap());
    }
    let (verifier, key) = (&created[0], &created[3]);

    let mut worker = keyward_tests::start(
        "keyward-sync-worker",
        &[
            ("KEYWARD_DATABASE_URL_FILE", &db_file),
            ("KEYWARD_AMQP_URL_FILE", &amqp_file),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
        ],
    );
    worker.wait_ready("/readyz", READY).await;
    let node_id = format!("{}-files", broker.exchange.replace(".events", ""));
    let mut node = keyward_tests::start(
        "keyward-ingestor",
        &[
            ("KEYWARD_API_URL", &api.url("")),
            (
                "KEYWARD_VERIFIER_KEY_FILE",
                &secret_file(dir.path(), "verifier", verifier["secret"].as_str().unwrap()),
            ),
            ("KEYWARD_AMQP_URL_FILE", &amqp_file),
            ("KEYWARD_EXCHANGE", &broker.exchange),
            ("KEYWARD_ACKS_QUEUE", &broker.acks_queue),
            ("KEYWARD_INGESTOR_ID", &node_id),
        ],
    );
    node.wait_ready("/readyz", READY).await;
    let res = http
        .post(node.url("/ingest/clicks"))
        .bearer_auth(key["secret"].as_str().unwrap())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "verified with the key from the file");

    drop((node, worker, api));
    broker.delete_ingestor_queues(&node_id).await;
    broker.cleanup().await;
}

/// A `…_FILE` that cannot be read ends the program at once with one line
/// that names the setting and the file, exit 2; nothing of any value.
#[tokio::test]
async fn an_unreadable_secret_file_ends_the_program_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let bad = secret_file(dir.path(), "bad", "mysql://user:hunter2@h/db");
    for (binary_name, setting, path) in [
        ("keyward-api", "KEYWARD_ADMIN_PASSWORD_FILE", missing),
        ("keyward-api", "KEYWARD_DATABASE_URL_FILE", bad.as_str()),
        ("keyward-sync-worker", "KEYWARD_AMQP_URL_FILE", missing),
        ("keyward-sync-worker", "KEYWARD_DATABASE_URL_FILE", missing),
        ("keyward-ingestor", "KEYWARD_VERIFIER_KEY_FILE", missing),
        ("keyward-ingestor", "KEYWARD_AMQP_URL_FILE", bad.as_str()),
    ] {
        let (code, _, err) = run_to_end(&binary(binary_name), &[], &[(setting, path)]).await;
        assert_eq!(code, 2, "{binary_name} {setting}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{binary_name}: {err}");
        assert!(
            err.contains(setting) && err.contains(path),
            "{binary_name}: {err}"
        );
        assert!(!err.contains("hunter2"), "{binary_name}: {err}");
    }
}

/// `keyward-api keys create` provisions a key without a person: the secret
/// goes to a 0600 file (never stdout), the key works at the API, the audit
/// names `cli`, and a second run keeps the key the file holds. A file that
/// holds anything else is refused, not overwritten.
#[tokio::test]
async fn keys_create_provisions_a_verifier_key_once() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("verifier.key");
    let file_arg = file.to_str().unwrap();
    let env = [("KEYWARD_DATABASE_URL", db.url.as_str())];
    let create = [
        "keys",
        "create",
        "--tenant",
        "_platform",
        "--role",
        "verifier",
        "--name",
        "ingestors",
        "--secret-file",
        file_arg,
    ];
    let (code, out, err) = run_to_end(&binary("keyward-api"), &create, &env).await;
    assert_eq!(code, 0, "{err}");
    let secret = std::fs::read_to_string(&file)
        .unwrap()
        .trim_end()
        .to_owned();
    let token = keyward_core::token::ApiKeyToken::parse(&secret).unwrap();
    assert!(
        out.starts_with(&format!("created {}", token.key_id())),
        "{out}"
    );
    assert!(!out.contains(&secret) && !err.contains(&secret));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (code, out, err) = run_to_end(&binary("keyward-api"), &create, &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("kept {}", token.key_id())),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim_end(),
        secret,
        "the file is kept"
    );

    let password = "provisioning-admin-1";
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", db.url.as_str()),
        ("KEYWARD_ADMIN_PASSWORD", password),
    ]);
    api.wait_ready("/readyz", READY).await;
    let http = reqwest::Client::new();
    let verified: serde_json::Value = http
        .post(api.url("/api/v1/verify"))
        .bearer_auth(&secret)
        .json(&serde_json::json!({"apiKey": secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified["valid"], true, "{verified}");
    let audit: serde_json::Value = http
        .get(api.url("/api/v1/audit?action=key.create"))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["actor"], "cli", "{audit}");

    let other = dir.path().join("other.key");
    std::fs::write(&other, "not a key\n").unwrap();
    let mut refused = create;
    refused[9] = other.to_str().unwrap();
    let (code, _, err) = run_to_end(&binary("keyward-api"), &refused, &env).await;
    assert_ne!(code, 0);
    assert!(err.contains("remove it to create a new key"), "{err}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "not a key\n");
}
