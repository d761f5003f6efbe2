//! Secrets never out (issue #13): the real API binary at `RUST_LOG=trace`,
//! pretty on SQLite and JSON on PostgreSQL, driven through every kind of
//! request that carries a secret or a password (creation, rotation,
//! verification, validation, Basic proofs right and wrong, refusals), then
//! every answer, the whole log, `/metrics` and the database's contents are
//! scanned. Secrets and passwords appear nowhere except in the one answer
//! that shows a new key's secret; digests and password hashes in no answer,
//! log line or metric.

use std::time::Duration;

use keyward_core::testing::TestDatabase;
use keyward_tests::{Running, start_api};
use reqwest::Method;
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const ADMIN_PW: &str = "scan-admin-pw-8c1e5f";
const USER_PW: &str = "scan-user-pw-2b7d9a";
const WRONG_PW: &str = "scan-wrong-pw-4f0c6e";

/// Answers worth scanning, with where they came from.
struct Seen {
    answers: Vec<(String, String)>,
    /// Secrets of keys created or rotated (each shown in its own answer).
    secrets: Vec<String>,
}

async fn call(
    api: &Running,
    seen: &mut Seen,
    method: Method,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> Value {
    let mut req = reqwest::Client::new().request(method.clone(), api.url(path));
    req = match auth {
        ("bearer", key) => req.bearer_auth(key),
        ("", _) => req,
        (user, pw) => req.basic_auth(user, Some(pw)),
    };
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = format!("{:?}", res.headers());
    let text = res.text().await.unwrap();
    assert!(status < 500, "{method} {path}: {status} {text}");
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if let Some(secret) = value["secret"].as_str() {
        seen.secrets.push(secret.to_owned());
        // The one place a secret may be: its own creation's answer. The
        // rest of that answer is scanned like any other.
        let mut rest = value.clone();
        rest["secret"] = Value::Null;
        seen.answers
            .push((format!("{method} {path}"), format!("{headers}{rest}")));
    } else {
        seen.answers
            .push((format!("{method} {path}"), format!("{headers}{text}")));
    }
    value
}

/// `POST /api/v1/verify` of `key` as the node holding `verifier`.
async fn verify(api: &Running, seen: &mut Seen, verifier: &str, key: &str) {
    let body = json!({"apiKey": key});
    call(
        api,
        seen,
        Method::POST,
        "/api/v1/verify",
        ("bearer", verifier),
        Some(body),
    )
    .await;
}

/// Drives the API; returns what was seen.
async fn drive(api: &Running) -> Seen {
    let mut seen = Seen {
        answers: Vec::new(),
        secrets: Vec::new(),
    };
    let admin = ("admin", ADMIN_PW);
    let s = &mut seen;
    call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants",
        admin,
        Some(json!({"id": "acme"})),
    )
    .await;
    let role = json!({"privileges": [{"privilege": "admin"}]});
    call(
        api,
        s,
        Method::PUT,
        "/api/v1/tenants/acme/roles/admins",
        admin,
        Some(role),
    )
    .await;
    let user = json!({"username": "alice", "password": USER_PW, "roles": ["admins"]});
    call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants/acme/users",
        admin,
        Some(user),
    )
    .await;
    // A password too short is refused without being echoed.
    let short = json!({"username": "bob", "password": "short-pw"});
    call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants/acme/users",
        admin,
        Some(short),
    )
    .await;
    let alice = ("alice", USER_PW);
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/users",
        alice,
        None,
    )
    .await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/users",
        ("alice", WRONG_PW),
        None,
    )
    .await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/users",
        ("nobody", WRONG_PW),
        None,
    )
    .await;

    let key = call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants/acme/apikeys",
        alice,
        Some(json!({"name": "k", "roles": ["admins"]})),
    )
    .await;
    let key_id = key["keyId"].as_str().unwrap().to_owned();
    let secret = key["secret"].as_str().unwrap().to_owned();
    let verifier = call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants/_platform/apikeys",
        admin,
        Some(json!({"name": "v", "roles": ["verifier"]})),
    )
    .await;
    let verifier = verifier["secret"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tenants/acme/apikeys/{key_id}");
    call(api, s, Method::GET, &path, ("bearer", &secret), None).await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/apikeys",
        ("bearer", &secret),
        None,
    )
    .await;
    let body = json!({"apiKey": secret});
    verify(api, s, &verifier, secret.as_str()).await;
    call(
        api,
        s,
        Method::POST,
        "/api/v1/tenants/acme/apikeys/validate",
        alice,
        Some(body),
    )
    .await;
    // A wrong secret for a real key id, and garbage.
    let forged = format!("{}{}", &secret[..secret.len() - 6], "AAAAAA");
    verify(api, s, &verifier, forged.as_str()).await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/apikeys",
        ("bearer", &forged),
        None,
    )
    .await;
    call(
        api,
        s,
        Method::PATCH,
        &path,
        alice,
        Some(json!({"name": "k2"})),
    )
    .await;
    let rotated = call(
        api,
        s,
        Method::POST,
        &format!("{path}/rotate"),
        alice,
        Some(json!({"gracePeriodSeconds": 60})),
    )
    .await;
    let new_id = rotated["keyId"].as_str().unwrap().to_owned();
    call(
        api,
        s,
        Method::DELETE,
        &format!("/api/v1/tenants/acme/apikeys/{new_id}"),
        alice,
        None,
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    verify(api, s, &verifier, new_secret.as_str()).await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/audit",
        alice,
        None,
    )
    .await;
    call(api, s, Method::GET, "/api/v1/audit", admin, None).await;
    call(
        api,
        s,
        Method::GET,
        "/api/v1/tenants/acme/users/alice/permissions",
        alice,
        None,
    )
    .await;
    // Then every operation of the document, with a password and with a
    // key secret (the rotated key's: still in its grace period), so that
    // no endpoint's logging goes unscanned.
    let doc = call(api, s, Method::GET, "/api/v1/openapi.json", ("", ""), None).await;
    let secret_holder = ("bearer", secret.as_str());
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{t}", "acme")
            .replace("{keyId}", &new_id)
            .replace("{eventId}", &new_id)
            .replace("{u}", "alice")
            .replace("{name}", "admins");
        for (method, body) in [
            (Method::GET, None),
            (Method::POST, Some(json!({}))),
            (Method::PUT, Some(json!({}))),
            (Method::PATCH, Some(json!({}))),
            (Method::DELETE, None),
        ] {
            if item.get(method.as_str().to_lowercase()).is_none() {
                continue;
            }
            for who in [admin, secret_holder] {
                call(api, s, method.clone(), &path, who, body.clone()).await;
            }
        }
    }
    call(api, s, Method::GET, "/metrics", ("", ""), None).await;
    seen
}

