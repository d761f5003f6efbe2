//! The authorization matrix: every endpoint of the OpenAPI document × every
//! kind of caller → what the gate answers, as one table, on both stores.
//! An endpoint in the document without a row fails the test, so a new
//! route cannot ship without deciding who may call it.
//!
//! "Passes" means the request got past authentication and authorization:
//! its answer is neither 401 nor 403 (nor a 5xx). What it then does (201,
//! 404 for a target an earlier row deleted, 409…) is the business of the
//! endpoint's own tests; the matrix is about who gets through the gate.

use std::collections::BTreeSet;
use std::time::Duration;

use keyward_core::testing::TestDatabase;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ACME_ADMIN, ADMIN, ADMIN_PASSWORD, As, TestApp, test_settings};

/// The callers, in the order of each row's answers.
const CALLERS: [&str; 12] = [
    "superadmin",
    "admin of T",
    "admin of another tenant",
    "group-derived admin of T",
    "non-admin user of T",
    "admin key of T",
    "non-admin key of T",
    "verifier key",
    "revoked key",
    "expired key",
    "wrong password",
    "no credentials",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Got through: not 401, not 403, not 5xx.
    P,
    /// 401 unauthenticated.
    U,
    /// 403 forbidden.
    F,
    /// 404: the resource is not shown to callers without permission on its
    /// tenant (events), the same as one that does not exist.
    H,
}
use Gate::{F, H, P, U};

// Column shapes shared by many rows.
/// Open to all: no credentials read.
const OPEN: [Gate; 12] = [P, P, P, P, P, P, P, P, P, P, P, P];
/// Superadmins only.
const SUPER: [Gate; 12] = [P, F, F, F, F, F, F, F, U, U, U, U];
/// Permission on tenant T: superadmin, or `admin` among the caller's
/// effective privileges in T (direct, group, or a key's roles).
const TENANT: [Gate; 12] = [P, P, F, P, F, P, F, F, U, U, U, U];
/// `/api/v1/apikeys…`: T is the caller's own tenant, so every admin
/// passes (the superadmin and the verifier key act on `_platform`, where
/// only the superadmin is an admin).
const OWN: [Gate; 12] = [P, P, P, P, F, P, F, F, U, U, U, U];
/// An event of T: its tenant's admins see it, anyone else gets 404.
const EVENT: [Gate; 12] = [P, P, H, P, H, P, H, H, U, U, U, U];
/// `POST /api/v1/verify`: superadmins and verifiers.
const VERIFY: [Gate; 12] = [P, F, F, F, F, F, F, P, U, U, U, U];

/// One row: method, path template, body, expected gate per caller.
type Row = (&'static str, &'static str, Option<Value>, [Gate; 12]);

