//! The admin API (`docs/api.md`) in-process, on SQLite and PostgreSQL.

use crate::support::{ADMIN, ADMIN_PASSWORD, As, TestApp, assert_error, read};
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::store::NewApiKey;
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use reqwest::Method;
use serde_json::{Value, json};

// ------------------------------------------------------------- authentication

async fn missing_or_wrong_credentials_are_401(app: TestApp) {
    for who in [
        As::Nobody,
        As::User("admin", "wrong password here"),
        As::User("nobody", ADMIN_PASSWORD),
        As::Key("kw_not-a-key"),
    ] {
        let res = app
            .request(Method::GET, "/api/v1/tenants", who)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers()["www-authenticate"],
            r#"Basic realm="keyward", Bearer"#
        );
        let (status, body) = read(res).await;
        assert_error(status, &body, 401, "unauthenticated");
    }
    let res = app
        .request(Method::GET, "/api/v1/tenants", As::Nobody)
        .header("Authorization", "Basic !!!not-base64")
        .send()
        .await
        .unwrap();
    let (status, body) = read(res).await;
    assert_error(status, &body, 401, "unauthenticated");
}

async fn request_ids_are_echoed_or_made(app: TestApp) {
    let res = app
        .request(Method::GET, "/api/v1/tenants", As::Nobody)
        .header("X-Request-Id", "my-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-trace-42");
    let (_, body) = read(res).await;
    assert_eq!(body["error"]["requestId"], "my-trace-42");

    let res = app
        .request(Method::GET, "/healthz", As::Nobody)
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a fresh ULID replaces an insane id: {id}");
}

// ------------------------------------------------------------- tenants

async fn tenants_are_for_superadmins(app: TestApp) {
    let (s, body) = app
        .post(
            "/api/v1/tenants",
            ADMIN,
            json!({"id": "acme", "name": "Acme"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["name"].as_str()),
        (Some("acme"), Some("Acme"))
    );
    let (s, body) = app
        .post("/api/v1/tenants", ADMIN, json!({"id": "acme"}))
        .await;
    assert_error(s, &body, 409, "tenant_exists");
    for bad in ["Acme", "-x", "", "a_b", "_platform2"] {
        let (s, body) = app.post("/api/v1/tenants", ADMIN, json!({"id": bad})).await;
        let err = assert_error(s, &body, 400, "invalid_request");
        assert_eq!(err["details"]["field"], "id");
    }
    let (s, body) = app.get("/api/v1/tenants", ADMIN).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["_platform", "acme"]);

    let user = app.tenant_with_admin("beta").await;
    let tenant_admin = As::User(&user, ADMIN_PASSWORD);
    let (s, body) = app.get("/api/v1/tenants", tenant_admin).await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app
        .post("/api/v1/tenants", tenant_admin, json!({"id": "gamma"}))
        .await;
    assert_error(s, &body, 403, "forbidden");
}

// ------------------------------------------------------------- roles

