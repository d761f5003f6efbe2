//! The key lifecycle beyond revoke (`docs/api.md`, "Key lifecycle") over HTTP, on SQLite and
//! PostgreSQL: update, rotate with and without grace, the event header of
//! RBAC changes, and the audit trail.

use crate::support::{
    ACME_ADMIN, ADMIN, ADMIN_PASSWORD, As, TestApp, assert_error, create_shipper_key, read,
    verifier_user,
};
use reqwest::Method;
use serde_json::{Value, json};

const VERIFIER: As<'static> = As::User("ingest-node", ADMIN_PASSWORD);

async fn setup(app: &TestApp) {
    app.tenant_with_admin("acme").await;
    for (name, privilege) in [("shippers", "ingestor"), ("readers", "reader")] {
        let role =
            json!({"privileges": [{"privilege": privilege, "resource": {"stream": "app-*"}}]});
        let (s, _) = app
            .put(
                &format!("/api/v1/tenants/acme/roles/{name}"),
                ACME_ADMIN,
                role,
            )
            .await;
        assert_eq!(s, 201);
    }
    verifier_user(app).await;
}

async fn verify(app: &TestApp, secret: &str) -> Value {
    let (s, body) = app
        .post("/api/v1/verify", VERIFIER, json!({"apiKey": secret}))
        .await;
    assert_eq!(s, 200);
    body
}