fn rows() -> Vec<Row> {
    let role = json!({"privileges": [{"privilege": "reader"}]});
    let group = json!({"roles": ["readers"]});
    let user = json!({"username": "matrix-user", "password": ADMIN_PASSWORD});
    let key = json!({"name": "matrix-key"});
    let secret = json!({"apiKey": "kw_01ARZ3NDEKTSV4RRFFQ69G5FAV_invalid"});
    vec![
        ("GET", "/healthz", None, OPEN),
        ("GET", "/readyz", None, OPEN),
        ("GET", "/metrics", None, OPEN),
        ("GET", "/api/v1/openapi.json", None, OPEN),
        ("GET", "/docs", None, OPEN),
        ("GET", "/api/v1/tenants", None, SUPER),
        (
            "POST",
            "/api/v1/tenants",
            Some(json!({"id": "matrix-t"})),
            SUPER,
        ),
        ("GET", "/api/v1/ingestors", None, SUPER),
        ("GET", "/api/v1/audit", None, SUPER),
        ("GET", "/api/v1/tenants/{t}/roles", None, TENANT),
        (
            "PUT",
            "/api/v1/tenants/{t}/roles/{name}",
            Some(role),
            TENANT,
        ),
        ("GET", "/api/v1/tenants/{t}/roles/{name}", None, TENANT),
        ("DELETE", "/api/v1/tenants/{t}/roles/{name}", None, TENANT),
        ("GET", "/api/v1/tenants/{t}/users", None, TENANT),
        ("POST", "/api/v1/tenants/{t}/users", Some(user), TENANT),
        ("GET", "/api/v1/tenants/{t}/users/{u}", None, TENANT),
        (
            "GET",
            "/api/v1/tenants/{t}/users/{u}/permissions",
            None,
            TENANT,
        ),
        (
            "PUT",
            "/api/v1/tenants/{t}/users/{u}/roles",
            Some(json!({"roles": []})),
            TENANT,
        ),
        ("DELETE", "/api/v1/tenants/{t}/users/{u}", None, TENANT),
        ("GET", "/api/v1/tenants/{t}/groups", None, TENANT),
        (
            "PUT",
            "/api/v1/tenants/{t}/groups/{name}",
            Some(group),
            TENANT,
        ),
        ("GET", "/api/v1/tenants/{t}/groups/{name}", None, TENANT),
        ("DELETE", "/api/v1/tenants/{t}/groups/{name}", None, TENANT),
        ("GET", "/api/v1/tenants/{t}/apikeys", None, TENANT),
        (
            "POST",
            "/api/v1/tenants/{t}/apikeys",
            Some(key.clone()),
            TENANT,
        ),
        (
            "POST",
            "/api/v1/tenants/{t}/apikeys/validate",
            Some(secret.clone()),
            TENANT,
        ),
        ("GET", "/api/v1/tenants/{t}/apikeys/{keyId}", None, TENANT),
        (
            "PATCH",
            "/api/v1/tenants/{t}/apikeys/{keyId}",
            Some(json!({"name": "renamed"})),
            TENANT,
        ),
        (
            "POST",
            "/api/v1/tenants/{t}/apikeys/{keyId}/rotate",
            Some(json!({})),
            TENANT,
        ),
        (
            "DELETE",
            "/api/v1/tenants/{t}/apikeys/{keyId}",
            None,
            TENANT,
        ),
        (
            "POST",
            "/api/v1/tenants/{t}/apikeys/{keyId}/revocation/retry",
            None,
            TENANT,
        ),
        ("GET", "/api/v1/tenants/{t}/audit", None, TENANT),
        ("GET", "/api/v1/apikeys", None, OWN),
        ("POST", "/api/v1/apikeys", Some(key), OWN),
        ("POST", "/api/v1/apikeys/validate", Some(secret), OWN),
        ("GET", "/api/v1/apikeys/{keyId}", None, OWN),
        (
            "PATCH",
            "/api/v1/apikeys/{keyId}",
            Some(json!({"name": "renamed-2"})),
            OWN,
        ),
        (
            "POST",
            "/api/v1/apikeys/{keyId}/rotate",
            Some(json!({})),
            OWN,
        ),
        ("DELETE", "/api/v1/apikeys/{keyId}", None, OWN),
        (
            "POST",
            "/api/v1/apikeys/{keyId}/revocation/retry",
            None,
            OWN,
        ),
        ("GET", "/api/v1/events/{eventId}", None, EVENT),
        (
            "POST",
            "/api/v1/verify",
            Some(json!({"apiKey": "kw_x_y"})),
            VERIFY,
        ),
    ]
}