async fn roles_lifecycle(app: TestApp) {
    app.tenant_with_admin("acme").await;
    let admin = As::User("acme-admin", ADMIN_PASSWORD);
    let role = json!({"privileges": [{"privilege": "ingestor", "resource": {"stream": "app-*"}},
                                     {"privilege": "reader"}]});
    let (s, body) = app
        .put("/api/v1/tenants/acme/roles/shippers", admin, role.clone())
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        body["privileges"],
        role["privileges"]
            .as_array()
            .map(|p| {
                let mut p = p.clone();
                p[1]["resource"] = json!(null);
                json!(p)
            })
            .unwrap()
    );
    let (s, _) = app
        .put(
            "/api/v1/tenants/acme/roles/shippers",
            admin,
            json!({"privileges": []}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = app.get("/api/v1/tenants/acme/roles/shippers", admin).await;
    assert_eq!((s, body["privileges"].clone()), (200, json!([])));
    let (s, body) = app.get("/api/v1/tenants/acme/roles", admin).await;
    assert_eq!(s, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);

    // Bad privileges name the entry; nothing is written.
    for (bad, field) in [
        (
            json!({"privileges": [{"privilege": "root"}]}),
            "privileges[0].privilege",
        ),
        (
            json!({"privileges": [{"privilege": "superadmin"}]}),
            "privileges[0]",
        ),
        (
            json!({"privileges": [{"privilege": "admin", "resource": {"stream": "x"}}]}),
            "privileges[0]",
        ),
        (
            json!({"privileges": [{"privilege": "reader", "resource": {"stream": "a b"}}]}),
            "privileges[0].resource.stream",
        ),
        (json!({"privileges": "admin"}), "privileges"),
        (json!({}), "privileges"),
    ] {
        let (s, body) = app.put("/api/v1/tenants/acme/roles/bad", admin, bad).await;
        let err = assert_error(s, &body, 400, "invalid_request");
        assert_eq!(err["details"]["field"], field);
    }
    let (s, body) = app.get("/api/v1/tenants/acme/roles/bad", admin).await;
    assert_error(s, &body, 404, "role_not_found");

    // In use by a user: 409; once free: 204.
    let body = json!({"username": "u1", "password": ADMIN_PASSWORD, "roles": ["shippers"]});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", admin, body).await.0,
        201
    );
    let (s, body) = app
        .delete("/api/v1/tenants/acme/roles/shippers", admin)
        .await;
    assert_error(s, &body, 409, "role_in_use");
    assert_eq!(
        app.delete("/api/v1/tenants/acme/users/u1", admin).await.0,
        204
    );
    let (s, body) = app
        .delete("/api/v1/tenants/acme/roles/shippers", admin)
        .await;
    assert_eq!((s, body), (204, json!(null)));
    let (s, body) = app
        .delete("/api/v1/tenants/acme/roles/shippers", admin)
        .await;
    assert_error(s, &body, 404, "role_not_found");
}

async fn builtin_roles_cannot_change(app: TestApp) {
    let (s, body) = app
        .put(
            "/api/v1/tenants/_platform/roles/superadmin",
            ADMIN,
            json!({"privileges": []}),
        )
        .await;
    assert_error(s, &body, 409, "invalid_state");
    let (s, body) = app
        .delete("/api/v1/tenants/_platform/roles/verifier", ADMIN)
        .await;
    assert_error(s, &body, 409, "invalid_state");
    let (s, body) = app
        .get("/api/v1/tenants/_platform/roles/superadmin", ADMIN)
        .await;
    assert_eq!((s, body["builtin"].clone()), (200, json!(true)));
}

async fn tenant_isolation(app: TestApp) {
    app.tenant_with_admin("a").await;
    app.tenant_with_admin("b").await;
    let a_admin = As::User("a-admin", ADMIN_PASSWORD);
    for path in [
        "/api/v1/tenants/b/roles",
        "/api/v1/tenants/b/users",
        "/api/v1/tenants/b/groups",
        "/api/v1/tenants/nope/roles",
        "/api/v1/tenants/_platform/users",
    ] {
        let (s, body) = app.get(path, a_admin).await;
        let err = assert_error(s, &body, 403, "forbidden");
        assert_eq!(
            err["message"], "You may not do this.",
            "same answer for existing and unknown"
        );
    }
    let (s, body) = app
        .put(
            "/api/v1/tenants/b/roles/x",
            a_admin,
            json!({"privileges": []}),
        )
        .await;
    assert_error(s, &body, 403, "forbidden");
    // The superadmin gets 404 for a tenant that does not exist.
    let (s, body) = app.get("/api/v1/tenants/nope/roles", ADMIN).await;
    assert_error(s, &body, 404, "tenant_not_found");
}

// ------------------------------------------------------------- users

