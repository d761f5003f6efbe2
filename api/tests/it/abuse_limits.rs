//! Clients that would hold the server's connections: a trickled head, a
//! trickled body, more connections than the server takes (issue #13).
//! Store-independent: SQLite only.

use std::time::{Duration, Instant};

use base64::Engine;
use keyward_core::config::HttpLimits;
use keyward_core::testing::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use reqwest::Method;
use serde_json::json;

use crate::support::{
    ADMIN, ADMIN_PASSWORD, As, TestApp, assert_error, metric_value, read, test_settings,
};

async fn app_with(http: HttpLimits) -> TestApp {
    let db = TestDatabase::sqlite().await;
    let settings = keyward_api::settings::Settings {
        http,
        ..test_settings(&db.url)
    };
    TestApp::start_with(db, settings).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection (at most
/// `within`), and how long that took.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

fn admin_basic() -> String {
    let pair = format!("admin:{ADMIN_PASSWORD}");
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// An authenticated client that sends part of its body and stops: `408
/// request_timeout` after the timeout, and the connection is closed
/// (without the limit it stayed open for ever: 200 of 200 after 25 s).
#[actix_web::test]
async fn a_trickled_body_is_408_and_closes() {
    let app = app_with(HttpLimits {
        request_timeout_seconds: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /api/v1/tenants HTTP/1.1\r\nHost: keyward\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":",
        admin_basic()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Nothing was created from the half body.
    let (s, body) = app.get("/api/v1/tenants", crate::support::ADMIN).await;
    assert_eq!(
        (s, body["items"].as_array().unwrap().len()),
        (200, 1),
        "{body}"
    );
}

/// The same for a pipelined verify, the hot path: its caller's key is
/// cached, so the body's first look is the handler's first wait, and
/// nothing else of the connection's is pending. actix starts a pipelined
/// request once its predecessor is answered and polls it once; that first
/// look leaves no wake-up behind (`first_look`), so without the watch's
/// ticker nothing polls the request again unless more bytes come (checked:
/// with `first_look::watch` made to skip the watch, the connection was
/// still open after 20 s and this fails).
#[actix_web::test]
async fn a_pipelined_request_with_a_trickled_body_is_408_in_time() {
    let timeout = Duration::from_secs(4);
    let app = app_with(HttpLimits {
        request_timeout_seconds: timeout.as_secs(),
        ..HttpLimits::default()
    })
    .await;
    let (s, key) = app
        .post(
            "/api/v1/tenants/_platform/apikeys",
            crate::support::ADMIN,
            serde_json::json!({"name": "node", "roles": ["verifier"]}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let secret = key["secret"].as_str().unwrap();
    let verify = |body: &str, length: usize| {
        format!(
            "POST /api/v1/verify HTTP/1.1\r\nHost: keyward\r\nAuthorization: Bearer {secret}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{body}"
        )
    };
    let whole = format!(r#"{{"apiKey":"{secret}"}}"#);
    // The key in the cache, so that neither request on the connection
    // waits for anything but its body.
    let (s, answer) = app
        .post(
            "/api/v1/verify",
            As::Key(secret),
            serde_json::json!({"apiKey": secret}),
        )
        .await;
    assert_eq!(
        (s, &answer["valid"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    let mut stream = connect(&app).await;
    let pipelined = verify(&whole, whole.len()) + &verify(r#"{"apiKey":"#, whole.len());
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let second = answer
        .find("HTTP/1.1 408")
        .unwrap_or_else(|| panic!("no 408 after the first answer: {answer}"));
    assert!(answer[second..].contains("\"request_timeout\""), "{answer}");
    // The timeout, and at most a tick of the watch before it started.
    assert!(
        took >= timeout - Duration::from_millis(100)
            && took < timeout + keyward_api::first_look::TICK + Duration::from_millis(1500),
        "{took:?}"
    );
}

/// A client that never finishes its request head is cut off too.
#[actix_web::test]
async fn a_trickled_head_is_cut_off() {
    let app = app_with(HttpLimits {
        request_timeout_seconds: 1,
        ..HttpLimits::default()
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// Past `max_connections` the server takes no further connection until one
/// closes: the next client waits in the backlog, then is served.
#[actix_web::test]
async fn connections_past_the_maximum_wait_for_a_free_one() {
    // One per worker thread: the limit is spread over the workers, so the
    // smallest total is their number.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let app = app_with(HttpLimits {
        request_timeout_seconds: 60,
        max_connections: u32::try_from(workers).unwrap(),
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..workers {
        idle.push(connect(&app).await);
    }
    // Let the server take them in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = connect(&app).await;
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: keyward\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(800), late.read(&mut buf)).await;
    assert!(early.is_err(), "served past the maximum: {early:?}");
    drop(idle);
    let (answer, _) = until_closed(&mut late, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Failed Basic proofs are limited per username and per client address:
/// `429 rate_limited` with `Retry-After`, and no argon2 proof runs for a
/// refused attempt. A password proven before keeps working from memory; a
/// proof that succeeds does not count.
#[actix_web::test]
async fn failed_password_proofs_are_limited_per_username_and_client() {
    let db = TestDatabase::sqlite().await;
    let settings = keyward_api::settings::Settings {
        failed_logins_per_username: 3,
        failed_logins_per_client: 6,
        ..test_settings(&db.url)
    };
    let app = TestApp::start_with(db, settings).await;
    assert_eq!(app.get("/api/v1/tenants", ADMIN).await.0, 200, "proven");
    let wrong = As::User("admin", "not the password at all");
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/tenants", wrong).await.0, 401);
    }
    // This app's proofs: the argon2 metric is shared by every app this
    // test binary runs at once (it counted one of theirs under load).
    let proofs = || async { app.gates.password.passed() };
    let before = proofs().await;
    let res = app
        .request(Method::GET, "/api/v1/tenants", wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (s, body) = read(res).await;
    assert_error(s, &body, 429, "rate_limited");
    assert_eq!(proofs().await, before, "a refused attempt runs no proof");
    assert_eq!(
        app.get("/api/v1/tenants", ADMIN).await.0,
        200,
        "remembered proof"
    );

    // Successful first proofs of other users do not count against the
    // client; failures under other usernames do.
    for name in ["carol", "dave"] {
        let body = json!({"username": name, "password": ADMIN_PASSWORD});
        assert_eq!(
            app.post("/api/v1/tenants/_platform/users", ADMIN, body)
                .await
                .0,
            201
        );
        let (s, _) = app
            .get(
                "/api/v1/tenants/_platform/users",
                As::User(name, ADMIN_PASSWORD),
            )
            .await;
        assert_eq!(s, 403, "{name} proven (no permission, but authenticated)");
    }
    for name in ["x1", "x2", "x3"] {
        assert_eq!(
            app.get("/api/v1/tenants", As::User(name, "wrong password!"))
                .await
                .0,
            401
        );
    }
    let (s, body) = app
        .get("/api/v1/tenants", As::User("x4", "wrong password!"))
        .await;
    assert_error(s, &body, 429, "rate_limited");
}

/// Refusals are audited, but each is a database write a caller without
/// credentials gets for free: at most 60 a minute per client address are
/// written, the rest counted.
#[actix_web::test]
async fn refusals_audited_per_client_are_bounded() {
    let app = TestApp::start(TestDatabase::sqlite().await).await;
    app.tenant_with_admin("acme").await;
    let body = json!({"name": "k"});
    for _ in 0..75 {
        let (s, _) = app
            .post("/api/v1/tenants/acme/apikeys", As::Nobody, body.clone())
            .await;
        assert_eq!(s, 401);
    }
    let (s, page) = app
        .get(
            "/api/v1/tenants/acme/audit?limit=200&actor=anonymous",
            crate::support::ACME_ADMIN,
        )
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 60, "{page}");
    let unrecorded = metric_value(
        &app.metrics_text().await,
        "keyward_audit_denied_unrecorded_total",
    );
    assert!(unrecorded >= 15.0, "{unrecorded}");
}
