//! API keys (`docs/api.md`) in-process, on SQLite and PostgreSQL.

use crate::support::{
    ACME_ADMIN, ADMIN, ADMIN_PASSWORD, As, TestApp, assert_error, create_shipper_key, read,
    verifier_user,
};
use reqwest::Method;
use serde_json::{Value, json};

async fn setup(app: &TestApp) {
    app.tenant_with_admin("acme").await;
    let role = json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "app-*"}}]});
    assert_eq!(
        app.put("/api/v1/tenants/acme/roles/shippers", ACME_ADMIN, role)
            .await
            .0,
        201
    );
}

async fn create_shows_the_secret_once(app: TestApp) {
    setup(&app).await;
    let res = app
        .request(Method::POST, "/api/v1/tenants/acme/apikeys", ACME_ADMIN)
        .json(&json!({"name": "ci", "roles": ["shippers"], "expiresAt": "2999-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let (s, key) = read(res).await;
    assert_eq!(s, 201);
    let secret = key["secret"].as_str().unwrap().to_owned();
    let key_id = key["keyId"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/tenants/acme/apikeys/{key_id}"));
    assert!(secret.starts_with(&format!("kw_{key_id}_")));
    assert!(secret.starts_with(key["start"].as_str().unwrap()));
    assert_eq!(
        (key["status"].as_str(), key["createdBy"].as_str()),
        (Some("active"), Some("acme-admin"))
    );
    assert_eq!(key["roles"], json!(["shippers"]));

    for path in [
        location.as_str(),
        "/api/v1/tenants/acme/apikeys",
        &format!("/api/v1/apikeys/{key_id}"),
    ] {
        let (s, body) = app.get(path, ACME_ADMIN).await;
        assert_eq!(s, 200, "{path}");
        assert!(
            !body.to_string().contains(&secret[40..]),
            "secret shown again at {path}"
        );
        assert!(body.get("secret").is_none());
    }
    // Not in the database either: only its SHA-256 digest.
    let creds = app
        .store()
        .key_credentials(keyward_core::ids::KeyId::parse(key_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        creds.secret_hash,
        keyward_core::digest::KeyDigest::of(&secret).encode()
    );
    assert!(!creds.secret_hash.contains(&secret[40..]));

    // Nor in the SQLite files (database and write-ahead log), byte for byte.
    if app.store().backend() == "sqlite" {
        let url = app.db.url.as_str();
        let path = url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let random = &secret[30..];
        assert!(
            std::fs::metadata(&path).is_ok(),
            "the database file is where we look"
        );
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !bytes.windows(random.len()).any(|w| w == random.as_bytes()),
                    "secret found in {file}"
                );
            }
        }
    }
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": "ci"}),
        )
        .await;
    assert_error(s, &body, 409, "duplicate_key_name");
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": "x", "roles": ["ghost"]}),
        )
        .await;
    assert_eq!(
        assert_error(s, &body, 422, "unknown_roles")["details"]["roles"],
        json!(["ghost"])
    );
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": "x", "expiresAt": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "expiresAt"
    );
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": "a b"}),
        )
        .await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "name"
    );
}

async fn list_pages_and_filters(app: TestApp) {
    setup(&app).await;
    for i in 0..5 {
        create_shipper_key(&app, &format!("k{i}")).await;
    }
    let (_, first) = app
        .get("/api/v1/tenants/acme/apikeys?limit=2", ACME_ADMIN)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["name"], "k4", "newest first");
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = app
        .get(
            &format!("/api/v1/tenants/acme/apikeys?limit=2&cursor={cursor}"),
            ACME_ADMIN,
        )
        .await;
    assert_eq!(second["items"][0]["name"], "k2");
    let (_, all) = app
        .get("/api/v1/tenants/acme/apikeys?limit=200", ACME_ADMIN)
        .await;
    assert_eq!(
        (
            all["items"].as_array().unwrap().len(),
            all["nextCursor"].clone()
        ),
        (5, json!(null))
    );
    for (query, field) in [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=zzz", "cursor"),
    ] {
        let (s, body) = app
            .get(&format!("/api/v1/tenants/acme/apikeys?{query}"), ACME_ADMIN)
            .await;
        assert_eq!(
            assert_error(s, &body, 400, "invalid_request")["details"]["field"],
            field
        );
    }
    let (_, active) = app
        .get("/api/v1/tenants/acme/apikeys?status=revoked", ACME_ADMIN)
        .await;
    assert!(active["items"].as_array().unwrap().is_empty());
}