async fn users_lifecycle(app: TestApp) {
    app.tenant_with_admin("acme").await;
    let admin = As::User("acme-admin", ADMIN_PASSWORD);
    let password = "s3cret-and-long-enough";
    let body = json!({"username": "alice", "password": password, "roles": ["admins"]});
    let res = app
        .request(Method::POST, "/api/v1/tenants/acme/users", admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["location"],
        "/api/v1/tenants/acme/users/alice"
    );
    let (s, created) = read(res).await;
    assert_eq!(s, 201);
    assert_eq!(created["username"], "alice");
    assert_eq!(created["roles"], json!(["admins"]));
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/users",
            admin,
            json!({"username": "alice", "password": password}),
        )
        .await;
    assert_error(s, &body, 409, "duplicate_username");
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/users",
            admin,
            json!({"username": "bob", "password": password, "roles": ["ghost", "admins"]}),
        )
        .await;
    let err = assert_error(s, &body, 422, "unknown_roles");
    assert_eq!(err["details"]["roles"], json!(["ghost"]));
    let (s, body) = app.get("/api/v1/tenants/acme/users/bob", admin).await;
    assert_error(s, &body, 404, "user_not_found");
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/users",
            admin,
            json!({"username": "bob", "password": "tiny-pw"}),
        )
        .await;
    let err = assert_error(s, &body, 400, "invalid_request");
    assert_eq!(err["details"]["field"], "password");
    assert!(!body.to_string().contains("tiny-pw"));

    for path in [
        "/api/v1/tenants/acme/users",
        "/api/v1/tenants/acme/users/alice",
    ] {
        let (s, body) = app.get(path, admin).await;
        assert_eq!(s, 200);
        let text = body.to_string();
        assert!(
            !text.contains(password) && !text.contains("argon2") && !text.contains("password"),
            "{text}"
        );
    }
    let (s, body) = app
        .put(
            "/api/v1/tenants/acme/users/alice/roles",
            admin,
            json!({"roles": []}),
        )
        .await;
    assert_eq!((s, body["roles"].clone()), (200, json!([])));
    let (s, body) = app
        .put(
            "/api/v1/tenants/acme/users/alice/roles",
            admin,
            json!({"roles": ["ghost"]}),
        )
        .await;
    assert_error(s, &body, 422, "unknown_roles");
    let (s, body) = app
        .put(
            "/api/v1/tenants/acme/users/nobody/roles",
            admin,
            json!({"roles": []}),
        )
        .await;
    assert_error(s, &body, 404, "user_not_found");
    let (s, _) = app.delete("/api/v1/tenants/acme/users/alice", admin).await;
    assert_eq!(s, 204);
    let (s, body) = app.delete("/api/v1/tenants/acme/users/alice", admin).await;
    assert_error(s, &body, 404, "user_not_found");
    // A deleted user cannot log in any more.
    let (s, body) = app
        .get("/api/v1/tenants/acme/users", As::User("alice", password))
        .await;
    assert_error(s, &body, 401, "unauthenticated");
}

async fn platform_admins_cannot_mint_superadmins(app: TestApp) {
    let role = json!({"privileges": [{"privilege": "admin"}]});
    assert_eq!(
        app.put("/api/v1/tenants/_platform/roles/ops", ADMIN, role)
            .await
            .0,
        201
    );
    let body = json!({"username": "op", "password": ADMIN_PASSWORD, "roles": ["ops"]});
    assert_eq!(
        app.post("/api/v1/tenants/_platform/users", ADMIN, body)
            .await
            .0,
        201
    );
    let op = As::User("op", ADMIN_PASSWORD);
    let (s, body) = app
        .put(
            "/api/v1/tenants/_platform/users/op/roles",
            op,
            json!({"roles": ["superadmin"]}),
        )
        .await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app
        .put(
            "/api/v1/tenants/_platform/groups/g",
            op,
            json!({"roles": ["superadmin"], "users": ["op"]}),
        )
        .await;
    assert_error(s, &body, 403, "forbidden");
    let (s, _) = app.get("/api/v1/tenants", op).await;
    assert_eq!(s, 403, "still not a superadmin");
}

