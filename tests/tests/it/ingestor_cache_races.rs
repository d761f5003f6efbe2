//! The library verifier's cache under change: its verify call is held at
//! the API (the API's fill gate, between its store read and its answer),
//! an event for the key arrives at the node, the call is released. The
//! answer fetched before the event must not be cached, and a revocation
//! must win over it. Run with the epoch check in `Verifier::store` removed
//! (or the tombstone check after the call), these tests fail.

use std::sync::Arc;

use keyward_api::settings::Settings;
use keyward_api::startup::Application;
use keyward_core::digest::KeyDigest;
use keyward_core::ids::{KeyId, KeyName, RoleName, TenantId};
use keyward_core::password::Argon2Settings;
use keyward_core::privilege::{Privilege, PrivilegeKind};
use keyward_core::store::{NewApiKey, Store};
use keyward_core::testing::TestDatabase;
use keyward_core::token::{ApiKeyToken, KeyPrefix};
use keyward_ingestor::client::{VERIFY_TIMEOUT, VerifyClient};
use keyward_ingestor::verifier::{Verdict, Verifier};

async fn key(store: &Arc<dyn Store>, tenant: &TenantId, role: &str) -> ApiKeyToken {
    let key_id = KeyId::new();
    let token = ApiKeyToken::generate(&KeyPrefix::default(), key_id).unwrap();
    let now = chrono::Utc::now();
    let new = NewApiKey {
        key_id,
        tenant_id: tenant.clone(),
        name: KeyName::parse(&format!("k-{key_id}")).unwrap(),
        roles: vec![RoleName::parse(role).unwrap()],
        start: token.start(),
        secret_hash: KeyDigest::of(token.expose_secret()).encode(),
        created_by: "test".into(),
        created_at: now,
        expires_at: None,
    };
    store
        .create_key(&new, &keyward_core::testing::change())
        .await
        .unwrap();
    token
}

/// The API in-process on SQLite, a trusted library verifier in front of
/// it whose own credential is already proven, and a fresh key.
async fn setup() -> (
    TestDatabase,
    Arc<keyward_api::fill_gate::FillGates>,
    Arc<Verifier>,
    ApiKeyToken,
) {
    let db = TestDatabase::sqlite().await;
    let store = db.store();
    let tenant = TenantId::parse("acme").unwrap();
    store
        .create_tenant(&tenant, None, &keyward_core::testing::change())
        .await
        .unwrap();
    let ingest = Privilege::new(PrivilegeKind::Ingestor, None);
    store
        .put_role(
            &tenant,
            &RoleName::parse("shippers").unwrap(),
            &[ingest],
            &keyward_core::testing::change(),
        )
        .await
        .unwrap();
    let verifier_key = key(&store, &TenantId::platform(), RoleName::VERIFIER).await;
    let app = Application::build(Settings {
        argon2: Argon2Settings::cheap(),
        ..Settings::local(db.url.clone())
    })
    .await
    .unwrap();
    let gates = app.fill_gates();
    let api = url::Url::parse(&format!("http://127.0.0.1:{}", app.port())).unwrap();
    tokio::spawn(app.run_until_stopped());
    let client = VerifyClient::new(&api, verifier_key, VERIFY_TIMEOUT).unwrap();
    let verifier = Arc::new(Verifier::new(client, 1000));
    verifier.set_trusted(true);
    // Prove the node's own credential at the API before any gate is armed.
    let warm = key(&store, &tenant, "shippers").await;
    assert!(matches!(
        verifier.verify(warm.expose_secret()).await,
        Verdict::Valid(_)
    ));
    let token = key(&store, &tenant, "shippers").await;
    (db, gates, verifier, token)
}

/// The node verifying `token` from a task of its own (to be held at the
/// API's gate).
fn verify_in_background(
    verifier: &Arc<Verifier>,
    token: &ApiKeyToken,
) -> tokio::task::JoinHandle<Verdict> {
    let (verifier, secret) = (Arc::clone(verifier), token.expose_secret().to_owned());
    tokio::spawn(async move { verifier.verify(&secret).await })
}