async fn revoke_is_idempotent_and_rejected_at_once(app: TestApp) {
    setup(&app).await;
    let verifier = verifier_user(&app).await;
    let key = create_shipper_key(&app, "ci").await;
    let secret = key["secret"].as_str().unwrap();
    let id = key["keyId"].as_str().unwrap();
    // The setup's role change wrote its own event.
    let earlier = app.store().outbox_stats().await.unwrap().pending;
    let (s, v) = app
        .post("/api/v1/verify", verifier, json!({"apiKey": secret}))
        .await;
    assert_eq!(
        (s, v["valid"].clone(), v["tenantId"].clone()),
        (200, json!(true), json!("acme"))
    );
    assert_eq!(
        v["privileges"],
        json!([{"privilege": "ingestor", "resource": {"stream": "app-*"}}])
    );
    assert_eq!(v["cacheTtlSeconds"], 60);

    let (s, revoked) = app
        .delete(&format!("/api/v1/tenants/acme/apikeys/{id}"), ACME_ADMIN)
        .await;
    assert_eq!(s, 202);
    assert_eq!(
        (
            revoked["status"].as_str(),
            revoked["revocation"]["state"].as_str()
        ),
        (Some("revoked"), Some("pending"))
    );
    let event = revoked["revocation"]["eventId"].clone();
    let (s, again) = app
        .delete(&format!("/api/v1/apikeys/{id}"), ACME_ADMIN)
        .await;
    assert_eq!(
        (s, again["revocation"]["eventId"].clone()),
        (202, event),
        "same event"
    );
    assert_eq!(
        app.store().outbox_stats().await.unwrap().pending,
        earlier + 1,
        "one event"
    );

    let (s, v) = app
        .post("/api/v1/verify", verifier, json!({"apiKey": secret}))
        .await;
    assert_eq!((s, v), (200, json!({"valid": false, "reason": "revoked"})));
    let (s, body) = app
        .delete(
            &format!(
                "/api/v1/tenants/acme/apikeys/{}",
                keyward_core::ids::KeyId::new()
            ),
            ACME_ADMIN,
        )
        .await;
    assert_error(s, &body, 404, "key_not_found");
    let (s, body) = app
        .delete("/api/v1/tenants/acme/apikeys/not-a-ulid", ACME_ADMIN)
        .await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "keyId"
    );
    let (s, body) = app
        .post(
            &format!("/api/v1/tenants/acme/apikeys/{id}/revocation/retry"),
            ACME_ADMIN,
            json!({}),
        )
        .await;
    assert_error(s, &body, 409, "invalid_state");
}