/// Everything the callers and the rows' paths need.
struct World {
    callers: Vec<As<'static>>,
    /// `{keyId}`: a key of T that rows may update, rotate and revoke.
    target_key: String,
    /// `{eventId}`: an event of T.
    event: String,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

async fn create_key(app: &TestApp, tenant: &str, who: As<'_>, body: Value) -> Value {
    let (s, key) = app
        .post(&format!("/api/v1/tenants/{tenant}/apikeys"), who, body)
        .await;
    assert_eq!(s, 201, "{key}");
    key
}

async fn setup(app: &TestApp) -> World {
    app.tenant_with_admin("acme").await;
    app.tenant_with_admin("globex").await;
    let role = json!({"privileges": [{"privilege": "reader"}]});
    assert_eq!(
        app.put("/api/v1/tenants/acme/roles/readers", ADMIN, role)
            .await
            .0,
        201
    );
    for (name, roles) in [
        ("acme-grouped", json!([])),
        ("acme-reader", json!(["readers"])),
        ("victim", json!([])),
    ] {
        let body = json!({"username": name, "password": ADMIN_PASSWORD, "roles": roles});
        assert_eq!(
            app.post("/api/v1/tenants/acme/users", ADMIN, body).await.0,
            201
        );
    }
    let group = json!({"roles": ["admins"], "users": ["acme-grouped"]});
    assert_eq!(
        app.put("/api/v1/tenants/acme/groups/admin-group", ADMIN, group)
            .await
            .0,
        201
    );
    // Expires in 2 s: by the time the rows run it has.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let expiring = create_key(
        app,
        "acme",
        ACME_ADMIN,
        json!({"name": "expiring", "roles": ["admins"], "expiresAt": soon}),
    )
    .await;
    let started = std::time::Instant::now();
    let admin_key = create_key(
        app,
        "acme",
        ACME_ADMIN,
        json!({"name": "admin-key", "roles": ["admins"]}),
    )
    .await;
    let reader_key = create_key(
        app,
        "acme",
        ACME_ADMIN,
        json!({"name": "reader-key", "roles": ["readers"]}),
    )
    .await;
    let verifier_key = create_key(
        app,
        "_platform",
        ADMIN,
        json!({"name": "verifier", "roles": ["verifier"]}),
    )
    .await;
    let revoked = create_key(
        app,
        "acme",
        ACME_ADMIN,
        json!({"name": "revoked", "roles": ["admins"]}),
    )
    .await;
    let path = format!(
        "/api/v1/tenants/acme/apikeys/{}",
        revoked["keyId"].as_str().unwrap()
    );
    let res = app
        .request(Method::DELETE, &path, ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let event = res.headers()["keyward-event-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let target = create_key(app, "acme", ACME_ADMIN, json!({"name": "target"})).await;
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(started.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let secret = |k: &Value| -> &'static str { leak(k["secret"].as_str().unwrap().to_owned()) };
    World {
        callers: vec![
            ADMIN,
            ACME_ADMIN,
            As::User("globex-admin", ADMIN_PASSWORD),
            As::User("acme-grouped", ADMIN_PASSWORD),
            As::User("acme-reader", ADMIN_PASSWORD),
            As::Key(secret(&admin_key)),
            As::Key(secret(&reader_key)),
            As::Key(secret(&verifier_key)),
            As::Key(secret(&revoked)),
            As::Key(secret(&expiring)),
            As::User("acme-admin", "not the password at all"),
            As::Nobody,
        ],
        target_key: target["keyId"].as_str().unwrap().to_owned(),
        event,
    }
}

fn expand(template: &str, world: &World) -> String {
    let name = if template.contains("/groups/") {
        "matrix-group"
    } else {
        "matrix-role"
    };
    template
        .replace("{t}", "acme")
        .replace("{u}", "victim")
        .replace("{name}", name)
        .replace("{keyId}", &world.target_key)
        .replace("{eventId}", &world.event)
}

/// Every operation of the app's OpenAPI document, as `METHOD path`.
async fn documented(app: &TestApp) -> BTreeSet<String> {
    let (s, doc) = app.get("/api/v1/openapi.json", As::Nobody).await;
    assert_eq!(s, 200);
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    ops
}

async fn run(db: TestDatabase) {
    let settings = keyward_api::settings::Settings {
        // The wrong-password caller fails once per row: the matrix is
        // about the gate, not the failed-proof limit (tested on its own).
        failed_logins_per_username: 10_000,
        failed_logins_per_client: 10_000,
        ..test_settings(&db.url)
    };
    let app = TestApp::start_with(db, settings).await;
    let rows = rows();
    let in_table: BTreeSet<String> = rows.iter().map(|(m, p, _, _)| format!("{m} {p}")).collect();
    assert_eq!(in_table.len(), rows.len(), "a row is repeated");
    let documented = documented(&app).await;
    let missing: Vec<_> = documented.difference(&in_table).collect();
    let stale: Vec<_> = in_table.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "endpoints without a row in the matrix: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows for endpoints not in the document: {stale:?}"
    );

    let world = setup(&app).await;
    let mut wrong = Vec::new();
    for (method, template, body, gates) in &rows {
        let path = expand(template, &world);
        for ((caller, who), gate) in CALLERS.iter().zip(&world.callers).zip(gates) {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, answer) = app.call(method.clone(), &path, *who, body.clone()).await;
            let ok = match gate {
                P => status != 401 && status != 403 && status < 500,
                U => status == 401 && answer["error"]["code"] == "unauthenticated",
                F => status == 403 && answer["error"]["code"] == "forbidden",
                H => status == 404,
            };
            if !ok {
                wrong.push(format!(
                    "{method} {template} as {caller}: want {gate:?}, got {status} {answer}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[actix_web::test]
async fn sqlite() {
    run(TestDatabase::sqlite().await).await;
}

#[actix_web::test]
async fn postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    run(db).await;
}
