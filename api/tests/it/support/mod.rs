//! Starts the real application in-process on port 0 with a fresh database.

use keyward_api::fill_gate::FillGates;
use keyward_api::generations::Generations;
use keyward_api::settings::Settings;
use keyward_api::startup::Application;
use keyward_core::ids::Password;
use keyward_core::password::Argon2Settings;
use keyward_core::store::Store;
use keyward_core::testing::TestDatabase;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::sync::Arc;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    /// Where this app's cache fills can be held (`FillGate::hold_next`).
    pub gates: Arc<FillGates>,
}

/// An app started in this process.
pub struct Spawned {
    pub base: String,
    pub gates: Arc<FillGates>,
    pub generations: Arc<Generations>,
}

/// Who a request is sent as.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Nobody,
    User(&'a str, &'a str),
    Key(&'a str),
}

pub const ADMIN: As<'static> = As::User("admin", ADMIN_PASSWORD);

impl TestApp {
    pub async fn start(db: TestDatabase) -> Self {
        let settings = test_settings(&db.url);
        Self::start_with(db, settings).await
    }

    /// The app with `settings` (see [`test_settings`]).
    pub async fn start_with(db: TestDatabase, settings: Settings) -> Self {
        let Spawned { base, gates, .. } = spawn_with(settings).await;
        Self {
            base,
            client: reqwest::Client::new(),
            db,
            gates,
        }
    }

    /// Another API process on the same database (a replica).
    pub async fn replica(&self) -> String {
        spawn_app(&self.db.url).await
    }

    /// A replica whose fills can be held.
    pub async fn replica_spawned(&self) -> Spawned {
        spawn_with(test_settings(&self.db.url)).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let res = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        res.text().await.unwrap()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.db.store()
    }

    pub fn request(&self, method: Method, path: &str, who: As<'_>) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match who {
            As::Nobody => req,
            As::User(u, p) => req.basic_auth(u, Some(p)),
            As::Key(k) => req.bearer_auth(k),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        who: As<'_>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(method, path, who);
        if let Some(body) = body {
            req = req.json(&body);
        }
        read(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, who: As<'_>) -> (u16, Value) {
        self.call(Method::GET, path, who, None).await
    }
    pub async fn post(&self, path: &str, who: As<'_>, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, who, Some(body)).await
    }
    pub async fn put(&self, path: &str, who: As<'_>, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, who, Some(body)).await
    }
    pub async fn delete(&self, path: &str, who: As<'_>) -> (u16, Value) {
        self.call(Method::DELETE, path, who, None).await
    }

    /// A tenant with an admin role and a user `{tenant}-admin` holding it.
    pub async fn tenant_with_admin(&self, tenant: &str) -> String {
        let (s, _) = self
            .post("/api/v1/tenants", ADMIN, serde_json::json!({"id": tenant}))
            .await;
        assert_eq!(s, 201);
        let role = serde_json::json!({"privileges": [{"privilege": "admin"}]});
        let (s, _) = self
            .put(
                &format!("/api/v1/tenants/{tenant}/roles/admins"),
                ADMIN,
                role,
            )
            .await;
        assert_eq!(s, 201);
        let user = format!("{tenant}-admin");
        let body =
            serde_json::json!({"username": user, "password": ADMIN_PASSWORD, "roles": ["admins"]});
        let (s, _) = self
            .post(&format!("/api/v1/tenants/{tenant}/users"), ADMIN, body)
            .await;
        assert_eq!(s, 201);
        user
    }
}

pub async fn read(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let media = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap_or_default();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    // Every JSON body says so (clients pick their parser by it).
    if json.is_object() || json.is_array() {
        assert!(
            media.starts_with("application/json"),
            "a JSON body with Content-Type {media:?}: {json}"
        );
    }
    (status, json)
}

/// Asserts the error shape and code; returns the error object.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) -> Value {
    assert_eq!(status, want_status, "body: {body}");
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object: {body}"))
        .clone();
    assert_eq!(err["code"], want_code, "body: {body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(err["requestId"].as_str().is_some_and(|m| !m.is_empty()));
    err
}

/// Runs each named test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $name() {
                    let db = keyward_core::testing::TestDatabase::sqlite().await;
                    super::$name($crate::support::TestApp::start(db).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[actix_web::test]
                async fn $name() {
                    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
                        return;
                    };
                    super::$name($crate::support::TestApp::start(db).await).await;
                }
            )*
        }
    };
}

/// What the tests start: defaults on `url`, the test admin password, and
/// cheap argon2 (these tests are about behaviour, not cost).
pub fn test_settings(url: &keyward_core::config::DatabaseUrl) -> Settings {
    Settings {
        admin_password: Some(Password::parse(ADMIN_PASSWORD).unwrap()),
        argon2: Argon2Settings::cheap(),
        ..Settings::local(url.clone())
    }
}

/// Starts the application on port 0 against `url`; returns its base URL.
pub async fn spawn_app(url: &keyward_core::config::DatabaseUrl) -> String {
    spawn_with(test_settings(url)).await.base
}

async fn spawn_with(settings: Settings) -> Spawned {
    let app = Application::build(settings).await.expect("app starts");
    let spawned = Spawned {
        base: format!("http://127.0.0.1:{}", app.port()),
        gates: app.fill_gates(),
        generations: app.generations(),
    };
    actix_web::rt::spawn(app.run_until_stopped());
    spawned
}

/// The sum of a metric's samples in Prometheus text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The admin of `acme` that `TestApp::tenant_with_admin("acme")` makes.
pub const ACME_ADMIN: As<'static> = As::User("acme-admin", ADMIN_PASSWORD);

/// A key of `acme` named `name` holding `shippers`, made by its admin; the
/// answer of the create (with its `secret`).
pub async fn create_shipper_key(app: &TestApp, name: &str) -> Value {
    let (s, body) = app
        .post(
            "/api/v1/tenants/acme/apikeys",
            ACME_ADMIN,
            serde_json::json!({"name": name, "roles": ["shippers"]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    body
}

/// A `verifier` user of `_platform`, for `POST /api/v1/verify`.
pub async fn verifier_user(app: &TestApp) -> As<'static> {
    let body = serde_json::json!(
        {"username": "ingest-node", "password": ADMIN_PASSWORD, "roles": ["verifier"]}
    );
    assert_eq!(
        app.post("/api/v1/tenants/_platform/users", ADMIN, body)
            .await
            .0,
        201
    );
    As::User("ingest-node", ADMIN_PASSWORD)
}

/// `POST {base}/api/v1/verify` of `secret` as `verifier_user`, on any
/// replica (`base`), from any task (`client` is cheap to clone).
pub async fn verify_as_verifier(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
) -> (u16, Value) {
    let res = client
        .post(format!("{base}/api/v1/verify"))
        .basic_auth("ingest-node", Some(ADMIN_PASSWORD))
        .json(&serde_json::json!({"apiKey": secret}))
        .send()
        .await
        .unwrap();
    read(res).await
}
