//! The caches under change: a fill held between its store read and its
//! cache insert (the app's `FillGate`), a change committed right there, the
//! fill released — the next request must see the change. Each of these
//! tests was run with the generation check removed
//! (`verify_cache::is_current` returning `true`) and failed; with the
//! check in place they pass.
//!
//! Also: single flight of misses, SHA-256 rewrite of argon2id key hashes
//! from earlier versions, remembered Basic proofs, the bounded argon2 pool.

use std::sync::Arc;

use crate::support::{ACME_ADMIN, ADMIN, ADMIN_PASSWORD, As, TestApp, assert_error, metric_value};
use keyward_api::generations::Scope;
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::password::{Argon2Settings, PasswordHasher};
use keyward_core::store::NewApiKey;
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use serde_json::{Value, json};

async fn setup(app: &TestApp) -> As<'static> {
    app.tenant_with_admin("acme").await;
    let role = json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "app-*"}}]});
    let (s, _) = app
        .put("/api/v1/tenants/acme/roles/shippers", ACME_ADMIN, role)
        .await;
    assert_eq!(s, 201);
    let body =
        json!({"username": "ingest-node", "password": ADMIN_PASSWORD, "roles": ["verifier"]});
    let (s, _) = app
        .post("/api/v1/tenants/_platform/users", ADMIN, body)
        .await;
    assert_eq!(s, 201);
    As::User("ingest-node", ADMIN_PASSWORD)
}