/// Stops the API and returns its log.
async fn stop(mut api: Running) -> String {
    api.signal("TERM");
    assert!(api.exit_status(Duration::from_secs(20)).await.success());
    api.stderr_text().await
}

fn scan(place: &str, text: &str, secrets: &[&str], digests: bool) {
    for s in secrets {
        assert!(!text.contains(s), "a secret or password in {place}");
    }
    if digests {
        for marker in ["sha256$", "$argon2"] {
            assert!(
                !text.contains(marker),
                "a digest or hash ({marker}) in {place}"
            );
        }
    }
}

async fn run(url: &str, format: &str) -> (Seen, String) {
    let mut api = start_api(&[
        ("KEYWARD_DATABASE_URL", url),
        ("KEYWARD_ADMIN_PASSWORD", ADMIN_PW),
        ("KEYWARD_LOG_FORMAT", format),
        ("RUST_LOG", "trace"),
    ]);
    api.wait_ready("/readyz", READY).await;
    let seen = drive(&api).await;
    let log = stop(api).await;
    assert!(log.contains("request finished"), "requests were logged");
    assert!(log.contains("TRACE"), "trace lines were written");
    (seen, log)
}

fn check(seen: &Seen, log: &str, database: &str) {
    let mut secrets: Vec<&str> = vec![ADMIN_PW, USER_PW, WRONG_PW, "short-pw"];
    secrets.extend(seen.secrets.iter().map(String::as_str));
    // The random part alone, too (a key id is public; its secret is not).
    let tails: Vec<String> = seen
        .secrets
        .iter()
        .map(|s| s[s.len() - 20..].to_owned())
        .collect();
    secrets.extend(tails.iter().map(String::as_str));
    assert!(
        seen.secrets.len() >= 3,
        "created, verifier and rotated keys"
    );
    for (what, answer) in &seen.answers {
        scan(&format!("the answer to {what}"), answer, &secrets, true);
    }
    scan("the log", log, &secrets, true);
    scan("the database", database, &secrets, false);
    assert!(database.contains("sha256$"), "the scan saw the key digests");
}

/// Every byte of a SQLite database: the file and its WAL.
fn sqlite_contents(dir: &std::path::Path) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn no_secret_in_answers_logs_metrics_or_sqlite_at_trace_pretty() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let (seen, log) = run(&url, "pretty").await;
    check(&seen, &log, &sqlite_contents(dir.path()));
}

#[tokio::test]
async fn no_secret_in_answers_logs_metrics_or_postgres_at_trace_json() {
    let Some(db) = TestDatabase::postgres_unmigrated().await else {
        return;
    };
    let (seen, log) = run(db.url.as_str(), "json").await;
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", db.url.as_str()])
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    check(&seen, &log, &String::from_utf8_lossy(&dump.stdout));
}
