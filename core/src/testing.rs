//! Fresh databases for tests (feature `testing`).
//!
//! Every test gets its own: a SQLite file in a temp directory, or a new
//! PostgreSQL database on the server `KEYWARD_TEST_DATABASE_URL` names
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped again
//! when the handle goes. A missing PostgreSQL fails the test when
//! `KEYWARD_REQUIRE_SERVICES` is set (CI), and skips it loudly otherwise.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::config::DatabaseUrl;
use crate::store::{self, Store};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Whether tests must fail, not skip, when a service is missing.
pub fn services_required() -> bool {
    std::env::var("KEYWARD_REQUIRE_SERVICES").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Fails (CI) or skips loudly (a developer's machine) for a missing service.
/// Returns `None` to make the caller skip.
pub fn missing_service<T>(what: &str, why: &dyn std::fmt::Display) -> Option<T> {
    if services_required() {
        panic!("{what} is required (KEYWARD_REQUIRE_SERVICES is set) but unreachable: {why}");
    }
    eprintln!(
        "\n!!!!! SKIPPING: {what} unreachable ({why}); set KEYWARD_REQUIRE_SERVICES=1 to fail instead\n"
    );
    None
}

/// A database that lives as long as this value.
pub struct TestDatabase {
    pub url: DatabaseUrl,
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A migrated store on a new SQLite file.
    pub async fn sqlite() -> Self {
        let db = Self::sqlite_unmigrated().await;
        db.store.migrate().await.expect("migrate sqlite");
        db
    }

    /// A new, empty SQLite file (for migration tests).
    pub async fn sqlite_unmigrated() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keyward.db");
        let url: DatabaseUrl = format!("sqlite://{}?mode=rwc", path.display())
            .parse()
            .expect("sqlite url");
        let store = store::connect(&url).await.expect("open sqlite");
        Self {
            url,
            store,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A migrated store on a new PostgreSQL database, or `None` (skip).
    pub async fn postgres() -> Option<Self> {
        let db = Self::postgres_unmigrated().await?;
        db.store.migrate().await.expect("migrate postgres");
        Some(db)
    }

    /// A new, empty PostgreSQL database (for migration tests), or `None`.
    pub async fn postgres_unmigrated() -> Option<Self> {
        let admin_url = std::env::var("KEYWARD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => return missing_service("PostgreSQL", &e),
        };
        let name = format!(
            "kw_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("create db");
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("admin url");
        url.set_path(&format!("/{name}"));
        let url: DatabaseUrl = url.as_str().parse().expect("postgres url");
        let store = store::connect(&url).await.expect("open postgres");
        Some(Self {
            url,
            store,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// PostgreSQL only: refuse (or allow again) connections to this
    /// database and cut the open ones, as if the server had gone away.
    /// Returns `false` on SQLite, which has no server to lose.
    pub async fn set_reachable(&self, reachable: bool) -> bool {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return false;
        };
        let mut admin = PgConnection::connect(admin_url)
            .await
            .expect("admin connection");
        let allow = format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {reachable}");
        sqlx::query(sqlx::AssertSqlSafe(allow))
            .execute(&mut admin)
            .await
            .expect("alter database");
        if !reachable {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(name)
            .execute(&mut admin)
            .await
            .expect("terminate backends");
        }
        true
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs outside any runtime we may block: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

/// A change by `tester` on request `test-request`, now, with a new event id.
pub fn change() -> crate::store::Change {
    crate::store::Change::new("tester", "test-request", chrono::Utc::now())
}

/// Creates `tenant` unless it exists.
pub async fn ensure_tenant(store: &dyn Store, tenant: &str) -> crate::ids::TenantId {
    let tenant = crate::ids::TenantId::parse(tenant).expect("tenant id");
    if !store.tenant_exists(&tenant).await.expect("tenant lookup") {
        store
            .create_tenant(&tenant, None, &change())
            .await
            .expect("create tenant");
    }
    tenant
}

/// A new key named `name` holding `roles`, created by `admin`, whose hash
/// is a placeholder: for store and outbox tests, never for verification.
pub fn placeholder_new_key(
    tenant: &crate::ids::TenantId,
    name: &str,
    roles: &[crate::ids::RoleName],
) -> crate::store::NewApiKey {
    let key_id = crate::ids::KeyId::new();
    crate::store::NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name: crate::ids::KeyName::parse(name).expect("key name"),
        roles: roles.to_vec(),
        start: format!("kw_{key_id}_abcd"),
        secret_hash: crate::digest::KeyDigest::of(&format!("placeholder-{key_id}")).encode(),
        created_by: "admin".into(),
        created_at: chrono::Utc::now(),
        expires_at: None,
    }
}

/// An active placeholder key without roles, stored; its id.
pub async fn placeholder_key(
    store: &dyn Store,
    tenant: &crate::ids::TenantId,
) -> crate::ids::KeyId {
    let key = placeholder_new_key(tenant, &format!("k-{}", ulid::Ulid::generate()), &[]);
    store.create_key(&key, &change()).await.expect("create key");
    key.key_id
}

/// Creates `tenant` (if new) and `n` placeholder keys in it, revokes each,
/// and returns each key with the event its revocation wrote, in outbox
/// order.
pub async fn revocations(
    store: &dyn Store,
    tenant: &str,
    n: usize,
) -> Vec<(crate::ids::KeyId, crate::ids::EventId)> {
    let tenant = ensure_tenant(store, tenant).await;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let key_id = placeholder_key(store, &tenant).await;
        let change = change();
        let event_id = change.event_id;
        store
            .revoke_key(&tenant, key_id, &change)
            .await
            .expect("revoke key");
        events.push((key_id, event_id));
    }
    events
}