/// An admin of `_platform` that is no superadmin cannot strip, delete or
/// revoke what holds a built-in role (issue #13's probe); a superadmin can,
/// but never the last superadmin user.
async fn platform_admins_cannot_touch_superadmins_or_verifier_keys(app: TestApp) {
    let role = json!({"privileges": [{"privilege": "admin"}]});
    app.put("/api/v1/tenants/_platform/roles/ops", ADMIN, role)
        .await;
    let body = json!({"username": "op", "password": ADMIN_PASSWORD, "roles": ["ops"]});
    assert_eq!(
        app.post("/api/v1/tenants/_platform/users", ADMIN, body)
            .await
            .0,
        201
    );
    let body = json!({"name": "ingestors", "roles": ["verifier"]});
    let (s, key) = app
        .post("/api/v1/tenants/_platform/apikeys", ADMIN, body)
        .await;
    assert_eq!(s, 201, "{key}");
    let key_path = format!(
        "/api/v1/tenants/_platform/apikeys/{}",
        key["keyId"].as_str().unwrap()
    );
    let op = As::User("op", ADMIN_PASSWORD);

    let (s, body) = app
        .put(
            "/api/v1/tenants/_platform/users/admin/roles",
            op,
            json!({"roles": ["ops"]}),
        )
        .await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app
        .delete("/api/v1/tenants/_platform/users/admin", op)
        .await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app.delete(&key_path, op).await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app.post(&format!("{key_path}/rotate"), op, json!({})).await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app.get(&key_path, ADMIN).await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("active")),
        "{body}"
    );

    // The superadmin may revoke the verifier key, but not remove itself
    // while it is the only superadmin user.
    assert_eq!(app.delete(&key_path, ADMIN).await.0, 202);
    let (s, body) = app
        .delete("/api/v1/tenants/_platform/users/admin", ADMIN)
        .await;
    assert_error(s, &body, 409, "invalid_state");
    let (s, body) = app
        .put(
            "/api/v1/tenants/_platform/users/admin/roles",
            ADMIN,
            json!({"roles": ["ops"]}),
        )
        .await;
    assert_error(s, &body, 409, "invalid_state");
    let (s, _) = app.get("/api/v1/tenants", ADMIN).await;
    assert_eq!(s, 200, "still a superadmin");
}

/// Lists in a body are capped (issue #13's probe: ~11,500 role names in
/// one request held SQLite's write lock for seconds): past the cap a 400
/// names the field and nothing is written; at the cap the request works.
async fn oversized_lists_are_400_naming_the_field(app: TestApp) {
    let admin = app.tenant_with_admin("acme").await;
    let admin = As::User(&admin, ADMIN_PASSWORD);
    let names = |n: usize, prefix: &str| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    let privileges: Vec<Value> = (0..65).map(|_| json!({"privilege": "reader"})).collect();
    let cases = [
        (
            "/api/v1/tenants/acme/roles/big",
            json!({"privileges": privileges}),
            "privileges",
        ),
        (
            "/api/v1/tenants/acme/groups/big",
            json!({"roles": names(65, "r")}),
            "roles",
        ),
        (
            "/api/v1/tenants/acme/groups/big",
            json!({"users": names(1001, "u")}),
            "users",
        ),
        (
            "/api/v1/tenants/acme/groups/big",
            json!({"apiKeys": names(1001, "k")}),
            "apiKeys",
        ),
        (
            "/api/v1/tenants/acme/users/nobody/roles",
            json!({"roles": names(65, "r")}),
            "roles",
        ),
    ];
    for (path, body, field) in cases {
        let (s, answer) = app.put(path, admin, body).await;
        let err = assert_error(s, &answer, 400, "invalid_request");
        assert_eq!(err["details"]["field"], field, "{path}: {answer}");
    }
    let body = json!({"name": "k", "roles": names(65, "r")});
    let (s, answer) = app.post("/api/v1/tenants/acme/apikeys", admin, body).await;
    assert_error(s, &answer, 400, "invalid_request");
    let (s, answer) = app.get("/api/v1/tenants/acme/groups/big", admin).await;
    assert_error(s, &answer, 404, "group_not_found");

    // At the cap: 64 roles checked in one statement, all named as unknown.
    let (s, answer) = app
        .put(
            "/api/v1/tenants/acme/groups/big",
            admin,
            json!({"roles": names(64, "r")}),
        )
        .await;
    let err = assert_error(s, &answer, 422, "unknown_roles");
    assert_eq!(err["details"]["roles"].as_array().unwrap().len(), 64);
    let (s, answer) = app
        .put(
            "/api/v1/tenants/acme/groups/big",
            admin,
            json!({"users": names(1000, "u")}),
        )
        .await;
    let err = assert_error(s, &answer, 400, "invalid_request");
    assert_eq!(err["details"]["users"].as_array().unwrap().len(), 1000);
}

// ------------------------------------------------------------- groups