/// `key.updated` (an eviction) arrives while a verify call is in flight:
/// the call's answer is served but not cached.
#[actix_web::test]
async fn an_eviction_during_a_call_keeps_its_answer_out_of_the_cache() {
    let (_db, gates, verifier, token) = setup().await;
    let mut held = gates.key.hold_next();
    let call = verify_in_background(&verifier, &token);
    held.reached().await;
    verifier.evict(token.key_id());
    held.release();
    assert!(matches!(call.await.unwrap(), Verdict::Valid(_)));
    assert!(
        !verifier.cached(token.key_id()),
        "an answer older than the eviction was cached"
    );
    // Asked again, the node asks the API again, and caches that.
    let calls = verifier.api_calls();
    assert!(matches!(
        verifier.verify(token.expose_secret()).await,
        Verdict::Valid(_)
    ));
    assert_eq!(verifier.api_calls(), calls + 1);
    assert!(verifier.cached(token.key_id()));
}

/// `rbac.changed` for the key's tenant (a role or group changed) arrives
/// while a verify call is in flight: the answer, whose privileges may be
/// the old ones, is served but not cached; the tenant's answers cached
/// before the change go too.
#[actix_web::test]
async fn a_tenant_eviction_during_a_call_keeps_its_answer_out_of_the_cache() {
    let (db, gates, verifier, token) = setup().await;
    let tenant = TenantId::parse("acme").unwrap();
    let cached_before = key(&db.store(), &tenant, "shippers").await;
    assert!(matches!(
        verifier.verify(cached_before.expose_secret()).await,
        Verdict::Valid(_)
    ));
    assert!(verifier.cached(cached_before.key_id()));
    let mut held = gates.key.hold_next();
    let call = verify_in_background(&verifier, &token);
    held.reached().await;
    verifier.evict_tenant(&tenant);
    held.release();
    assert!(matches!(call.await.unwrap(), Verdict::Valid(_)));
    assert!(
        !verifier.cached(token.key_id()),
        "an answer older than the tenant's change was cached"
    );
    assert!(!verifier.cached(cached_before.key_id()));
}

/// A request that arrives after an eviction and joins a call begun before
/// it gets that call's answer, but must not cache it either.
#[actix_web::test]
async fn a_request_joining_a_call_from_before_an_eviction_caches_nothing() {
    let (_db, gates, verifier, token) = setup().await;
    let mut held = gates.key.hold_next();
    let first = verify_in_background(&verifier, &token);
    held.reached().await;
    verifier.evict(token.key_id());
    let joined = verify_in_background(&verifier, &token);
    // Give it time to join the call in the air (if it has not, it makes a
    // call of its own and the count below says so).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    held.release();
    assert!(matches!(first.await.unwrap(), Verdict::Valid(_)));
    assert!(matches!(joined.await.unwrap(), Verdict::Valid(_)));
    assert_eq!(
        verifier.api_calls(),
        2,
        "the warm-up call and one shared call"
    );
    assert!(
        !verifier.cached(token.key_id()),
        "an answer older than the eviction was cached"
    );
}

/// `key.revoked` arrives while a verify call is in flight: the request is
/// refused, and so is every later one, without the API.
#[actix_web::test]
async fn a_revocation_during_a_call_wins_over_its_answer() {
    let (_db, gates, verifier, token) = setup().await;
    let mut held = gates.key.hold_next();
    let call = verify_in_background(&verifier, &token);
    held.reached().await;
    verifier.bury(token.key_id());
    held.release();
    assert_eq!(call.await.unwrap(), Verdict::Invalid("revoked".into()));
    assert!(!verifier.cached(token.key_id()));
    let calls = verifier.api_calls();
    assert_eq!(
        verifier.verify(token.expose_secret()).await,
        Verdict::Invalid("revoked".into())
    );
    assert_eq!(verifier.api_calls(), calls, "refused from memory");
}