async fn verify_answers_every_reason(app: TestApp) {
    setup(&app).await;
    let verifier = verifier_user(&app).await;
    let key = create_shipper_key(&app, "ci").await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let mut wrong = secret.clone();
    wrong.replace_range(40..41, if &secret[40..41] == "a" { "b" } else { "a" });
    let forged = keyward_core::token::ApiKeyToken::generate(
        &keyward_core::token::KeyPrefix::default(),
        keyward_core::ids::KeyId::parse(key["keyId"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    for (candidate, reason) in [
        ("nonsense".to_owned(), "malformed"),
        (wrong, "malformed"),
        (forged.expose_secret().to_owned(), "unknown"),
    ] {
        let (s, v) = app
            .post("/api/v1/verify", verifier, json!({"apiKey": candidate}))
            .await;
        assert_eq!((s, v), (200, json!({"valid": false, "reason": reason})));
    }
    // Only verifiers and superadmins may verify; tenant admins may not.
    let (s, body) = app
        .post("/api/v1/verify", ACME_ADMIN, json!({"apiKey": secret}))
        .await;
    assert_error(s, &body, 403, "forbidden");
    assert_eq!(
        app.post("/api/v1/verify", ADMIN, json!({"apiKey": secret}))
            .await
            .0,
        200
    );
}

async fn validate_is_admin_only_and_tenant_scoped(app: TestApp) {
    setup(&app).await;
    let key = create_shipper_key(&app, "ci").await;
    let secret = key["secret"].as_str().unwrap();
    let (s, v) = app
        .post(
            "/api/v1/tenants/acme/apikeys/validate",
            ACME_ADMIN,
            json!({"apiKey": secret}),
        )
        .await;
    assert_eq!(
        (s, v["valid"].clone(), v["keyId"].clone()),
        (200, json!(true), key["keyId"].clone())
    );
    let (s, v) = app
        .post(
            "/api/v1/apikeys/validate",
            ACME_ADMIN,
            json!({"apiKey": "kw_x"}),
        )
        .await;
    assert_eq!((s, v), (200, json!({"valid": false})));
    app.tenant_with_admin("beta").await;
    let beta = As::User("beta-admin", ADMIN_PASSWORD);
    let (s, v) = app
        .post(
            "/api/v1/tenants/beta/apikeys/validate",
            beta,
            json!({"apiKey": secret}),
        )
        .await;
    assert_eq!(
        (s, v),
        (200, json!({"valid": false})),
        "another tenant's key is not valid here"
    );
    // 403 before the body is looked at: even a broken body gets 403.
    let res = app
        .request(Method::POST, "/api/v1/tenants/acme/apikeys/validate", beta)
        .header("Content-Type", "text/plain")
        .body("not json")
        .send()
        .await
        .unwrap();
    let (s, body) = read(res).await;
    assert_error(s, &body, 403, "forbidden");
}

/// Key ids are public (they are in `start`): forged tokens carrying the
/// victim's key id, one after another and many at once, are refused and
/// never lock the real holder out.
async fn forged_secrets_never_lock_out_the_holder(app: TestApp) {
    setup(&app).await;
    let verifier = verifier_user(&app).await;
    let key = create_shipper_key(&app, "ci").await;
    let id = keyward_core::ids::KeyId::parse(key["keyId"].as_str().unwrap()).unwrap();
    let forged = || {
        keyward_core::token::ApiKeyToken::generate(&keyward_core::token::KeyPrefix::default(), id)
            .unwrap()
    };
    let verify = |secret: String| {
        let app = &app;
        async move {
            app.post("/api/v1/verify", verifier, json!({"apiKey": secret}))
                .await
        }
    };
    for _ in 0..12 {
        let (s, v) = verify(forged().expose_secret().to_owned()).await;
        assert_eq!((s, v), (200, json!({"valid": false, "reason": "unknown"})));
    }
    let burst = (0..60).map(|_| verify(forged().expose_secret().to_owned()));
    for (s, v) in futures_util::future::join_all(burst).await {
        assert_eq!((s, v["valid"].clone()), (200, json!(false)));
    }
    let (s, v) = verify(key["secret"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, v["valid"].clone()), (200, json!(true)), "{v}");
}

async fn bearer_key_admin_and_role_changes_evict(app: TestApp) {
    setup(&app).await;
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            json!({"name": "robot", "roles": ["admins"]}),
        )
        .await;
    assert_eq!(s, 201);
    let secret = body["secret"].as_str().unwrap().to_owned();
    let robot = As::Key(&secret);
    assert_eq!(app.get("/api/v1/tenants/acme/apikeys", robot).await.0, 200);
    // The role loses admin: the very next request is refused.
    let (s, _) = app
        .put(
            "/api/v1/tenants/acme/roles/admins",
            ADMIN,
            json!({"privileges": [{"privilege": "reader"}]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = app.get("/api/v1/tenants/acme/apikeys", robot).await;
    assert_error(s, &body, 403, "forbidden");
    let text = app.metrics_text().await;
    assert!(text.contains("keyward_verify_total"), "{text}");
}

/// A revoke's answer names its event in `Keyward-Event-Id` (the same on a
/// repeated DELETE), and `GET /api/v1/events/{id}` reports where it is, to
/// its tenant's admins and superadmins only.
async fn revocation_events_are_named_and_reported(app: TestApp) {
    setup(&app).await;
    app.tenant_with_admin("other").await;
    let key = create_shipper_key(&app, "ci").await;
    let id = key["keyId"].as_str().unwrap();
    let path = format!("/api/v1/tenants/acme/apikeys/{id}");
    let header = |res: &reqwest::Response| {
        res.headers()
            .get("keyward-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let res = app
        .request(Method::DELETE, &path, ACME_ADMIN)
        .send()
        .await
        .unwrap();
    let event = header(&res).expect("Keyward-Event-Id on a revoke");
    let (s, revoked) = read(res).await;
    assert_eq!(
        (s, revoked["revocation"]["eventId"].as_str()),
        (202, Some(event.as_str()))
    );
    let res = app
        .request(Method::DELETE, &path, ACME_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&res).as_deref(),
        Some(event.as_str()),
        "the one revocation"
    );
    let res = app
        .request(Method::GET, &path, ACME_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&res), None, "a read changes nothing");

    let events = format!("/api/v1/events/{event}");
    for who in [ACME_ADMIN, ADMIN] {
        let (s, e) = app.get(&events, who).await;
        assert_eq!(s, 200, "{e}");
        assert_eq!(
            (
                &e["eventId"],
                &e["type"],
                &e["tenantId"],
                &e["keyId"],
                &e["state"]
            ),
            (
                &json!(event),
                &json!("key.revoked"),
                &json!("acme"),
                &json!(id),
                &json!("pending")
            )
        );
        assert_eq!(
            (&e["attempts"], &e["appliedBy"], &e["publishedAt"]),
            (&json!(0), &json!(0), &Value::Null)
        );
        assert!(e["createdAt"].is_string());
    }
    let other = As::User("other-admin", ADMIN_PASSWORD);
    let (s, body) = app.get(&events, other).await;
    assert_error(s, &body, 404, "event_not_found");
    let unknown = format!("/api/v1/events/{}", keyward_core::ids::EventId::new());
    let (s, body) = app.get(&unknown, ADMIN).await;
    assert_error(s, &body, 404, "event_not_found");
    let (s, body) = app.get("/api/v1/events/not-a-ulid", ADMIN).await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "eventId"
    );
    let (s, body) = app.get(&events, As::Nobody).await;
    assert_error(s, &body, 401, "unauthenticated");
}

/// Every id `status=expired` lists for acme, page by page.
async fn expired_ids(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/tenants/acme/apikeys?status=expired&limit=200{cursor}");
        let (s, body) = app.get(&path, ACME_ADMIN).await;
        assert_eq!(s, 200, "{body}");
        for k in body["items"].as_array().unwrap() {
            assert_eq!(k["status"], "expired");
            ids.push(k["keyId"].as_str().unwrap().to_owned());
        }
        match body["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

/// The API's sweep marks expired keys for the listing in batches until
/// none is left (`expiry_sweep`, migration 0008), and the listing answers
/// the same before and after.
async fn expired_keys_are_swept_for_the_listing(app: TestApp) {
    setup(&app).await;
    let store = app.store();
    let acme = keyward_core::ids::TenantId::parse("acme").unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    // One more than a sweep's batch.
    for i in 0..1_001 {
        let mut key = keyward_core::testing::placeholder_new_key(&acme, &format!("e{i}"), &[]);
        key.expires_at = Some(past);
        store
            .create_key(&key, &keyward_core::testing::change())
            .await
            .unwrap();
    }
    create_shipper_key(&app, "live").await;
    let before = expired_ids(&app).await;
    assert_eq!(before.len(), 1_001);

    // The app's own sweep ran at its start, before these keys, and runs
    // again a minute later: this round is the only one meanwhile.
    assert_eq!(
        keyward_api::expiry_sweep::sweep(store.as_ref()).await,
        1_001
    );
    assert_eq!(keyward_api::expiry_sweep::sweep(store.as_ref()).await, 0);
    assert_eq!(expired_ids(&app).await, before);
}

on_both_stores!(
    revocation_events_are_named_and_reported,
    create_shows_the_secret_once,
    list_pages_and_filters,
    revoke_is_idempotent_and_rejected_at_once,
    verify_answers_every_reason,
    validate_is_admin_only_and_tenant_scoped,
    forged_secrets_never_lock_out_the_holder,
    bearer_key_admin_and_role_changes_evict,
    expired_keys_are_swept_for_the_listing,
);

mod replicas {
    use super::*;

    /// Replica `base`'s verify answer for `secret`, asked as the ingestors'
    /// user.
    async fn verify_on(app: &TestApp, base: &str, secret: &str) -> Value {
        crate::support::verify_as_verifier(&app.client, base, secret)
            .await
            .1
    }

    /// `verify_on` until `done` holds of its answer, allowing for a
    /// NOTIFY's flight time only (it is delivered at commit): the last
    /// answer.
    async fn verify_on_until(
        app: &TestApp,
        base: &str,
        secret: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut answer = verify_on(app, base, secret).await;
        for _ in 0..20 {
            if done(&answer) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            answer = verify_on(app, base, secret).await;
        }
        answer
    }

    /// Two API replicas on one PostgreSQL database: B has the key cached,
    /// A revokes it, B rejects it at once (NOTIFY keyward_keys).
    async fn revoke_on_a_is_rejected_by_b_at_once(app: TestApp) {
        if app.store().backend() == "sqlite" {
            return; // Replicas share PostgreSQL; one process owns a SQLite file.
        }
        setup(&app).await;
        let verifier = verifier_user(&app).await;
        let key = create_shipper_key(&app, "ci").await;
        let secret = key["secret"].as_str().unwrap();
        let b = app.replica().await;
        let cached = verify_on(&app, &b, secret).await;
        assert_eq!(cached["valid"], true, "B proved and cached it");
        let _ = verifier;
        // Give B's listener a moment to be subscribed before the revoke.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let id = key["keyId"].as_str().unwrap();
        assert_eq!(
            app.delete(&format!("/api/v1/tenants/acme/apikeys/{id}"), ACME_ADMIN)
                .await
                .0,
            202
        );
        let answer = verify_on_until(&app, &b, secret, |a| a["valid"] == false).await;
        assert_eq!(answer, json!({"valid": false, "reason": "revoked"}));
    }

    /// A revoke while the database is gone: 503, and nothing written.
    async fn revoke_with_the_database_down_is_503_and_writes_nothing(app: TestApp) {
        setup(&app).await;
        let key = create_shipper_key(&app, "ci").await;
        let id = key["keyId"].as_str().unwrap().to_owned();
        let earlier = app.store().outbox_stats().await.unwrap().pending;
        if !app.db.set_reachable(false).await {
            return; // SQLite: an embedded file has no server to lose.
        }
        let (s, body) = app
            .delete(&format!("/api/v1/tenants/acme/apikeys/{id}"), ADMIN)
            .await;
        assert_error(s, &body, 503, "unavailable");
        app.db.set_reachable(true).await;
        let (s, k) = app
            .get(&format!("/api/v1/tenants/acme/apikeys/{id}"), ACME_ADMIN)
            .await;
        assert_eq!(
            (s, k["status"].clone()),
            (200, json!("active")),
            "nothing half-written"
        );
        assert_eq!(app.store().outbox_stats().await.unwrap().pending, earlier);
    }

    /// The same for an RBAC change: B has the key's privileges cached, A
    /// changes its role, B answers the new privileges at once (the
    /// change's event and its `keyward_keys` notice share a statement).
    async fn a_role_changed_on_a_is_answered_by_b_at_once(app: TestApp) {
        if app.store().backend() == "sqlite" {
            return; // Replicas share PostgreSQL; one process owns a SQLite file.
        }
        setup(&app).await;
        verifier_user(&app).await;
        let key = create_shipper_key(&app, "ci").await;
        let secret = key["secret"].as_str().unwrap();
        let b = app.replica().await;
        let before = verify_on(&app, &b, secret).await;
        assert_eq!(
            before["privileges"],
            json!([{"privilege": "ingestor", "resource": {"stream": "app-*"}}]),
            "B proved and cached it: {before}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let role = json!({"privileges": [{"privilege": "reader"}]});
        let (s, _) = app
            .put("/api/v1/tenants/acme/roles/shippers", ACME_ADMIN, role)
            .await;
        assert_eq!(s, 200);
        let answer = verify_on_until(&app, &b, secret, |a| *a != before).await;
        assert_eq!(
            answer["privileges"],
            json!([{"privilege": "reader", "resource": null}]),
            "{answer}"
        );
    }

    on_both_stores!(
        revoke_on_a_is_rejected_by_b_at_once,
        a_role_changed_on_a_is_answered_by_b_at_once,
        revoke_with_the_database_down_is_503_and_writes_nothing,
    );
}

mod usage {
    use super::*;

    /// `lastUsedAt` is written by the batch flusher, not by the call.
    async fn last_used_is_flushed_in_batches(app: TestApp) {
        setup(&app).await;
        let verifier = verifier_user(&app).await;
        let key = create_shipper_key(&app, "ci").await;
        let path = format!(
            "/api/v1/tenants/acme/apikeys/{}",
            key["keyId"].as_str().unwrap()
        );
        assert_eq!(
            app.get(&path, ACME_ADMIN).await.1["lastUsedAt"],
            json!(null)
        );
        for _ in 0..3 {
            let (s, _) = app
                .post("/api/v1/verify", verifier, json!({"apiKey": key["secret"]}))
                .await;
            assert_eq!(s, 200);
        }
        let mut last_used = json!(null);
        // The flusher writes every USAGE_FLUSH_INTERVAL (10 s).
        for _ in 0..150 {
            last_used = app.get(&path, ACME_ADMIN).await.1["lastUsedAt"].clone();
            if !last_used.is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(last_used.is_string(), "flushed within one interval");
    }

    on_both_stores!(last_used_is_flushed_in_batches);
}