async fn group_admin_gains_and_loses_access_on_the_next_request(app: TestApp) {
    app.tenant_with_admin("acme").await;
    let admin = As::User("acme-admin", ADMIN_PASSWORD);
    let body = json!({"username": "carol", "password": ADMIN_PASSWORD});
    assert_eq!(
        app.post("/api/v1/tenants/acme/users", admin, body).await.0,
        201
    );
    let carol = As::User("carol", ADMIN_PASSWORD);
    assert_eq!(app.get("/api/v1/tenants/acme/roles", carol).await.0, 403);

    let (s, group) = app
        .put(
            "/api/v1/tenants/acme/groups/ops",
            admin,
            json!({"roles": ["admins"], "users": ["carol"]}),
        )
        .await;
    assert_eq!(s, 201, "{group}");
    assert_eq!(
        (group["users"].clone(), group["apiKeys"].clone()),
        (json!(["carol"]), json!([]))
    );
    assert_eq!(
        app.get("/api/v1/tenants/acme/roles", carol).await.0,
        200,
        "granted at once"
    );

    let (s, perms) = app
        .get("/api/v1/tenants/acme/users/carol/permissions", admin)
        .await;
    assert_eq!(s, 200);
    assert_eq!(perms["roles"][0]["name"], "admins");
    assert_eq!(
        perms["roles"][0]["grantedBy"],
        json!([{"source": "group", "group": "ops"}])
    );
    assert_eq!(
        perms["privileges"],
        json!([{"privilege": "admin", "resource": null}])
    );

    let (s, _) = app
        .put(
            "/api/v1/tenants/acme/groups/ops",
            admin,
            json!({"roles": ["admins"]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = app.get("/api/v1/tenants/acme/roles", carol).await;
    assert_error(s, &body, 403, "forbidden");

    let (s, body) = app.get("/api/v1/tenants/acme/groups", admin).await;
    assert_eq!((s, body["items"].as_array().unwrap().len()), (200, 1));
    let (s, body) = app
        .put(
            "/api/v1/tenants/acme/groups/x",
            admin,
            json!({"users": ["nobody"]}),
        )
        .await;
    let err = assert_error(s, &body, 400, "invalid_request");
    assert_eq!(err["details"]["users"], json!(["nobody"]));
    let (s, body) = app
        .put(
            "/api/v1/tenants/acme/groups/x",
            admin,
            json!({"roles": ["ghost"]}),
        )
        .await;
    assert_error(s, &body, 422, "unknown_roles");
    let (s, _) = app.delete("/api/v1/tenants/acme/groups/ops", admin).await;
    assert_eq!(s, 204);
    let (s, body) = app.get("/api/v1/tenants/acme/groups/ops", admin).await;
    assert_error(s, &body, 404, "group_not_found");
    let (s, body) = app
        .get("/api/v1/tenants/acme/users/nobody/permissions", admin)
        .await;
    assert_error(s, &body, 404, "user_not_found");
}

// ------------------------------------------------------------- bad input

async fn bad_input_is_4xx_and_writes_nothing(app: TestApp) {
    app.tenant_with_admin("acme").await;
    let admin = As::User("acme-admin", ADMIN_PASSWORD);
    let url = "/api/v1/tenants/acme/users";
    let send_raw = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut req = app.request(Method::POST, url, admin).body(body);
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        async move { read(req.send().await.unwrap()).await }
    };
    let (s, body) = send_raw(Some("application/json"), b"{\"username\": ".to_vec()).await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "body"
    );
    let (s, body) = send_raw(
        Some("application/json"),
        br#"{"username": 5, "password": "x"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "username"
    );
    let (s, body) = send_raw(
        Some("application/json"),
        br#"{"username": "u", "password": "correct horse battery", "admin": true}"#.to_vec(),
    )
    .await;
    assert_eq!(
        assert_error(s, &body, 400, "invalid_request")["details"]["field"],
        "admin"
    );
    let (s, body) = send_raw(Some("text/plain"), br#"{"username": "u"}"#.to_vec()).await;
    assert_error(s, &body, 415, "unsupported_media_type");
    let (s, body) = send_raw(None, br#"{"username": "u"}"#.to_vec()).await;
    assert_error(s, &body, 415, "unsupported_media_type");
    let mut huge = br#"{"username": "u", "password": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    let (s, body) = send_raw(Some("application/json"), huge).await;
    assert_error(s, &body, 413, "payload_too_large");

    // Names at their limit pass; one past it, or odd bytes, are 400.
    let at_limit = "u".repeat(64);
    let (s, _) = app
        .post(
            url,
            admin,
            json!({"username": at_limit, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(s, 201);
    for bad in [
        "u".repeat(65),
        "a b".into(),
        "a/b".into(),
        "\0".into(),
        "".into(),
    ] {
        let (s, body) = app
            .post(
                url,
                admin,
                json!({"username": bad, "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(
            assert_error(s, &body, 400, "invalid_request")["details"]["field"],
            "username"
        );
    }
    for path in [
        "/api/v1/tenants/acme/roles/%00",
        "/api/v1/tenants/acme/roles/a%20b",
        &format!("/api/v1/tenants/acme/roles/{}", "r".repeat(65)),
        "/api/v1/tenants/ACME/roles",
    ] {
        let (s, body) = app.get(path, admin).await;
        assert!(s == 400 || s == 403, "{path}: {s} {body}");
        assert!(body["error"]["code"].is_string());
    }
    let (s, body) = app.get("/api/v1/tenants/acme/roles/%00", ADMIN).await;
    assert_error(s, &body, 400, "invalid_request");
    let (s, body) = app.get(url, admin).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the admin and the one valid user: {names:?}"
    );
}

async fn unknown_routes_and_methods(app: TestApp) {
    let (s, body) = app.get("/api/v1/nope", ADMIN).await;
    assert_error(s, &body, 404, "not_found");
    let (s, body) = app
        .call(Method::PATCH, "/api/v1/tenants", ADMIN, None)
        .await;
    assert_error(s, &body, 405, "method_not_allowed");
}

// ------------------------------------------------------------- operability

async fn health_ready_metrics(app: TestApp) {
    assert_eq!(app.get("/healthz", As::Nobody).await.0, 200);
    assert_eq!(app.get("/readyz", As::Nobody).await.0, 200);
    app.get("/api/v1/tenants", ADMIN).await;
    // Made-up methods, no credentials: one `other` label, whatever they are.
    for i in 0..20 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        app.call(method, "/api/v1/tenants", As::Nobody, None).await;
    }
    let text = app.metrics_text().await;
    assert!(text.contains("keyward_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v1/tenants\""), "{text}");
    assert!(!text.contains("MADEUP"), "a client's method became a label");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("keyward_http_request_duration_seconds_bucket"));
    assert!(text.contains("keyward_argon2_duration_seconds"));
    let (s, doc) = app.get("/api/v1/openapi.json", As::Nobody).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/tenants/{t}/roles/{name}"]["put"].is_object());
}

// ------------------------------------------------------------- ingestors

async fn ingestors_are_listed_for_superadmins(app: TestApp) {
    let store = app.store();
    let now = chrono::Utc::now();
    store
        .ingestor_heartbeat("fresh", "keyward.ingestor.fresh", now)
        .await
        .unwrap();
    store
        .ingestor_heartbeat(
            "stale",
            "keyward.ingestor.stale",
            now - chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    let (s, body) = app.get("/api/v1/ingestors", ADMIN).await;
    assert_eq!(s, 200);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let fresh = items.iter().find(|i| i["id"] == "fresh").unwrap();
    let stale = items.iter().find(|i| i["id"] == "stale").unwrap();
    assert_eq!(fresh["live"], true);
    assert_eq!(stale["live"], false);
    assert_eq!(fresh["queue"], "keyward.ingestor.fresh");
    assert_eq!(fresh["unacked"], 0);
    assert!(fresh["lastHeartbeatAt"].is_string() && fresh["firstSeenAt"].is_string());

    let user = app.tenant_with_admin("acme").await;
    let (s, body) = app
        .get("/api/v1/ingestors", As::User(&user, ADMIN_PASSWORD))
        .await;
    assert_error(s, &body, 403, "forbidden");
    let (s, body) = app.get("/api/v1/ingestors", As::Nobody).await;
    assert_error(s, &body, 401, "unauthenticated");
}

on_both_stores!(
    ingestors_are_listed_for_superadmins,
    missing_or_wrong_credentials_are_401,
    request_ids_are_echoed_or_made,
    tenants_are_for_superadmins,
    roles_lifecycle,
    builtin_roles_cannot_change,
    tenant_isolation,
    users_lifecycle,
    platform_admins_cannot_mint_superadmins,
    platform_admins_cannot_touch_superadmins_or_verifier_keys,
    group_admin_gains_and_loses_access_on_the_next_request,
    bad_input_is_4xx_and_writes_nothing,
    oversized_lists_are_400_naming_the_field,
    unknown_routes_and_methods,
    health_ready_metrics,
    api_keys_authenticate_with_their_effective_roles,
    database_down_is_503_and_recovers,
);

// ------------------------------------------------------------- bearer and outages

/// Makes a key straight in the store (the key endpoints are step 3).
async fn make_key(
    app: &TestApp,
    tenant: &str,
    roles: &[&str],
    expires_in_secs: Option<i64>,
) -> ApiKeyToken {
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let now = chrono::Utc::now();
    let key = NewApiKey {
        key_id,
        tenant_id: TenantId::parse(tenant).unwrap(),
        name: KeyName::parse(&format!("k-{key_id}")).unwrap(),
        roles: roles.iter().map(|r| RoleName::parse(r).unwrap()).collect(),
        start: token.start(),
        secret_hash: keyward_core::digest::KeyDigest::of(token.expose_secret()).encode(),
        created_by: "test".into(),
        created_at: now,
        expires_at: expires_in_secs.map(|s| now + chrono::Duration::seconds(s)),
    };
    app.store()
        .create_key(&key, &keyward_core::testing::change())
        .await
        .unwrap();
    token
}

async fn api_keys_authenticate_with_their_effective_roles(app: TestApp) {
    app.tenant_with_admin("acme").await;
    let token = make_key(&app, "acme", &["admins"], None).await;
    let who = As::Key(token.expose_secret());
    assert_eq!(app.get("/api/v1/tenants/acme/roles", who).await.0, 200);
    let (s, body) = app.get("/api/v1/tenants", who).await;
    assert_error(s, &body, 403, "forbidden");

    // Same key id, another secret: a valid shape, a wrong secret.
    let forged = ApiKeyToken::generate(&KeyPrefix::default(), token.key_id()).unwrap();
    let (s, body) = app
        .get(
            "/api/v1/tenants/acme/roles",
            As::Key(forged.expose_secret()),
        )
        .await;
    assert_error(s, &body, 401, "unauthenticated");

    // A key without roles authenticates but may not act.
    let plain = make_key(&app, "acme", &[], None).await;
    let (s, body) = app
        .get("/api/v1/tenants/acme/roles", As::Key(plain.expose_secret()))
        .await;
    assert_error(s, &body, 403, "forbidden");

    let expired = make_key(&app, "acme", &["admins"], Some(-1)).await;
    let (s, body) = app
        .get(
            "/api/v1/tenants/acme/roles",
            As::Key(expired.expose_secret()),
        )
        .await;
    let err = assert_error(s, &body, 401, "unauthenticated");
    assert!(err["message"].as_str().unwrap().contains("expired"));

    let acme = TenantId::parse("acme").unwrap();
    app.store()
        .revoke_key(&acme, token.key_id(), &keyward_core::testing::change())
        .await
        .unwrap();
    let (s, body) = app.get("/api/v1/tenants/acme/roles", who).await;
    let err = assert_error(s, &body, 401, "unauthenticated");
    assert!(err["message"].as_str().unwrap().contains("revoked"));
    assert!(!body.to_string().contains(token.expose_secret()));
}

async fn database_down_is_503_and_recovers(app: TestApp) {
    if !app.db.set_reachable(false).await {
        return; // SQLite: an embedded file has no server to lose.
    }
    let res = app
        .request(Method::GET, "/api/v1/tenants", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (s, body) = read(res).await;
    let err = assert_error(s, &body, 503, "unavailable");
    assert_eq!(err["message"], "The service is unavailable; retry later.");
    assert_eq!(app.get("/readyz", As::Nobody).await.0, 503);
    app.db.set_reachable(true).await;
    assert_eq!(
        app.get("/api/v1/tenants", ADMIN).await.0,
        200,
        "recovers without restart"
    );
    assert_eq!(app.get("/readyz", As::Nobody).await.0, 200);
}