async fn create_key(app: &TestApp, name: &str) -> (String, String) {
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": name, "roles": ["shippers"]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    (
        body["keyId"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

/// A `verifier` key of `_platform`, to call verify with (Bearer): its id
/// and secret.
async fn verifier_key(app: &TestApp) -> (String, String) {
    let (s, body) = app
        .post(
            "/api/v1/tenants/_platform/apikeys",
            ADMIN,
            json!({"name": "node", "roles": ["verifier"]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    (
        body["keyId"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn verify_at(app: &TestApp, base: &str, verifier: As<'_>, secret: &str) -> Value {
    let As::User(u, p) = verifier else {
        unreachable!()
    };
    let res = app
        .client
        .post(format!("{base}/api/v1/verify"))
        .basic_auth(u, Some(p))
        .json(&json!({"apiKey": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// `POST /api/v1/verify` of `secret` at `base` as the verifier, sent from
/// a task of its own (to be held at a gate); its status and body.
fn verify_in_background(
    app: &TestApp,
    base: &str,
    secret: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let (client, base, secret) = (app.client.clone(), base.to_owned(), secret.to_owned());
    tokio::spawn(async move { crate::support::verify_as_verifier(&client, &base, &secret).await })
}

async fn revoke(app: &TestApp, key_id: &str) {
    revoke_in(app, "acme", ACME_ADMIN, key_id).await;
}

/// Revokes `key_id` of `tenant` as `who`.
async fn revoke_in(app: &TestApp, tenant: &str, who: As<'_>, key_id: &str) {
    let (s, body) = app
        .delete(&format!("/api/v1/tenants/{tenant}/apikeys/{key_id}"), who)
        .await;
    assert_eq!(s, 202, "{body}");
}

/// `POST /api/v1/verify` of `secret` by the key `caller` (Bearer).
async fn verify_as_key(app: &TestApp, caller: &str, secret: &str) -> (u16, Value) {
    app.post("/api/v1/verify", As::Key(caller), json!({"apiKey": secret}))
        .await
}

/// Store reads of this app's verify path: every one passes the key gate.
/// (A metric would not do: tests in one process share the recorder.)
fn store_reads(app: &TestApp) -> u64 {
    app.gates.key.passed()
}

/// A verify whose miss read the key active, held; the key revoked; the
/// miss released: its pre-revoke answer must not be cached.
async fn verify_in_flight_across_a_revoke_caches_nothing(app: TestApp) {
    let verifier = setup(&app).await;
    let (key_id, secret) = create_key(&app, "ci").await;
    // The verifier's own credential is proven before the gate is armed.
    verify_at(&app, &app.base, verifier, "kw_not-a-key").await;

    let mut held = app.gates.key.hold_next();
    let in_flight = verify_in_background(&app, &app.base, &secret);
    held.reached().await;
    revoke(&app, &key_id).await;
    held.release();
    assert_eq!(in_flight.await.unwrap().0, 200);

    let v = verify_at(&app, &app.base, verifier, &secret).await;
    assert_eq!(v, json!({"valid": false, "reason": "revoked"}));
    let (s, body) = app
        .get("/api/v1/tenants/acme/apikeys", As::Key(&secret))
        .await;
    assert_error(s, &body, 401, "unauthenticated");
}

/// A request that arrives after a revoke's answer and joins a read begun
/// before it must not be answered from that read: it reads again.
async fn a_request_joining_a_read_from_before_a_revoke_says_revoked(app: TestApp) {
    let verifier = setup(&app).await;
    let (key_id, secret) = create_key(&app, "ci").await;
    verify_at(&app, &app.base, verifier, "kw_not-a-key").await;

    let mut held = app.gates.key.hold_next();
    let first = verify_in_background(&app, &app.base, &secret);
    held.reached().await;
    revoke(&app, &key_id).await;
    let joined = verify_in_background(&app, &app.base, &secret);
    // Time to join the read in the air (its key's flight is still held).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reads = store_reads(&app);
    held.release();
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(
        joined.await.unwrap(),
        (200, json!({"valid": false, "reason": "revoked"}))
    );
    // Both saw the read was older than the revoke and read again.
    assert_eq!(store_reads(&app) - reads, 2);
}

/// A role loses its privilege while a miss of a key holding it is held:
/// the next verify answers the privileges as they are now.
async fn role_withdrawn_during_a_miss_is_not_cached(app: TestApp) {
    let verifier = setup(&app).await;
    let (_, secret) = create_key(&app, "ci").await;
    verify_at(&app, &app.base, verifier, "kw_not-a-key").await;

    let mut held = app.gates.key.hold_next();
    let in_flight = verify_in_background(&app, &app.base, &secret);
    held.reached().await;
    let reader_only = json!({"privileges": [{"privilege": "reader", "resource": {"stream": "x"}}]});
    let (s, _) = app
        .put(
            "/api/v1/tenants/acme/roles/shippers",
            ACME_ADMIN,
            reader_only,
        )
        .await;
    assert_eq!(s, 200);
    held.release();
    assert_eq!(in_flight.await.unwrap().0, 200);

    let v = verify_at(&app, &app.base, verifier, &secret).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(
        v["privileges"],
        json!([{"privilege": "reader", "resource": {"stream": "x"}}]),
        "the withdrawn privilege is gone: {v}"
    );
}

/// A verify whose caller is an API key (Bearer): once that key is proven
/// its requests are answered in the extractor from the verify cache (the
/// fast path, `VerifyService::verify_caller_cached`). The caller's own
/// first read held, the caller's key revoked, the read released: that
/// request and the next ones are refused — nothing of the read from before
/// the revoke was used or cached.
async fn a_bearer_caller_revoked_during_its_first_read_is_refused(app: TestApp) {
    setup(&app).await;
    let (caller_id, caller) = verifier_key(&app).await;
    let (_, secret) = create_key(&app, "ci").await;

    // The first read of a verify is its caller's.
    let mut held = app.gates.key.hold_next();
    let in_flight = app
        .request(reqwest::Method::POST, "/api/v1/verify", As::Key(&caller))
        .json(&json!({"apiKey": secret}))
        .send();
    let in_flight =
        tokio::spawn(async move { crate::support::read(in_flight.await.unwrap()).await });
    held.reached().await;
    revoke_in(&app, "_platform", ADMIN, &caller_id).await;
    held.release();
    // Its read is older than the revoke it is answered after: it reads
    // again (as any verify does) and is refused; so are the next ones,
    // which find nothing cached.
    for (s, body) in [
        in_flight.await.unwrap(),
        verify_as_key(&app, &caller, &secret).await,
        verify_as_key(&app, &caller, &secret).await,
    ] {
        assert_error(s, &body, 401, "unauthenticated");
        assert_eq!(body["error"]["message"], "The API key is revoked.");
    }
}

/// A Bearer caller answered over and over is answered from its worker's
/// own copy of its entry (`caller_memo`): once its key is revoked, that
/// copy must not answer either. Run with the copy's generation check
/// removed (`CallerMemo::get`), this test failed: the revoked caller kept
/// verifying on the connection whose worker held the copy.
async fn a_bearer_caller_answered_from_its_workers_copy_is_refused_once_revoked(app: TestApp) {
    setup(&app).await;
    let (caller_id, caller) = verifier_key(&app).await;
    let (_, secret) = create_key(&app, "ci").await;
    // One client, one keep-alive connection: one worker answers them all.
    for _ in 0..5 {
        let (s, body) = verify_as_key(&app, &caller, &secret).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["valid"], true, "{body}");
    }
    revoke_in(&app, "_platform", ADMIN, &caller_id).await;
    for _ in 0..5 {
        let (s, body) = verify_as_key(&app, &caller, &secret).await;
        assert_error(s, &body, 401, "unauthenticated");
        assert_eq!(body["error"]["message"], "The API key is revoked.");
    }
}

/// `GET …/acme/apikeys` as user `ops` (Basic), in the background; its status.
fn ops_lists_keys_in_background(app: &TestApp) -> tokio::task::JoinHandle<u16> {
    let (client, base) = (app.client.clone(), app.base.clone());
    tokio::spawn(async move {
        client
            .get(format!("{base}/api/v1/tenants/acme/apikeys"))
            .basic_auth("ops", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// A Basic credential whose user is deleted while its proof is held is
/// not remembered: the next request with it is refused.
async fn basic_user_deleted_during_its_proof_is_not_remembered(app: TestApp) {
    setup(&app).await;
    let body = json!({"username": "ops", "password": ADMIN_PASSWORD, "roles": ["admins"]});
    let (s, _) = app.post("/api/v1/tenants/acme/users", ADMIN, body).await;
    assert_eq!(s, 201);
    let ops = As::User("ops", ADMIN_PASSWORD);

    let mut held = app.gates.user.hold_next();
    let in_flight = ops_lists_keys_in_background(&app);
    held.reached().await;
    // The admin's own proof passes the (now unarmed) gate.
    let (s, _) = app.delete("/api/v1/tenants/acme/users/ops", ADMIN).await;
    assert_eq!(s, 204);
    held.release();
    assert_eq!(in_flight.await.unwrap(), 200);

    let (s, body) = app.get("/api/v1/tenants/acme/apikeys", ops).await;
    assert_error(s, &body, 401, "unauthenticated");
}

/// Sixteen concurrent first requests with one Basic credential share one
/// proof: the others wait for it and are answered from memory, none takes
/// a slot of the failed-proof limit (10 per username) meanwhile. Without
/// the turns (`proof_turns` taken out of `auth::basic`), each ran its own
/// argon2 and six were refused `429` with the right password.
async fn concurrent_first_basic_requests_share_one_proof(app: TestApp) {
    setup(&app).await;
    let body = json!({"username": "ops", "password": ADMIN_PASSWORD, "roles": ["admins"]});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", ADMIN, body).await.0,
        201
    );
    let fills = app.gates.user.passed();
    let mut held = app.gates.user.hold_next();
    let requests: Vec<_> = (0..16)
        .map(|_| ops_lists_keys_in_background(&app))
        .collect();
    held.reached().await;
    // Time for the other fifteen to arrive and queue behind the held proof
    // (or, without the turns, to run proofs of their own).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.release();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(app.gates.user.passed(), fills + 1, "one argon2 proof");
}

/// A proven password is remembered: the second request runs no argon2.
/// Its roles reduced, the very next request is judged by the new ones.
async fn basic_proofs_are_remembered_until_the_user_changes(app: TestApp) {
    setup(&app).await;
    let body = json!({"username": "ops", "password": ADMIN_PASSWORD, "roles": ["admins"]});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", ADMIN, body).await.0,
        201
    );
    let ops = As::User("ops", ADMIN_PASSWORD);
    assert_eq!(app.get("/api/v1/tenants/acme/apikeys", ops).await.0, 200);
    // A fill passes the user gate after its argon2 proof: none happens.
    let fills = app.gates.user.passed();
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/tenants/acme/apikeys", ops).await.0, 200);
    }
    assert_eq!(app.gates.user.passed(), fills, "no argon2 run");
    let (s, _) = app
        .put(
            "/api/v1/tenants/acme/users/ops/roles",
            ADMIN,
            json!({"roles": []}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = app.get("/api/v1/tenants/acme/apikeys", ops).await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app
        .get(
            "/api/v1/tenants/acme/apikeys",
            As::User("ops", "a wrong password!"),
        )
        .await;
    assert_error(s, &body, 401, "unauthenticated");
}

/// 64 concurrent first requests for one key share one store read.
async fn concurrent_misses_share_one_read(app: TestApp) {
    let verifier = setup(&app).await;
    let (_, secret) = create_key(&app, "ci").await;
    verify_at(&app, &app.base, verifier, "kw_not-a-key").await;
    let reads_before = store_reads(&app);

    let mut held = app.gates.key.hold_next();
    let requests: Vec<_> = (0..64)
        .map(|_| verify_in_background(&app, &app.base, &secret))
        .collect();
    held.reached().await;
    // Without single flight every other request reads the store now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(store_reads(&app) - reads_before, 1);
    held.release();
    for r in requests {
        assert_eq!(r.await.unwrap().1["valid"], true);
    }
    assert_eq!(store_reads(&app) - reads_before, 1);
}

/// A key whose hash an earlier version wrote as argon2id keeps working and
/// is rewritten as a SHA-256 digest after its first successful proof.
async fn argon2_key_hashes_are_rewritten_after_a_proof(app: TestApp) {
    let verifier = setup(&app).await;
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let hasher = PasswordHasher::new(Argon2Settings::cheap()).unwrap();
    let now = chrono::Utc::now();
    let legacy = NewApiKey {
        key_id,
        tenant_id: TenantId::parse("acme").unwrap(),
        name: KeyName::parse("legacy").unwrap(),
        roles: vec![RoleName::parse("shippers").unwrap()],
        start: token.start(),
        secret_hash: hasher.hash(token.expose_secret()).await.unwrap(),
        created_by: "earlier version".into(),
        created_at: now,
        expires_at: None,
    };
    app.store()
        .create_key(&legacy, &keyward_core::testing::change())
        .await
        .unwrap();
    let stored = || async { app.store().key_credentials(key_id).await.unwrap().unwrap() };
    assert!(stored().await.secret_hash.starts_with("$argon2id$"));

    let wrong = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let v = verify_at(&app, &app.base, verifier, wrong.expose_secret()).await;
    assert_eq!(v, json!({"valid": false, "reason": "unknown"}));
    assert!(
        stored().await.secret_hash.starts_with("$argon2id$"),
        "a wrong secret rewrites nothing"
    );

    let v = verify_at(&app, &app.base, verifier, token.expose_secret()).await;
    assert_eq!(v["valid"], true, "{v}");
    let hash = stored().await.secret_hash;
    assert!(hash.starts_with("$sha256$"), "rewritten: {hash}");
    assert!(!hash.contains(token.expose_secret()));
    let v = verify_at(&app, &app.base, verifier, token.expose_secret()).await;
    assert_eq!(v["valid"], true, "{v}");
    let v = verify_at(&app, &app.base, verifier, wrong.expose_secret()).await;
    assert_eq!(v, json!({"valid": false, "reason": "unknown"}));
}

on_both_stores!(
    verify_in_flight_across_a_revoke_caches_nothing,
    a_request_joining_a_read_from_before_a_revoke_says_revoked,
    role_withdrawn_during_a_miss_is_not_cached,
    a_bearer_caller_revoked_during_its_first_read_is_refused,
    a_bearer_caller_answered_from_its_workers_copy_is_refused_once_revoked,
    basic_user_deleted_during_its_proof_is_not_remembered,
    basic_proofs_are_remembered_until_the_user_changes,
    concurrent_first_basic_requests_share_one_proof,
    concurrent_misses_share_one_read,
    argon2_key_hashes_are_rewritten_after_a_proof,
);

/// Two replicas on one PostgreSQL database: A's miss is held after reading
/// the key active, B revokes it, A hears B's NOTIFY, A's miss is released:
/// A must answer `revoked` from then on.
#[actix_web::test]
async fn a_revoke_on_another_replica_during_a_miss_is_not_cached() {
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let app = TestApp::start(db).await;
    let verifier = setup(&app).await;
    let (key_id, secret) = create_key(&app, "ci").await;
    let a = app.replica_spawned().await;
    verify_at(&app, &a.base, verifier, "kw_not-a-key").await;
    let key = KeyId::parse(&key_id).unwrap();

    let mut held = a.gates.key.hold_next();
    let in_flight = verify_in_background(&app, &a.base, &secret);
    held.reached().await;
    let before = a.generations.snapshot();
    revoke(&app, &key_id).await;
    // Until A has heard B's NOTIFY, A cannot know; from then on it must.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.generations.unchanged_since(before, &[Scope::Key(key)]) {
        assert!(
            std::time::Instant::now() < deadline,
            "A never heard the revoke"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    held.release();
    assert_eq!(in_flight.await.unwrap().0, 200);
    let a = a.base;
    let v = verify_at(&app, &a, verifier, &secret).await;
    assert_eq!(v, json!({"valid": false, "reason": "revoked"}));
}

/// One password thread and one waiting place: a burst of Basic requests
/// (unknown users: no credentials needed) is answered `503` + `Retry-After`
/// past that, while remembered credentials are served as usual.
#[actix_web::test]
async fn a_full_password_queue_answers_503_and_nothing_else_degrades() {
    let db = keyward_core::testing::TestDatabase::sqlite().await;
    let mut settings = crate::support::test_settings(&db.url);
    settings.argon2 = Argon2Settings {
        threads: 1,
        queue: 1,
        ..Argon2Settings::default()
    };
    let app = Arc::new(TestApp::start_with(db, settings).await);
    let verifier = setup(&app).await;
    let (_, secret) = create_key(&app, "robot").await;
    assert_eq!(
        verify_at(&app, &app.base, verifier, &secret).await["valid"],
        true
    );

    let rejected = |t: &str| metric_value(t, "keyward_argon2_rejected_total");
    let rejected_before = rejected(&app.metrics_text().await);
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let user = format!("nobody-{i}");
                let res = app
                    .request(
                        reqwest::Method::GET,
                        "/api/v1/tenants/acme/apikeys",
                        As::User(&user, "wrong password!!"),
                    )
                    .send()
                    .await
                    .unwrap();
                let retry_after = res.headers().get("retry-after").cloned();
                let (s, body) = crate::support::read(res).await;
                (s, body, retry_after)
            })
        })
        .collect();
    while rejected(&app.metrics_text().await) == rejected_before {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The pool is full now: remembered credentials need none of it.
    assert_eq!(
        app.get("/api/v1/tenants/acme/apikeys", ACME_ADMIN).await.0,
        200
    );
    assert_eq!(
        verify_at(&app, &app.base, verifier, &secret).await["valid"],
        true
    );
    let mut busy = 0;
    for r in burst {
        let (s, body, retry_after) = r.await.unwrap();
        match s {
            401 => {}
            503 => {
                assert_error(s, &body, 503, "unavailable");
                assert_eq!(retry_after.unwrap(), "1");
                busy += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(busy > 0, "the queue never filled");
    // The pool serves again once the burst is over.
    let (s, body) = app
        .get(
            "/api/v1/tenants/acme/apikeys",
            As::User("nobody", "wrong password!!"),
        )
        .await;
    assert_error(s, &body, 401, "unauthenticated");
}