/// Sends `method path` with `body` (if any) and a request id; the status,
/// the `Keyward-Event-Id` header and the body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    who: As<'_>,
    body: Option<Value>,
    request_id: &str,
) -> (u16, Option<String>, Value) {
    let mut req = app
        .request(method, path, who)
        .header("x-request-id", request_id);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let event = res
        .headers()
        .get("keyward-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (s, body) = read(res).await;
    (s, event, body)
}

async fn update_changes_a_key_and_announces_it(app: TestApp) {
    setup(&app).await;
    let key = create_shipper_key(&app, "ci").await;
    create_shipper_key(&app, "taken").await;
    let id = key["keyId"].as_str().unwrap();
    let path = format!("/api/v1/tenants/acme/apikeys/{id}");
    let secret = key["secret"].as_str().unwrap();
    assert_eq!(verify(&app, secret).await["roles"], json!(["shippers"]));

    let body = json!({"name": "ci-2", "roles": ["readers"], "expiresAt": "2999-01-01T00:00:00Z"});
    let (s, event, updated) = send(&app, Method::PATCH, &path, ACME_ADMIN, Some(body), "u-1").await;
    assert_eq!(s, 200, "{updated}");
    let event = event.expect("Keyward-Event-Id on an update");
    assert_eq!(
        (&updated["name"], &updated["roles"], &updated["expiresAt"]),
        (
            &json!("ci-2"),
            &json!(["readers"]),
            &json!("2999-01-01T00:00:00Z")
        )
    );
    assert!(updated.get("secret").is_none());
    // The API's own cache let go of the old answer at once.
    assert_eq!(verify(&app, secret).await["roles"], json!(["readers"]));
    let (s, status) = app
        .get(&format!("/api/v1/events/{event}"), ACME_ADMIN)
        .await;
    assert_eq!(
        (s, &status["type"], &status["keyId"]),
        (200, &json!("key.updated"), &json!(id))
    );

    // null clears the expiry; a field left out stays; the alias answers too.
    let alias = format!("/api/v1/apikeys/{id}");
    let (s, _, cleared) = send(
        &app,
        Method::PATCH,
        &alias,
        ACME_ADMIN,
        Some(json!({"expiresAt": null})),
        "u-2",
    )
    .await;
    assert_eq!(
        (s, &cleared["expiresAt"], &cleared["name"]),
        (200, &Value::Null, &json!("ci-2"))
    );

    for (body, status, code) in [
        (json!({"name": "taken"}), 409, "duplicate_key_name"),
        (json!({"roles": ["ghost"]}), 422, "unknown_roles"),
        (
            json!({"expiresAt": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        (json!({"expiresAt": "tomorrow"}), 400, "invalid_request"),
        (json!({"name": ""}), 400, "invalid_request"),
        (json!({"secret": "x"}), 400, "invalid_request"),
    ] {
        let (s, event, err) = send(
            &app,
            Method::PATCH,
            &path,
            ACME_ADMIN,
            Some(body.clone()),
            "u-bad",
        )
        .await;
        assert_error(s, &err, status, code);
        assert_eq!(event, None, "{body}");
    }
    let ghost = format!(
        "/api/v1/tenants/acme/apikeys/{}",
        keyward_core::ids::KeyId::new()
    );
    let (s, _, err) = send(
        &app,
        Method::PATCH,
        &ghost,
        ACME_ADMIN,
        Some(json!({"name": "x"})),
        "u-404",
    )
    .await;
    assert_error(s, &err, 404, "key_not_found");
    assert_eq!(app.delete(&path, ACME_ADMIN).await.0, 202);
    let (s, _, err) = send(
        &app,
        Method::PATCH,
        &path,
        ACME_ADMIN,
        Some(json!({"name": "x"})),
        "u-409",
    )
    .await;
    assert_error(s, &err, 409, "invalid_state");
}

async fn rotation_keeps_both_keys_working_for_the_grace_only(app: TestApp) {
    setup(&app).await;
    let old = create_shipper_key(&app, "ci").await;
    let old_id = old["keyId"].as_str().unwrap();
    let old_secret = old["secret"].as_str().unwrap();
    verify(&app, old_secret).await; // cached: the rotation must evict it

    let path = format!("/api/v1/tenants/acme/apikeys/{old_id}/rotate");
    let res = app
        .request(Method::POST, &path, ACME_ADMIN)
        .json(&json!({"gracePeriodSeconds": 2}))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let event = res.headers()["keyward-event-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (s, new) = read(res).await;
    assert_eq!(s, 201, "{new}");
    let new_id = new["keyId"].as_str().unwrap();
    let new_secret = new["secret"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/tenants/acme/apikeys/{new_id}"));
    assert_eq!(
        (
            &new["replaces"],
            &new["name"],
            &new["roles"],
            &new["status"]
        ),
        (
            &json!(old_id),
            &json!("ci"),
            &json!(["shippers"]),
            &json!("active")
        )
    );
    let (_, old_now) = app
        .get(
            &format!("/api/v1/tenants/acme/apikeys/{old_id}"),
            ACME_ADMIN,
        )
        .await;
    assert_eq!(old_now["replacedBy"], json!(new_id));
    assert!(old_now["expiresAt"].is_string());
    let (_, status) = app
        .get(&format!("/api/v1/events/{event}"), ACME_ADMIN)
        .await;
    assert_eq!(status["type"], "key.updated");

    // During the grace both keys work; after it only the new one.
    assert_eq!(verify(&app, old_secret).await["valid"], true);
    assert_eq!(verify(&app, new_secret).await["valid"], true);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    assert_eq!(
        verify(&app, old_secret).await,
        json!({"valid": false, "reason": "expired"})
    );
    assert_eq!(verify(&app, new_secret).await["valid"], true);

    // A replaced key cannot be rotated again; the new one can, at once,
    // with no body at all (grace 0): its old self is revoked by the event.
    let (s, _, err) = send(
        &app,
        Method::POST,
        &path,
        ACME_ADMIN,
        Some(json!({})),
        "r-1",
    )
    .await;
    assert_error(s, &err, 409, "invalid_state");
    let again = format!("/api/v1/apikeys/{new_id}/rotate");
    let (s, event, third) = send(&app, Method::POST, &again, ACME_ADMIN, None, "r-2").await;
    assert_eq!(s, 201, "{third}");
    assert_eq!(
        verify(&app, new_secret).await,
        json!({"valid": false, "reason": "revoked"})
    );
    assert_eq!(
        verify(&app, third["secret"].as_str().unwrap()).await["valid"],
        true
    );
    let (_, status) = app
        .get(&format!("/api/v1/events/{}", event.unwrap()), ACME_ADMIN)
        .await;
    assert_eq!(status["type"], "key.revoked");

    let third_path = format!(
        "/api/v1/apikeys/{}/rotate",
        third["keyId"].as_str().unwrap()
    );
    for bad in [
        json!({"gracePeriodSeconds": -1}),
        json!({"gracePeriodSeconds": 604_801}),
        json!({"grace": 1}),
    ] {
        let (s, _, err) = send(
            &app,
            Method::POST,
            &third_path,
            ACME_ADMIN,
            Some(bad),
            "r-bad",
        )
        .await;
        assert_error(s, &err, 400, "invalid_request");
    }
}

async fn rbac_changes_name_their_event(app: TestApp) {
    setup(&app).await;
    let role = json!({"privileges": [{"privilege": "reader"}]});
    let group = json!({"roles": ["readers"], "users": [], "apiKeys": []});
    let user = json!({"username": "bob", "password": ADMIN_PASSWORD, "roles": []});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", ACME_ADMIN, user)
            .await
            .0,
        201
    );
    for (method, path, body, status) in [
        (
            Method::PUT,
            "/api/v1/tenants/acme/roles/extra",
            Some(role),
            201,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/acme/groups/g",
            Some(group),
            201,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/acme/users/bob/roles",
            Some(json!({"roles": ["extra"]})),
            200,
        ),
        (
            Method::PUT,
            "/api/v1/tenants/acme/users/bob/roles",
            Some(json!({"roles": []})),
            200,
        ),
        (Method::DELETE, "/api/v1/tenants/acme/groups/g", None, 204),
        (
            Method::DELETE,
            "/api/v1/tenants/acme/roles/extra",
            None,
            204,
        ),
    ] {
        let (s, event, _) = send(&app, method.clone(), path, ACME_ADMIN, body, "rbac").await;
        assert_eq!(s, status, "{method} {path}");
        let event = event.unwrap_or_else(|| panic!("no Keyward-Event-Id on {method} {path}"));
        let (s, st) = app
            .get(&format!("/api/v1/events/{event}"), ACME_ADMIN)
            .await;
        assert_eq!(
            (s, &st["type"], &st["keyId"]),
            (200, &json!("rbac.changed"), &Value::Null)
        );
    }
    // A refused change emits nothing.
    let (s, event, _) = send(
        &app,
        Method::DELETE,
        "/api/v1/tenants/acme/roles/shippers",
        ADMIN,
        None,
        "x",
    )
    .await;
    assert_eq!(s, 204);
    assert!(event.is_some());
    let (s, event, _) = send(
        &app,
        Method::DELETE,
        "/api/v1/tenants/acme/roles/nope",
        ADMIN,
        None,
        "x",
    )
    .await;
    assert_eq!((s, event), (404, None));
}

async fn audit_records_changes_and_refusals(app: TestApp) {
    setup(&app).await;
    app.tenant_with_admin("other").await;
    let reader = json!({"username": "carol", "password": ADMIN_PASSWORD, "roles": ["readers"]});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", ACME_ADMIN, reader)
            .await
            .0,
        201
    );
    let carol = As::User("carol", ADMIN_PASSWORD);

    let (s, _, key) = send(
        &app,
        Method::POST,
        "/api/v1/tenants/acme/apikeys",
        ACME_ADMIN,
        Some(json!({"name": "ci", "roles": ["shippers"]})),
        "create-1",
    )
    .await;
    assert_eq!(s, 201);
    let id = key["keyId"].as_str().unwrap().to_owned();
    let secret = key["secret"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tenants/acme/apikeys/{id}");
    // Refused: carol may read, not revoke (403); nobody at all (401).
    let (s, _, _) = send(&app, Method::DELETE, &path, carol, None, "denied-1").await;
    assert_eq!(s, 403);
    let (s, _, _) = send(&app, Method::DELETE, &path, As::Nobody, None, "denied-2").await;
    assert_eq!(s, 401);
    let (s, event, _) = send(&app, Method::DELETE, &path, ACME_ADMIN, None, "revoke-1").await;
    assert_eq!(s, 202);
    // A key acting for the tenant is named `apikey:{id}`; a user who is an
    // admin through a group only is named by its username.
    let (s, _, admin_key) = send(
        &app,
        Method::POST,
        "/api/v1/tenants/acme/apikeys",
        ACME_ADMIN,
        Some(json!({"name": "automation", "roles": ["admins"]})),
        "create-2",
    )
    .await;
    assert_eq!(s, 201);
    let admin_key_id = admin_key["keyId"].as_str().unwrap();
    let as_key = As::Key(admin_key["secret"].as_str().unwrap());
    let role = json!({"privileges": [{"privilege": "writer"}]});
    let (s, _, _) = send(
        &app,
        Method::PUT,
        "/api/v1/tenants/acme/roles/writers",
        as_key,
        Some(role),
        "by-key",
    )
    .await;
    assert_eq!(s, 201);
    let dave = json!({"username": "dave", "password": ADMIN_PASSWORD, "roles": []});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", ACME_ADMIN, dave)
            .await
            .0,
        201
    );
    let group = json!({"roles": ["admins"], "users": ["dave"], "apiKeys": []});
    assert_eq!(
        app.put("/api/v1/tenants/acme/groups/leads", ACME_ADMIN, group)
            .await
            .0,
        201
    );
    let as_dave = As::User("dave", ADMIN_PASSWORD);
    let (s, _, _) = send(
        &app,
        Method::DELETE,
        "/api/v1/tenants/acme/roles/writers",
        as_dave,
        None,
        "by-group",
    )
    .await;
    assert_eq!(s, 204);

    let (s, page) = app
        .get("/api/v1/tenants/acme/audit?limit=200", ACME_ADMIN)
        .await;
    assert_eq!(s, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let find = |request: &str| -> Vec<&Value> {
        items.iter().filter(|r| r["requestId"] == request).collect()
    };
    let created = find("create-1");
    assert_eq!(created.len(), 1);
    assert_eq!(
        (
            &created[0]["actor"],
            &created[0]["action"],
            &created[0]["target"],
            &created[0]["outcome"],
            &created[0]["eventId"]
        ),
        (
            &json!("acme-admin"),
            &json!("key.create"),
            &json!(id),
            &json!("ok"),
            &Value::Null
        )
    );
    let revoked = find("revoke-1");
    assert_eq!(
        (&revoked[0]["action"], &revoked[0]["eventId"]),
        (&json!("key.revoke"), &json!(event.unwrap()))
    );
    let denied = find("denied-1");
    assert_eq!(
        (
            &denied[0]["actor"],
            &denied[0]["action"],
            &denied[0]["outcome"],
            &denied[0]["target"]
        ),
        (
            &json!("carol"),
            &json!("key.revoke"),
            &json!("denied"),
            &json!(id)
        )
    );
    assert_eq!(find("denied-2")[0]["actor"], "anonymous");
    assert_eq!(
        (&find("by-key")[0]["actor"], &find("by-key")[0]["action"]),
        (&json!(format!("apikey:{admin_key_id}")), &json!("role.put"))
    );
    assert_eq!(
        (
            &find("by-group")[0]["actor"],
            &find("by-group")[0]["action"]
        ),
        (&json!("dave"), &json!("role.delete"))
    );
    // Newest first; every record is acme's; no secret or password in any.
    assert_eq!(items[0]["requestId"], "by-group");
    assert!(items.iter().all(|r| r["tenantId"] == "acme"));
    let text = page.to_string();
    let key_secret = admin_key["secret"].as_str().unwrap();
    for leaked in [&secret[40..], &key_secret[40..], ADMIN_PASSWORD] {
        assert!(!text.contains(leaked), "a secret in the audit trail");
    }
    assert!(!text.contains("$argon2") && !text.contains("$sha256"));

    // Filters and the cursor.
    let (_, only) = app
        .get(
            "/api/v1/tenants/acme/audit?action=key.revoke&actor=carol",
            ACME_ADMIN,
        )
        .await;
    assert_eq!(only["items"].as_array().unwrap().len(), 1);
    let (_, first) = app
        .get("/api/v1/tenants/acme/audit?limit=2", ACME_ADMIN)
        .await;
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = app
        .get(
            &format!("/api/v1/tenants/acme/audit?limit=2&cursor={cursor}"),
            ACME_ADMIN,
        )
        .await;
    assert_eq!(second["items"][0]["id"], items[2]["id"]);
    let (s, err) = app
        .get("/api/v1/tenants/acme/audit?action=key.explode", ACME_ADMIN)
        .await;
    assert_eq!(
        assert_error(s, &err, 400, "invalid_request")["details"]["field"],
        "action"
    );

    // Other tenants' admins see nothing of acme's; the all-tenant list is
    // for superadmins.
    let other = As::User("other-admin", ADMIN_PASSWORD);
    let (s, err) = app.get("/api/v1/tenants/acme/audit", other).await;
    assert_error(s, &err, 403, "forbidden");
    let (s, err) = app.get("/api/v1/audit", ACME_ADMIN).await;
    assert_error(s, &err, 403, "forbidden");
    let (s, all) = app.get("/api/v1/audit?tenant=other&limit=200", ADMIN).await;
    assert_eq!(s, 200);
    let all = all["items"].as_array().unwrap();
    assert!(!all.is_empty() && all.iter().all(|r| r["tenantId"] == "other"));
    let (s, all) = app.get("/api/v1/audit?limit=200", ADMIN).await;
    assert_eq!(s, 200);
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tenantId"] == "acme")
    );
}

on_both_stores!(
    update_changes_a_key_and_announces_it,
    rotation_keeps_both_keys_working_for_the_grace_only,
    rbac_changes_name_their_event,
    audit_records_changes_and_refusals,
);
