//! The store conformance suite: every test runs against SQLite and
//! PostgreSQL (a fresh database each), so both backends answer alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use keyward_core::ids::{EventId, GroupName, KeyId, KeyName, RoleName, TenantId, Username};
use keyward_core::privilege::{Privilege, PrivilegeKind, StreamPattern};
use keyward_core::rbac::{Grant, Permissions};
use keyward_core::store::audit::{Action, AuditQuery, DeniedAttempt, Outcome as AuditOutcome};
use keyward_core::store::*;

type S = Arc<dyn Store>;

// ---------------------------------------------------------------- helpers

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}
fn r(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}
fn u(s: &str) -> Username {
    Username::parse(s).unwrap()
}
fn g(s: &str) -> GroupName {
    GroupName::parse(s).unwrap()
}
fn change() -> Change {
    keyward_core::testing::change()
}

fn now() -> Timestamp {
    Utc::now()
}
fn at(secs: i64) -> Timestamp {
    Utc.timestamp_opt(1_900_000_000 + secs, 0).unwrap()
}
fn admin_priv() -> Vec<Privilege> {
    vec![Privilege::new(PrivilegeKind::Admin, None)]
}
fn ingest_priv(stream: &str) -> Vec<Privilege> {
    vec![Privilege::new(
        PrivilegeKind::Ingestor,
        Some(StreamPattern::parse(stream).unwrap()),
    )]
}

async fn tenant(s: &S, id: &str) -> TenantId {
    s.create_tenant(&t(id), None, &change()).await.unwrap();
    t(id)
}

async fn role(s: &S, tenant: &TenantId, name: &str, privileges: Vec<Privilege>) -> RoleName {
    s.put_role(tenant, &r(name), &privileges, &change())
        .await
        .unwrap();
    r(name)
}

fn new_key(tenant: &TenantId, name: &str, roles: &[RoleName]) -> NewApiKey {
    keyward_core::testing::placeholder_new_key(tenant, name, roles)
}

async fn key(s: &S, tenant: &TenantId, name: &str, roles: &[RoleName]) -> ApiKey {
    s.create_key(&new_key(tenant, name, roles), &change())
        .await
        .unwrap()
}

fn new_user(tenant: &TenantId, name: &str, roles: &[RoleName]) -> NewUser {
    NewUser {
        tenant_id: tenant.clone(),
        username: u(name),
        password_hash: "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        roles: roles.to_vec(),
        created_at: now(),
    }
}

async fn revoke(s: &S, tenant: &TenantId, key_id: KeyId) -> Revoked {
    let by_admin = Change::new("admin", "test-request", now());
    s.revoke_key(tenant, key_id, &by_admin).await.unwrap()
}

fn state(k: &ApiKey) -> EventState {
    k.revocation
        .as_ref()
        .expect("revoked key has a revocation")
        .state
}

/// The revocation of a revoked key, as read now.
async fn revocation(s: &S, tenant: &TenantId, key_id: KeyId) -> Revocation {
    s.get_key(tenant, key_id, now())
        .await
        .unwrap()
        .revocation
        .expect("revoked key has a revocation")
}

/// A heartbeat of ingestor `id` (its queue named after it) sent at `at`.
async fn heartbeat(s: &S, id: &str, at: chrono::DateTime<Utc>) {
    s.ingestor_heartbeat(id, &format!("keyward.ingestor.{id}"), at)
        .await
        .unwrap();
}

const LEASE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- tenants

async fn migrations_are_idempotent(s: S) {
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
}

async fn tenants(s: S) {
    let created = s
        .create_tenant(&t("acme"), Some("Acme Inc"), &change())
        .await
        .unwrap();
    assert_eq!(created.name.as_deref(), Some("Acme Inc"));
    assert!(matches!(
        s.create_tenant(&t("acme"), None, &change()).await,
        Err(StoreError::TenantExists)
    ));
    let ids: Vec<String> = s
        .list_tenants()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, vec!["_platform", "acme"]);
    assert!(s.tenant_exists(&t("acme")).await.unwrap());
    assert!(!s.tenant_exists(&t("nope")).await.unwrap());
    let listed = s.list_tenants().await.unwrap();
    assert_eq!(
        listed[1], created,
        "what create returns is what reads return"
    );
}

// ---------------------------------------------------------------- roles

async fn roles_put_get_list_delete(s: S) {
    let acme = tenant(&s, "acme").await;
    let (created, is_new) = s
        .put_role(&acme, &r("ops"), &admin_priv(), &change())
        .await
        .unwrap();
    assert!(is_new);
    assert_eq!(created.privileges, admin_priv());
    let (replaced, is_new) = s
        .put_role(&acme, &r("ops"), &ingest_priv("app-*"), &change())
        .await
        .unwrap();
    assert!(!is_new);
    assert_eq!(replaced.privileges, ingest_priv("app-*"));
    assert_eq!(s.get_role(&acme, &r("ops")).await.unwrap(), replaced);

    let many = vec![
        Privilege::new(
            PrivilegeKind::Reader,
            Some(StreamPattern::parse("b").unwrap()),
        ),
        Privilege::new(PrivilegeKind::Writer, None),
        Privilege::new(
            PrivilegeKind::Reader,
            Some(StreamPattern::parse("a").unwrap()),
        ),
    ];
    role(&s, &acme, "empty", vec![]).await;
    role(&s, &acme, "many", many.clone()).await;
    let names: Vec<String> = s
        .list_roles(&acme)
        .await
        .unwrap()
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, vec!["empty", "many", "ops"]);
    assert_eq!(
        s.get_role(&acme, &r("many")).await.unwrap().privileges,
        many,
        "order kept"
    );
    assert!(
        s.get_role(&acme, &r("empty"))
            .await
            .unwrap()
            .privileges
            .is_empty()
    );

    s.delete_role(&acme, &r("ops"), &keyward_core::testing::change())
        .await
        .unwrap();
    assert!(matches!(
        s.get_role(&acme, &r("ops")).await,
        Err(StoreError::RoleNotFound)
    ));
    assert!(matches!(
        s.delete_role(&acme, &r("ops"), &keyward_core::testing::change())
            .await,
        Err(StoreError::RoleNotFound)
    ));
    assert!(matches!(
        s.put_role(&t("nope"), &r("x"), &[], &change()).await,
        Err(StoreError::TenantNotFound)
    ));
}

async fn roles_are_per_tenant(s: S) {
    let a = tenant(&s, "a").await;
    let b = tenant(&s, "b").await;
    role(&s, &a, "ops", admin_priv()).await;
    assert!(matches!(
        s.get_role(&b, &r("ops")).await,
        Err(StoreError::RoleNotFound)
    ));
    assert!(s.list_roles(&b).await.unwrap().is_empty());
    assert!(matches!(
        s.create_key(&new_key(&b, "k", &[r("ops")]), &change()).await,
        Err(StoreError::UnknownRoles(missing)) if missing == vec!["ops".to_string()]
    ));
}

async fn builtin_roles_are_read_only(s: S) {
    let platform = TenantId::platform();
    let sa = s.get_role(&platform, &r("superadmin")).await.unwrap();
    assert!(sa.builtin);
    assert_eq!(
        sa.privileges,
        vec![Privilege::new(PrivilegeKind::Superadmin, None)]
    );
    let v = s.get_role(&platform, &r("verifier")).await.unwrap();
    assert_eq!(
        v.privileges,
        vec![Privilege::new(PrivilegeKind::Verifier, None)]
    );
    assert!(matches!(
        s.put_role(&platform, &r("superadmin"), &admin_priv(), &change())
            .await,
        Err(StoreError::BuiltinRole)
    ));
    // Their names are reserved in every tenant.
    let acme = tenant(&s, "acme").await;
    for name in ["superadmin", "verifier"] {
        assert!(matches!(
            s.put_role(&acme, &r(name), &admin_priv(), &change()).await,
            Err(StoreError::BuiltinRole)
        ));
    }
    assert!(matches!(
        s.delete_role(&platform, &r("verifier"), &keyward_core::testing::change())
            .await,
        Err(StoreError::BuiltinRole)
    ));
    assert_eq!(
        s.get_role(&platform, &r("superadmin")).await.unwrap(),
        sa,
        "unchanged"
    );
}

async fn role_in_use_cannot_be_deleted(s: S) {
    let acme = tenant(&s, "acme").await;
    for holder in ["user", "key", "group"] {
        let name = format!("held-by-{holder}");
        let held = role(&s, &acme, &name, admin_priv()).await;
        match holder {
            "user" => {
                s.create_user(
                    &new_user(&acme, "alice", std::slice::from_ref(&held)),
                    &change(),
                )
                .await
                .unwrap();
            }
            "key" => {
                key(&s, &acme, "k", std::slice::from_ref(&held)).await;
            }
            _ => {
                let spec = GroupSpec {
                    roles: vec![held.clone()],
                    users: vec![],
                    api_keys: vec![],
                };
                s.put_group(&acme, &g("ops"), &spec, &change())
                    .await
                    .unwrap();
            }
        }
        assert!(
            matches!(
                s.delete_role(&acme, &held, &keyward_core::testing::change())
                    .await,
                Err(StoreError::RoleInUse)
            ),
            "{holder}"
        );
        assert!(
            s.get_role(&acme, &held).await.is_ok(),
            "{holder}: still there"
        );
    }
    // Once nothing holds it, it goes.
    s.delete_user(&acme, &u("alice"), &keyward_core::testing::change())
        .await
        .unwrap();
    s.delete_role(&acme, &r("held-by-user"), &keyward_core::testing::change())
        .await
        .unwrap();
    s.delete_group(&acme, &g("ops"), &keyward_core::testing::change())
        .await
        .unwrap();
    s.delete_role(&acme, &r("held-by-group"), &keyward_core::testing::change())
        .await
        .unwrap();
}

// ---------------------------------------------------------------- users

async fn users_crud(s: S) {
    let acme = tenant(&s, "acme").await;
    let ops = role(&s, &acme, "ops", admin_priv()).await;
    let ro = role(&s, &acme, "ro", vec![]).await;
    let alice = s
        .create_user(
            &new_user(&acme, "alice", &[ro.clone(), ops.clone()]),
            &change(),
        )
        .await
        .unwrap();
    assert_eq!(alice.roles, vec![ops.clone(), ro.clone()]);
    assert_eq!(s.get_user(&acme, &u("alice")).await.unwrap(), alice);
    s.create_user(
        &new_user(&acme, "bob", &[]),
        &keyward_core::testing::change(),
    )
    .await
    .unwrap();
    let names: Vec<String> = s
        .list_users(&acme)
        .await
        .unwrap()
        .iter()
        .map(|u| u.username.to_string())
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);

    let updated = s
        .set_user_roles(
            &acme,
            &u("alice"),
            std::slice::from_ref(&ro),
            &keyward_core::testing::change(),
        )
        .await
        .unwrap();
    assert_eq!(updated.roles, vec![ro.clone()]);
    assert!(matches!(
        s.set_user_roles(&acme, &u("alice"), &[r("ghost"), ops.clone()], &keyward_core::testing::change()).await,
        Err(StoreError::UnknownRoles(m)) if m == vec!["ghost".to_string()]
    ));
    assert_eq!(
        s.get_user(&acme, &u("alice")).await.unwrap().roles,
        vec![ro],
        "unchanged"
    );
    assert!(matches!(
        s.set_user_roles(&acme, &u("nobody"), &[], &keyward_core::testing::change())
            .await,
        Err(StoreError::UserNotFound)
    ));

    let creds = s.user_credentials(&u("alice")).await.unwrap().unwrap();
    assert_eq!(creds.tenant_id, acme);
    assert!(creds.password_hash.starts_with("$argon2id$"));
    assert!(
        !format!("{creds:?}").contains("argon2"),
        "Debug hides the hash"
    );
    assert!(s.user_credentials(&u("nobody")).await.unwrap().is_none());

    s.delete_user(&acme, &u("alice"), &keyward_core::testing::change())
        .await
        .unwrap();
    assert!(matches!(
        s.get_user(&acme, &u("alice")).await,
        Err(StoreError::UserNotFound)
    ));
    assert!(matches!(
        s.delete_user(&acme, &u("alice"), &keyward_core::testing::change())
            .await,
        Err(StoreError::UserNotFound)
    ));
}

async fn usernames_are_global_and_writes_are_all_or_nothing(s: S) {
    let a = tenant(&s, "a").await;
    let b = tenant(&s, "b").await;
    s.create_user(
        &new_user(&a, "alice", &[]),
        &keyward_core::testing::change(),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.create_user(
            &new_user(&b, "alice", &[]),
            &keyward_core::testing::change()
        )
        .await,
        Err(StoreError::DuplicateUsername)
    ));
    assert!(matches!(
        s.get_user(&b, &u("alice")).await,
        Err(StoreError::UserNotFound)
    ));
    assert!(matches!(
        s.create_user(&new_user(&a, "carol", &[r("ghost"), r("phantom")]), &change()).await,
        Err(StoreError::UnknownRoles(m)) if m == vec!["ghost".to_string(), "phantom".to_string()]
    ));
    assert!(
        s.user_credentials(&u("carol")).await.unwrap().is_none(),
        "nothing written"
    );
    assert!(matches!(
        s.create_user(&new_user(&t("nope"), "dave", &[]), &change())
            .await,
        Err(StoreError::TenantNotFound)
    ));
}

async fn bootstrap_happens_once(s: S) {
    let platform = TenantId::platform();
    let admin = new_user(&platform, "admin", &[r("superadmin")]);
    assert!(s.bootstrap_user(&admin).await.unwrap());
    assert!(!s.bootstrap_user(&admin).await.unwrap());
    let other = new_user(&platform, "admin2", &[r("superadmin")]);
    assert!(
        !s.bootstrap_user(&other).await.unwrap(),
        "never again once users exist"
    );
    let grants = s.user_grants(&platform, &u("admin")).await.unwrap();
    assert!(Permissions::from_grants(platform, grants).is_superadmin());
}

// ---------------------------------------------------------------- groups

async fn groups_crud_and_grants(s: S) {
    let acme = tenant(&s, "acme").await;
    let ops = role(&s, &acme, "ops", admin_priv()).await;
    let ship = role(&s, &acme, "ship", ingest_priv("app-*")).await;
    s.create_user(
        &new_user(&acme, "alice", &[]),
        &keyward_core::testing::change(),
    )
    .await
    .unwrap();
    let k = key(&s, &acme, "k", std::slice::from_ref(&ship)).await;

    let spec = GroupSpec {
        roles: vec![ops.clone()],
        users: vec![u("alice")],
        api_keys: vec![k.key_id],
    };
    let (group, created) = s
        .put_group(&acme, &g("admins"), &spec, &change())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        (
            group.roles.clone(),
            group.users.clone(),
            group.api_keys.clone()
        ),
        (vec![ops.clone()], vec![u("alice")], vec![k.key_id])
    );
    assert_eq!(s.get_group(&acme, &g("admins")).await.unwrap(), group);

    // alice is admin through the group only, with provenance.
    let grants = s.user_grants(&acme, &u("alice")).await.unwrap();
    let perms = Permissions::from_grants(acme.clone(), grants);
    assert!(perms.may_act_on_tenant(&acme));
    assert_eq!(
        perms.roles[0].granted_by,
        vec![Grant::Group { group: g("admins") }]
    );

    // The key holds its own role and the group's.
    let creds = s.key_credentials(k.key_id).await.unwrap().unwrap();
    let perms = Permissions::from_grants(acme.clone(), creds.grants);
    assert_eq!(perms.role_names(), vec![ops.clone(), ship.clone()]);

    // Replacing the group drops members: alice loses admin on the next read.
    let spec = GroupSpec {
        roles: vec![ops.clone()],
        users: vec![],
        api_keys: vec![],
    };
    let (group, created) = s
        .put_group(&acme, &g("admins"), &spec, &change())
        .await
        .unwrap();
    assert!(!created);
    assert!(group.users.is_empty() && group.api_keys.is_empty());
    let perms = Permissions::from_grants(
        acme.clone(),
        s.user_grants(&acme, &u("alice")).await.unwrap(),
    );
    assert!(!perms.may_act_on_tenant(&acme));

    s.put_group(
        &acme,
        &g("b"),
        &GroupSpec {
            roles: vec![],
            users: vec![],
            api_keys: vec![],
        },
        &change(),
    )
    .await
    .unwrap();
    let names: Vec<String> = s
        .list_groups(&acme)
        .await
        .unwrap()
        .iter()
        .map(|g| g.name.to_string())
        .collect();
    assert_eq!(names, vec!["admins", "b"]);
    s.delete_group(&acme, &g("admins"), &keyward_core::testing::change())
        .await
        .unwrap();
    assert!(matches!(
        s.get_group(&acme, &g("admins")).await,
        Err(StoreError::GroupNotFound)
    ));
    assert!(matches!(
        s.delete_group(&acme, &g("admins"), &keyward_core::testing::change())
            .await,
        Err(StoreError::GroupNotFound)
    ));
}

async fn group_members_must_exist_in_the_tenant(s: S) {
    let a = tenant(&s, "a").await;
    let b = tenant(&s, "b").await;
    s.create_user(&new_user(&b, "bob", &[]), &keyward_core::testing::change())
        .await
        .unwrap();
    let kb = key(&s, &b, "kb", &[]).await;
    let spec = GroupSpec {
        roles: vec![],
        users: vec![u("bob")],
        api_keys: vec![],
    };
    assert!(matches!(
        s.put_group(&a, &g("x"), &spec, &change()).await,
        Err(StoreError::UnknownUsers(m)) if m == vec![u("bob")]
    ));
    let spec = GroupSpec {
        roles: vec![],
        users: vec![],
        api_keys: vec![kb.key_id],
    };
    assert!(matches!(
        s.put_group(&a, &g("x"), &spec, &change()).await,
        Err(StoreError::UnknownKeys(m)) if m == vec![kb.key_id]
    ));
    let spec = GroupSpec {
        roles: vec![r("ghost")],
        users: vec![],
        api_keys: vec![],
    };
    assert!(matches!(
        s.put_group(&a, &g("x"), &spec, &change()).await,
        Err(StoreError::UnknownRoles(_))
    ));
    assert!(
        s.list_groups(&a).await.unwrap().is_empty(),
        "nothing written"
    );
    // A deleted user leaves the groups it was in.
    let spec = GroupSpec {
        roles: vec![],
        users: vec![u("bob")],
        api_keys: vec![],
    };
    s.put_group(&b, &g("x"), &spec, &change()).await.unwrap();
    s.delete_user(&b, &u("bob"), &keyward_core::testing::change())
        .await
        .unwrap();
    assert!(s.get_group(&b, &g("x")).await.unwrap().users.is_empty());
}

// ---------------------------------------------------------------- keys

async fn keys_create_get(s: S) {
    let acme = tenant(&s, "acme").await;
    let ship = role(&s, &acme, "ship", ingest_priv("app-*")).await;
    // Names whose order differs between byte order and a database's
    // collation, one given twice: creation answers without reading back,
    // and must answer what every read returns.
    let mut roles = Vec::new();
    for name in ["zeta", "a-c", "ab", "B", "a"] {
        roles.push(role(&s, &acme, name, vec![]).await);
    }
    let mut given = vec![ship.clone()];
    given.extend(roles.iter().cloned());
    given.push(ship.clone());
    let mut nk = new_key(&acme, "ci", &given);
    nk.expires_at = Some(now() + chrono::Duration::nanoseconds(86_400_000_000_123));
    let created = s.create_key(&nk, &change()).await.unwrap();
    assert_eq!(created.key_id, nk.key_id);
    assert_eq!(created.status, KeyStatus::Active);
    let mut sorted = given.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(created.roles, sorted);
    assert_eq!(created.start, nk.start);
    assert!(created.revocation.is_none() && created.last_used_at.is_none());
    assert_eq!(s.get_key(&acme, nk.key_id, now()).await.unwrap(), created);
    let listed = s
        .list_keys(
            &acme,
            &KeyQuery {
                status: StatusFilter::All,
                limit: 50,
                before: None,
            },
            now(),
        )
        .await
        .unwrap();
    assert_eq!(listed, vec![created.clone()]);
    // An expiry already passed: created expired, as read.
    let mut past = new_key(&acme, "past", &[]);
    past.expires_at = Some(now() - chrono::Duration::seconds(1));
    let created_past = s.create_key(&past, &change()).await.unwrap();
    assert_eq!(created_past.status, KeyStatus::Expired);
    assert_eq!(
        s.get_key(&acme, past.key_id, now()).await.unwrap(),
        created_past
    );
    let other = tenant(&s, "other").await;
    assert!(matches!(
        s.get_key(&other, nk.key_id, now()).await,
        Err(StoreError::KeyNotFound)
    ));
    assert!(matches!(
        s.get_key(&acme, KeyId::new(), now()).await,
        Err(StoreError::KeyNotFound)
    ));

    let creds = s.key_credentials(nk.key_id).await.unwrap().unwrap();
    assert_eq!(
        (creds.tenant_id.clone(), creds.active),
        (acme.clone(), true)
    );
    assert_eq!(creds.secret_hash, nk.secret_hash);
    assert!(
        !format!("{creds:?}").contains("argon2"),
        "Debug hides the hash"
    );
    assert!(s.key_credentials(KeyId::new()).await.unwrap().is_none());
}

/// Many keys in one read: each with the same grants as read alone, keys
/// without roles included, unknown ids left out.
async fn many_keys_are_read_in_one_statement(s: S) {
    let acme = tenant(&s, "acme").await;
    let ship = role(&s, &acme, "ship", ingest_priv("app-*")).await;
    let with_role = key(&s, &acme, "a", std::slice::from_ref(&ship)).await;
    let bare = key(&s, &acme, "b", &[]).await;
    let spec = GroupSpec {
        roles: vec![ship.clone()],
        users: vec![],
        api_keys: vec![bare.key_id],
    };
    s.put_group(&acme, &g("shippers"), &spec, &change())
        .await
        .unwrap();
    let lonely = key(&s, &acme, "c", &[]).await;
    let ids = [with_role.key_id, KeyId::new(), bare.key_id, lonely.key_id];
    let many = s.key_credentials_many(&ids).await.unwrap();
    assert_eq!(many.len(), 3, "the unknown id is left out");
    for k in &many {
        let alone = s.key_credentials(k.key_id).await.unwrap().unwrap();
        assert_eq!(
            (&k.tenant_id, k.active, &k.secret_hash, &k.grants),
            (
                &alone.tenant_id,
                alone.active,
                &alone.secret_hash,
                &alone.grants
            )
        );
    }
    let grants = |id: KeyId| many.iter().find(|k| k.key_id == id).unwrap().grants.len();
    assert_eq!(grants(with_role.key_id), 1);
    assert_eq!(grants(bare.key_id), 1, "through the group");
    assert_eq!(grants(lonely.key_id), 0);
    assert!(s.key_credentials_many(&[]).await.unwrap().is_empty());

    // Roles by name, each role's privileges in the order the role lists
    // them (not by name), read alone and with others; direct before a
    // group's grant of the same role.
    let mut listed = ingest_priv("z-*");
    listed.push(Privilege::new(PrivilegeKind::Admin, None));
    listed.extend(ingest_priv("a-*"));
    let multi = role(&s, &acme, "multi", listed.clone()).await;
    let both = key(&s, &acme, "d", &[ship.clone(), multi.clone()]).await;
    let spec = GroupSpec {
        roles: vec![multi.clone()],
        users: vec![],
        api_keys: vec![both.key_id],
    };
    s.put_group(&acme, &g("multis"), &spec, &change())
        .await
        .unwrap();
    let alone = s.key_credentials(both.key_id).await.unwrap().unwrap();
    let together = s
        .key_credentials_many(&[bare.key_id, both.key_id, with_role.key_id])
        .await
        .unwrap();
    let together = together.iter().find(|k| k.key_id == both.key_id).unwrap();
    for grants in [&alone.grants, &together.grants] {
        let seen: Vec<_> = grants
            .iter()
            .map(|gr| (gr.role.clone(), gr.via.clone(), gr.privileges.clone()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (multi.clone(), Grant::Direct, listed.clone()),
                (
                    multi.clone(),
                    Grant::Group { group: g("multis") },
                    listed.clone()
                ),
                (ship.clone(), Grant::Direct, ingest_priv("app-*")),
            ]
        );
    }
}

/// An argon2id hash from an earlier version is rewritten as a SHA-256
/// digest once, and only if nothing else rewrote it first.
async fn key_hash_upgrade_is_compare_and_set(s: S) {
    let acme = tenant(&s, "acme").await;
    let mut nk = new_key(&acme, "old", &[]);
    let legacy = "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA".to_owned();
    nk.secret_hash = legacy.clone();
    s.create_key(&nk, &change()).await.unwrap();
    let digest = keyward_core::digest::KeyDigest::of("the secret").encode();
    assert!(
        s.upgrade_key_hash(nk.key_id, &legacy, &digest)
            .await
            .unwrap()
    );
    assert!(
        !s.upgrade_key_hash(nk.key_id, &legacy, "$sha256$other")
            .await
            .unwrap(),
        "a second upgrade from the old hash changes nothing"
    );
    let creds = s.key_credentials(nk.key_id).await.unwrap().unwrap();
    assert_eq!(creds.secret_hash, digest);
    assert!(
        !s.upgrade_key_hash(KeyId::new(), &legacy, &digest)
            .await
            .unwrap()
    );
}

async fn key_names_unique_among_active_keys(s: S) {
    let acme = tenant(&s, "acme").await;
    let first = key(&s, &acme, "ci", &[]).await;
    assert!(matches!(
        s.create_key(&new_key(&acme, "ci", &[]), &change()).await,
        Err(StoreError::DuplicateKeyName)
    ));
    let other = tenant(&s, "other").await;
    key(&s, &other, "ci", &[]).await;
    revoke(&s, &acme, first.key_id).await;
    key(&s, &acme, "ci", &[]).await;
}

async fn key_creation_is_all_or_nothing(s: S) {
    let acme = tenant(&s, "acme").await;
    role(&s, &acme, "ok", vec![]).await;
    let nk = new_key(&acme, "ci", &[r("ok"), r("ghost")]);
    assert!(matches!(
        s.create_key(&nk, &change()).await,
        Err(StoreError::UnknownRoles(m)) if m == vec!["ghost".to_string()]
    ));
    assert!(s.key_credentials(nk.key_id).await.unwrap().is_none());
    let q = KeyQuery {
        status: StatusFilter::All,
        limit: 50,
        before: None,
    };
    assert!(s.list_keys(&acme, &q, now()).await.unwrap().is_empty());
    assert!(matches!(
        s.create_key(&new_key(&t("nope"), "ci", &[]), &change())
            .await,
        Err(StoreError::TenantNotFound)
    ));
}

async fn key_listing_pages_and_filters(s: S) {
    let acme = tenant(&s, "acme").await;
    let ro = role(&s, &acme, "ro", vec![]).await;
    let rw = role(&s, &acme, "rw", vec![]).await;
    // Each key's own roles (none, one, two) in every page, whichever keys
    // lie between a page's keys.
    let roles_of = |i: usize| match i % 3 {
        0 => vec![ro.clone()],
        1 => vec![],
        _ => vec![ro.clone(), rw.clone()],
    };
    let mut roles = std::collections::HashMap::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut nk = new_key(&acme, &format!("k{i}"), &roles_of(i));
        roles.insert(nk.key_id, roles_of(i));
        if i == 1 {
            nk.expires_at = Some(now() + chrono::Duration::milliseconds(1));
        }
        ids.push(s.create_key(&nk, &change()).await.unwrap().key_id);
        // ULIDs in the same millisecond still sort, but not by creation.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    revoke(&s, &acme, ids[2]).await;
    let later = now() + chrono::Duration::seconds(1);
    let other = tenant(&s, "other").await;
    key(&s, &other, "theirs", &[]).await;

    // Pages of 3, newest first, no overlap, nothing missed.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let q = KeyQuery {
            status: StatusFilter::All,
            limit: 3,
            before,
        };
        let page = s.list_keys(&acme, &q, later).await.unwrap();
        assert!(page.len() <= 3);
        // A key created mid-listing lands before the cursor, never in a later page.
        if before.is_some() && seen.len() == 3 {
            key(&s, &acme, "late", &[]).await;
        }
        seen.extend(page.iter().map(|k| k.key_id));
        for k in page.iter().filter(|k| k.name.as_str() != "late") {
            assert_eq!(k.roles, roles[&k.key_id], "{}", k.name);
        }
        match page.last() {
            Some(last) if page.len() == 3 => before = Some(last.key_id),
            _ => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let ids_with = |status| {
        let s = s.clone();
        let acme = acme.clone();
        async move {
            let q = KeyQuery {
                status,
                limit: 200,
                before: None,
            };
            let page = s.list_keys(&acme, &q, later).await.unwrap();
            page.iter()
                .map(|k| (k.key_id, k.status))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids_with(StatusFilter::Revoked).await,
        vec![(ids[2], KeyStatus::Revoked)]
    );
    assert_eq!(
        ids_with(StatusFilter::Expired).await,
        vec![(ids[1], KeyStatus::Expired)]
    );
    let active = ids_with(StatusFilter::Active).await;
    assert_eq!(active.len(), 6, "five remaining plus the late one");
    assert!(active.iter().all(|(_, st)| *st == KeyStatus::Active));

    // Each filter pages with a cursor to the same keys as one big page:
    // every (filter, cursor) pair is a statement of its own.
    for status in [
        StatusFilter::All,
        StatusFilter::Active,
        StatusFilter::Revoked,
        StatusFilter::Expired,
    ] {
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let q = KeyQuery {
                status,
                limit: 2,
                before,
            };
            let page = s.list_keys(&acme, &q, later).await.unwrap();
            for k in page.iter().filter(|k| k.name.as_str() != "late") {
                assert_eq!(k.roles, roles[&k.key_id], "{status:?} {}", k.name);
            }
            paged.extend(page.iter().map(|k| (k.key_id, k.status)));
            match page.last() {
                Some(last) if page.len() == 2 => before = Some(last.key_id),
                _ => break,
            }
        }
        assert_eq!(paged, ids_with(status).await, "{status:?}");
    }
    // A cursor past a revoked key and before an expired one keeps each
    // filter to its own keys.
    let q = |status| KeyQuery {
        status,
        limit: 50,
        before: Some(ids[3]),
    };
    let under = |status| {
        let (s, acme) = (s.clone(), acme.clone());
        async move {
            s.list_keys(&acme, &q(status), later)
                .await
                .unwrap()
                .iter()
                .map(|k| k.key_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(under(StatusFilter::Revoked).await, vec![ids[2]]);
    assert_eq!(under(StatusFilter::Expired).await, vec![ids[1]]);
    assert_eq!(under(StatusFilter::Active).await, vec![ids[0]]);
    assert_eq!(under(StatusFilter::All).await, vec![ids[2], ids[1], ids[0]]);
}

/// The tenant's keys under `status`, paged `limit` at a time, as listed at
/// `at`.
async fn listed(
    s: &S,
    tenant: &TenantId,
    status: StatusFilter,
    at: Timestamp,
    limit: u32,
) -> Vec<(KeyId, KeyStatus)> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let q = KeyQuery {
            status,
            limit,
            before,
        };
        let page = s.list_keys(tenant, &q, at).await.unwrap();
        all.extend(page.iter().map(|k| (k.key_id, k.status)));
        match page.last() {
            Some(last) if page.len() == limit as usize => before = Some(last.key_id),
            _ => return all,
        }
    }
}

/// Expired keys list the same before, during and after the sweep that marks
/// them (`expiry_passed`, migration 0008: which index holds a key, not
/// whether it has expired): partly swept pages merge both indexes in
/// order, a sweeper whose clock runs ahead changes no answer, a swept key
/// whose expiry moves ahead is active again and expired once that passes,
/// and a revoked one is only revoked.
async fn expired_keys_list_the_same_swept_or_not(s: S) {
    let acme = tenant(&s, "acme").await;
    let base = now();
    let hours = |h: i64| base + chrono::Duration::hours(h);
    let minutes = |m: i64| base + chrono::Duration::minutes(m);
    // Key i expires at hour i + 1; key 6 never.
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut nk = new_key(&acme, &format!("k{i}"), &[]);
        nk.expires_at = (i < 6).then(|| hours(i + 1));
        ids.push(s.create_key(&nk, &change()).await.unwrap().key_id);
        // ULIDs in the same millisecond still sort, but not by creation.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let other = tenant(&s, "other").await;
    let mut theirs = new_key(&other, "theirs", &[]);
    theirs.expires_at = Some(hours(1));
    s.create_key(&theirs, &change()).await.unwrap();

    let expired = |n: &[usize]| {
        n.iter()
            .map(|&i| (ids[i], KeyStatus::Expired))
            .collect::<Vec<_>>()
    };
    let at4 = minutes(4 * 60 + 1);
    let before_sweep = listed(&s, &acme, StatusFilter::Expired, at4, 2).await;
    assert_eq!(before_sweep, expired(&[3, 2, 1, 0]));

    // The sweep takes its batch, oldest expiry first, across tenants.
    let sweep = |at, limit| {
        let s = s.clone();
        async move { s.sweep_expired_keys(at, limit).await.unwrap() }
    };
    assert_eq!(sweep(minutes(150), 2).await, 2, "acme's k0 and other's key");
    assert_eq!(sweep(minutes(150), 2).await, 1, "k1");
    assert_eq!(sweep(minutes(150), 2).await, 0);
    // k0 and k1 swept, k2 and k3 not: every page size merges both.
    for limit in [1, 2, 3, 50] {
        assert_eq!(
            listed(&s, &acme, StatusFilter::Expired, at4, limit).await,
            before_sweep,
            "limit {limit}"
        );
    }
    // A sweeper whose clock runs ahead marks k4 too; at hour 4 it is still
    // active, and listed as such.
    assert_eq!(sweep(minutes(5 * 60 + 30), 100).await, 3);
    assert_eq!(
        listed(&s, &acme, StatusFilter::Expired, at4, 2).await,
        before_sweep
    );
    let active = listed(&s, &acme, StatusFilter::Active, at4, 50).await;
    assert_eq!(
        active,
        vec![
            (ids[6], KeyStatus::Active),
            (ids[5], KeyStatus::Active),
            (ids[4], KeyStatus::Active)
        ]
    );

    // k1's expiry moves ahead: active at hour 4, expired at hour 8.
    let later = KeyUpdate {
        expires_at: Some(Some(hours(7))),
        ..KeyUpdate::default()
    };
    s.update_key(&acme, ids[1], &later, &change())
        .await
        .unwrap();
    assert_eq!(
        listed(&s, &acme, StatusFilter::Expired, at4, 2).await,
        expired(&[3, 2, 0])
    );
    assert!(
        listed(&s, &acme, StatusFilter::Active, at4, 50)
            .await
            .contains(&(ids[1], KeyStatus::Active))
    );
    let at8 = hours(8);
    assert_eq!(
        listed(&s, &acme, StatusFilter::Expired, at8, 2).await,
        expired(&[5, 4, 3, 2, 1, 0])
    );

    // A swept key revoked is revoked, not expired.
    revoke(&s, &acme, ids[0]).await;
    assert_eq!(
        listed(&s, &acme, StatusFilter::Expired, at8, 4).await,
        expired(&[5, 4, 3, 2, 1])
    );
    assert_eq!(
        listed(&s, &acme, StatusFilter::Revoked, at8, 4).await,
        vec![(ids[0], KeyStatus::Revoked)]
    );
    // Other tenants' expired keys, swept, stay theirs.
    assert_eq!(
        listed(&s, &other, StatusFilter::Expired, at8, 4)
            .await
            .len(),
        1
    );
}

async fn key_usage_is_recorded_in_batches(s: S) {
    let acme = tenant(&s, "acme").await;
    let a = key(&s, &acme, "a", &[]).await.key_id;
    let b = key(&s, &acme, "b", &[]).await.key_id;
    assert_eq!(
        s.record_key_usage(&[(a, at(10)), (b, at(20))])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.record_key_usage(&[(a, at(5))]).await.unwrap(),
        0,
        "never backwards"
    );
    assert_eq!(
        s.get_key(&acme, a, now()).await.unwrap().last_used_at,
        Some(at(10))
    );
    assert_eq!(
        s.get_key(&acme, b, now()).await.unwrap().last_used_at,
        Some(at(20))
    );
    assert_eq!(s.record_key_usage(&[]).await.unwrap(), 0);

    // A key twice in one batch keeps its latest use, wherever it stands.
    s.record_key_usage(&[(a, at(30)), (b, at(25)), (a, at(40)), (a, at(35))])
        .await
        .unwrap();
    assert_eq!(
        s.get_key(&acme, a, now()).await.unwrap().last_used_at,
        Some(at(40))
    );
    assert_eq!(
        s.get_key(&acme, b, now()).await.unwrap().last_used_at,
        Some(at(25))
    );
    // A batch larger than one statement takes (the store writes it in
    // chunks): the latest use is in the first chunk, older ones after it.
    let mut long: Vec<_> = (0..2500).rev().map(|i| (a, at(100 + i))).collect();
    long.push((b, at(50)));
    s.record_key_usage(&long).await.unwrap();
    assert_eq!(
        s.get_key(&acme, a, now()).await.unwrap().last_used_at,
        Some(at(2599))
    );
    assert_eq!(
        s.get_key(&acme, b, now()).await.unwrap().last_used_at,
        Some(at(50))
    );
}

// ---------------------------------------------------------------- revoke

async fn revoke_writes_tombstone_and_one_event(s: S) {
    let acme = tenant(&s, "acme").await;
    let k = key(&s, &acme, "ci", &[]).await;
    let first = revoke(&s, &acme, k.key_id).await;
    assert!(first.newly_revoked);
    assert_eq!(first.key.status, KeyStatus::Revoked);
    assert_eq!(first.key.revoked_by.as_deref(), Some("admin"));
    let rev = first.key.revocation.clone().unwrap();
    assert_eq!(
        (rev.state, rev.attempts, rev.applied_by),
        (EventState::Pending, 0, 0)
    );

    let second = revoke(&s, &acme, k.key_id).await;
    assert!(!second.newly_revoked);
    assert_eq!(
        second.key.revocation.unwrap().event_id,
        rev.event_id,
        "same event"
    );
    assert_eq!(second.key.revoked_at, first.key.revoked_at);

    let events = s.claim_events("w", LEASE, 100, now()).await.unwrap();
    assert_eq!(events.len(), 1, "exactly one event");
    assert_eq!(
        (events[0].event_id, events[0].key_id),
        (rev.event_id, Some(k.key_id))
    );
    assert_eq!(events[0].kind, KEY_REVOKED);
    assert_eq!(events[0].tenant_id, acme);
    assert_eq!(
        Some(events[0].created_at),
        first.key.revoked_at,
        "revokedAt is the event time"
    );

    assert!(!s.key_credentials(k.key_id).await.unwrap().unwrap().active);
    let other = tenant(&s, "other").await;
    assert!(matches!(
        s.revoke_key(&other, k.key_id, &change()).await,
        Err(StoreError::KeyNotFound)
    ));
    assert!(matches!(
        s.revoke_key(&acme, KeyId::new(), &change()).await,
        Err(StoreError::KeyNotFound)
    ));
}

async fn concurrent_revokes_write_one_event(s: S) {
    let acme = tenant(&s, "acme").await;
    let k = key(&s, &acme, "ci", &[]).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, acme) = (s.clone(), acme.clone());
            tokio::spawn(async move { s.revoke_key(&acme, k.key_id, &change()).await.unwrap() })
        })
        .collect();
    let mut newly = 0;
    let mut event_ids = HashSet::new();
    for task in tasks {
        let done = task.await.unwrap();
        newly += usize::from(done.newly_revoked);
        event_ids.insert(done.key.revocation.unwrap().event_id);
    }
    assert_eq!(newly, 1);
    assert_eq!(event_ids.len(), 1, "every caller sees the one event");
    assert_eq!(s.outbox_stats().await.unwrap().pending, 1);
}

async fn role_deleted_during_key_creation_is_never_half_assigned(s: S) {
    let acme = tenant(&s, "acme").await;
    for round in 0..15 {
        let name = format!("racy{round}");
        let racy = role(&s, &acme, &name, admin_priv()).await;
        let nk = new_key(&acme, &format!("k{round}"), std::slice::from_ref(&racy));
        let (s1, s2) = (s.clone(), s.clone());
        let (acme1, acme2, racy2) = (acme.clone(), acme.clone(), racy.clone());
        let create = tokio::spawn(async move { s1.create_key(&nk, &change()).await });
        let delete = tokio::spawn(async move {
            s2.delete_role(&acme2, &racy2, &keyward_core::testing::change())
                .await
        });
        let (created, deleted) = (create.await.unwrap(), delete.await.unwrap());
        let role_exists = s.get_role(&acme1, &racy).await.is_ok();
        match (created, deleted) {
            (Ok(k), Err(StoreError::RoleInUse)) => {
                assert!(role_exists);
                let back = s.get_key(&acme1, k.key_id, now()).await.unwrap();
                assert_eq!(back.roles, vec![racy]);
            }
            (Err(StoreError::UnknownRoles(m)), Ok(())) => {
                assert_eq!(m, vec![name.clone()]);
                assert!(!role_exists);
            }
            (c, d) => panic!("round {round}: inconsistent outcome: {c:?} / {d:?}"),
        }
    }
}

// ---------------------------------------------------------------- outbox

async fn revoked_keys(s: &S, tenant: &TenantId, n: usize) -> Vec<KeyId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let k = key(s, tenant, &format!("k{i}"), &[]).await;
        revoke(s, tenant, k.key_id).await;
        ids.push(k.key_id);
    }
    ids
}

async fn claim_lease_publish(s: S) {
    let acme = tenant(&s, "acme").await;
    let keys = revoked_keys(&s, &acme, 3).await;
    let t0 = now();
    let claimed = s.claim_events("w1", LEASE, 2, t0).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        claimed[0].id < claimed[1].id,
        "oldest first, in sequence order"
    );
    assert_eq!(claimed[0].key_id, Some(keys[0]));
    let rest = s.claim_events("w2", LEASE, 10, t0).await.unwrap();
    assert_eq!(rest.len(), 1, "leased rows are not claimed again");
    assert!(
        s.claim_events("w2", LEASE, 10, t0)
            .await
            .unwrap()
            .is_empty()
    );

    // An expired lease makes the row claimable again (its worker died).
    let later = t0 + chrono::Duration::seconds(31);
    let again = s.claim_events("w3", LEASE, 10, later).await.unwrap();
    assert_eq!(again.len(), 3);

    let ids: Vec<i64> = again.iter().map(|e| e.id).collect();
    assert_eq!(
        s.mark_published(&ids[..2], later, later - chrono::Duration::seconds(30))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.mark_published(&ids[..2], later, later).await.unwrap(),
        0,
        "once"
    );
    let k0 = s.get_key(&acme, keys[0], now()).await.unwrap();
    let rev = k0.revocation.unwrap();
    assert_eq!(rev.state, EventState::Published);
    assert!(rev.published_at.is_some());
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 0));
    assert!(stats.oldest_pending_at.is_some());
    let far = later + chrono::Duration::hours(1);
    let left = s.claim_events("w4", LEASE, 10, far).await.unwrap();
    assert_eq!(left.len(), 1, "published rows are never claimed");
}

async fn release_returns_leases(s: S) {
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 2).await;
    let t0 = now();
    let claimed = s.claim_events("w1", LEASE, 10, t0).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    assert_eq!(s.release_leases("someone-else", &ids).await.unwrap(), 0);
    assert_eq!(s.release_leases("w1", &ids).await.unwrap(), 2);
    assert_eq!(s.claim_events("w2", LEASE, 10, t0).await.unwrap().len(), 2);
}

async fn retry_schedule_and_dead_letters(s: S) {
    let acme = tenant(&s, "acme").await;
    let keys = revoked_keys(&s, &acme, 2).await;
    let t0 = now();
    let claimed = s.claim_events("w1", LEASE, 10, t0).await.unwrap();
    let (a, b) = (claimed[0].id, claimed[1].id);
    let next = t0 + chrono::Duration::seconds(10);
    assert!(
        !s.schedule_retry("not-owner", a, next, "broker unreachable")
            .await
            .unwrap()
    );
    assert!(
        s.schedule_retry("w1", a, next, "broker unreachable")
            .await
            .unwrap()
    );
    assert!(
        s.mark_dead("w1", b, "gave up after 10 attempts", t0)
            .await
            .unwrap()
    );
    assert!(
        s.claim_events("w2", LEASE, 10, t0)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );

    let k = s.get_key(&acme, keys[0], now()).await.unwrap();
    let rev = k.revocation.unwrap();
    assert_eq!((rev.state, rev.attempts), (EventState::Pending, 1));
    assert_eq!(rev.last_error.as_deref(), Some("broker unreachable"));
    let due = s.claim_events("w2", LEASE, 10, next).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].attempts), (a, 1));

    let dead = s.get_key(&acme, keys[1], now()).await.unwrap();
    assert_eq!(state(&dead), EventState::Failed);
    assert_eq!(s.outbox_stats().await.unwrap().dead, 1);
    assert!(matches!(
        s.retry_revocation(&acme, keys[0], &change()).await,
        Err(StoreError::InvalidState)
    ));
    let back = s.retry_revocation(&acme, keys[1], &change()).await.unwrap();
    let rev = back.revocation.unwrap();
    assert_eq!(
        (rev.state, rev.attempts, rev.last_error),
        (EventState::Pending, 0, None)
    );
    let again = s.claim_events("w3", LEASE, 10, now()).await.unwrap();
    assert!(again.iter().any(|e| e.id == b));

    let active = key(&s, &acme, "live", &[]).await;
    assert!(matches!(
        s.retry_revocation(&acme, active.key_id, &change()).await,
        Err(StoreError::InvalidState)
    ));
    assert!(matches!(
        s.retry_revocation(&acme, KeyId::new(), &change()).await,
        Err(StoreError::KeyNotFound)
    ));
    assert!(s.mark_dead("w3", b, "x", now()).await.unwrap());
    assert_eq!(s.retry_all_dead(now()).await.unwrap(), 1);
    assert_eq!(s.outbox_stats().await.unwrap().dead, 0);
}

async fn purge_keeps_undelivered_rows(s: S) {
    let acme = tenant(&s, "acme").await;
    let keys = revoked_keys(&s, &acme, 3).await;
    let t0 = now();
    let claimed = s.claim_events("w", LEASE, 10, t0).await.unwrap();
    s.mark_published(&[claimed[0].id], t0, t0).await.unwrap();
    s.mark_dead("w", claimed[1].id, "gave up", t0)
        .await
        .unwrap();
    s.ingestor_heartbeat("i1", "q1", t0).await.unwrap();
    assert!(
        s.record_applied(claimed[0].event_id, "i1", t0)
            .await
            .unwrap()
    );

    let purged = s.purge(t0 + chrono::Duration::days(8)).await.unwrap();
    assert_eq!(purged, Purged { events: 1, acks: 1 });
    let stats = s.outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead),
        (1, 1),
        "pending and dead rows stay"
    );
    // The purged event's key still reads as revoked, its event published.
    let k = s.get_key(&acme, keys[0], now()).await.unwrap();
    assert_eq!(
        (k.status, state(&k)),
        (KeyStatus::Revoked, EventState::Published)
    );
    assert_eq!(
        s.purge(t0 - chrono::Duration::days(1)).await.unwrap(),
        Purged::default()
    );
}

async fn concurrent_claimers_never_share_a_row(s: S) {
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 60).await;
    let tasks: Vec<_> = (0..6)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut mine = Vec::new();
                loop {
                    let batch = s.claim_events(&owner, LEASE, 4, now()).await.unwrap();
                    if batch.is_empty() {
                        break mine;
                    }
                    mine.extend(batch.iter().map(|e| e.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "a row was leased to two claimers at once"
    );
    assert_eq!(all.len(), 60, "every row claimed");
}

// ---------------------------------------------------------------- ingestors

async fn ingestors_acks_and_applied_state(s: S) {
    let acme = tenant(&s, "acme").await;
    let keys = revoked_keys(&s, &acme, 2).await;
    let t0 = now();
    heartbeat(&s, "i1", t0 - chrono::Duration::seconds(5)).await;
    heartbeat(&s, "i2", t0).await;
    heartbeat(&s, "gone", t0 - chrono::Duration::minutes(10)).await;
    // Heartbeats never move last_seen backwards.
    heartbeat(&s, "i2", t0 - chrono::Duration::seconds(50)).await;

    let claimed = s.claim_events("w", LEASE, 10, t0).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    s.mark_published(&ids, t0, t0 - chrono::Duration::seconds(30))
        .await
        .unwrap();
    let ev = claimed[0].event_id;

    let k = s.get_key(&acme, keys[0], now()).await.unwrap();
    let rev = k.revocation.unwrap();
    assert_eq!(
        (rev.state, rev.ingestors, rev.applied_by),
        (EventState::Published, 2, 0)
    );

    assert!(s.record_applied(ev, "i1", t0).await.unwrap());
    assert!(!s.record_applied(ev, "i1", t0).await.unwrap(), "idempotent");
    assert!(
        !s.record_applied(EventId::new(), "i1", t0).await.unwrap(),
        "unknown event ignored"
    );
    let rev = revocation(&s, &acme, keys[0]).await;
    assert_eq!((rev.state, rev.applied_by), (EventState::Published, 1));
    s.record_applied(ev, "i2", t0).await.unwrap();
    let rev = revocation(&s, &acme, keys[0]).await;
    assert_eq!(
        (rev.state, rev.applied_by, rev.ingestors),
        (EventState::Applied, 2, 2)
    );

    let list = s.list_ingestors().await.unwrap();
    let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["gone", "i1", "i2"]);
    let i1 = &list[1];
    assert_eq!(i1.queue, "keyward.ingestor.i1");
    assert_eq!(i1.unacked, 1, "acked one of two published events");
    assert_eq!(list[2].last_seen_at, t0.with_nanosecond_micros());
    // Many at once, as the worker writes them: only the new one counts.
    let report = |event_id, ingestor: &str| AppliedReport {
        event_id,
        ingestor_id: ingestor.into(),
        applied_at: t0,
    };
    let batch = [
        report(ev, "i1"),
        report(EventId::new(), "i3"),
        report(ev, "i3"),
        report(ev, "i3"),
    ];
    assert_eq!(s.record_applied_all(&batch).await.unwrap(), 1);
    assert_eq!(s.record_applied_all(&[]).await.unwrap(), 0);
    let rev = revocation(&s, &acme, keys[0]).await;
    assert_eq!(rev.applied_by, 3, "i1, i2 and now i3");
}

/// A node counts towards `applied` only if it was first seen by the time
/// the event was sent: one whose first heartbeat came while the confirms
/// were on their way bound its queue after the event was routed and never
/// reports it. Checked by dropping `first_seen_at <= $1` from the mark: the
/// late node was counted and the event stayed `published`.
async fn nodes_that_joined_after_the_send_are_not_awaited(s: S) {
    let acme = tenant(&s, "acme").await;
    let keys = revoked_keys(&s, &acme, 1).await;
    let t0 = now();
    heartbeat(&s, "early", t0 - chrono::Duration::seconds(5)).await;
    let claimed = s.claim_events("w", LEASE, 10, t0).await.unwrap();
    // Sent at t0; the late node heartbeats before the confirm is recorded.
    heartbeat(&s, "late", t0 + chrono::Duration::milliseconds(20)).await;
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    s.mark_published(&ids, t0, t0 - chrono::Duration::seconds(30))
        .await
        .unwrap();
    let rev = revocation(&s, &acme, keys[0]).await;
    assert_eq!((rev.state, rev.ingestors), (EventState::Published, 1));
    assert_eq!(rev.published_at, Some(t0.with_nanosecond_micros()));
    s.record_applied(claimed[0].event_id, "early", t0)
        .await
        .unwrap();
    let rev = revocation(&s, &acme, keys[0]).await;
    assert_eq!((rev.state, rev.applied_by), (EventState::Applied, 1));
    let listed = s.list_ingestors().await.unwrap();
    let late = listed.iter().find(|i| i.id == "late").unwrap();
    assert_eq!(late.unacked, 0, "the late node owes nothing");
}

/// `unacked`: events published since the ingestor was first seen, less
/// its acks of those — acks recorded before the worker marked their event
/// published (the report outran the mark) included, before and after the
/// worker's housekeeping settles them.
async fn unacked_counts_acks_that_outran_their_publication(s: S) {
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 5).await;
    let t0 = now();
    let at = |secs| t0 + chrono::Duration::seconds(secs);
    let events = s.claim_events("w", LEASE, 10, t0).await.unwrap();
    let [before, early, acked, late, never] = &events[..] else {
        panic!("five events: {events:?}");
    };
    // Published before the ingestor was first seen: not owed.
    s.mark_published(&[before.id], at(-10), at(-40))
        .await
        .unwrap();
    s.ingestor_heartbeat("i1", "q1", t0).await.unwrap();
    s.record_applied(before.event_id, "i1", at(1))
        .await
        .unwrap();
    // This report outran the mark: recorded while still unpublished.
    assert!(s.record_applied(early.event_id, "i1", at(1)).await.unwrap());
    let rest = [early.id, acked.id, late.id, never.id];
    s.mark_published(&rest, at(2), t0).await.unwrap();
    s.record_applied(acked.event_id, "i1", at(3)).await.unwrap();
    assert_eq!(unacked(&s, "i1").await, 2, "late and never");
    assert_eq!(s.settle_acks().await.unwrap(), 1, "the early ack");
    assert_eq!(unacked(&s, "i1").await, 2, "the same once settled");
    assert_eq!(s.settle_acks().await.unwrap(), 0);
    s.record_applied(late.event_id, "i1", at(4)).await.unwrap();
    assert_eq!(unacked(&s, "i1").await, 1, "never");
    // A node first seen after all of it owes nothing.
    s.ingestor_heartbeat("i2", "q2", at(5)).await.unwrap();
    assert_eq!(unacked(&s, "i2").await, 0);
}

/// `unacked` is kept by counts the database updates as it writes
/// (migration 0009): a long mixed history — events published in batches
/// (some stamped before an ingestor's first sight, as a worker with a slow
/// clock would), ingestors first seen along the way, reports before and
/// after their event's mark, duplicates, reports from nodes not seen yet
/// and for events unknown or purged, settling, purges — against a model
/// of the definition after every step.
async fn unacked_stays_exact_through_a_mixed_history(s: S) {
    let acme = tenant(&s, "acme").await;
    // A fixed sequence (xorshift): the same history on both stores.
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut roll = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    struct Event {
        id: i64,
        event_id: EventId,
        published_at: Option<Timestamp>,
    }
    let mut events: Vec<Event> = Vec::new();
    let mut acks: HashSet<(EventId, String)> = HashSet::new();
    let mut seen: Vec<(String, Timestamp)> = Vec::new();
    let nodes = ["n0", "n1", "n2", "n3", "n4"];
    let mut keys = 0;
    // What the history went through, checked at the end.
    let (mut recorded, mut settled, mut purged_events) = (0, 0, 0);
    for step in 0..240_i64 {
        let t = at(step * 10);
        match roll(6) {
            0 => {
                for _ in 0..=roll(3) {
                    let k = key(&s, &acme, &format!("k{keys}"), &[]).await;
                    keys += 1;
                    revoke(&s, &acme, k.key_id).await;
                }
                let far = at(1_000_000 + step * 100);
                for e in s.claim_events("w", LEASE, 100, far).await.unwrap() {
                    if !events.iter().any(|known| known.event_id == e.event_id) {
                        events.push(Event {
                            id: e.id,
                            event_id: e.event_id,
                            published_at: None,
                        });
                    }
                }
            }
            1 => {
                // A slow clock now and then: stamped before the last sight.
                let stamp = t - chrono::Duration::seconds(if roll(4) == 0 { 25 } else { 0 });
                let batch: Vec<i64> = events
                    .iter()
                    .filter(|e| e.published_at.is_none() && roll(2) == 0)
                    .map(|e| e.id)
                    .collect();
                s.mark_published(&batch, stamp, stamp).await.unwrap();
                for e in events.iter_mut().filter(|e| batch.contains(&e.id)) {
                    e.published_at = Some(stamp);
                }
            }
            2 => {
                let node = nodes[roll(5) as usize];
                s.ingestor_heartbeat(node, "q", t).await.unwrap();
                if !seen.iter().any(|(id, _)| id == node) {
                    seen.push((node.to_owned(), t));
                }
            }
            3 => {
                let mut batch = Vec::new();
                for _ in 0..roll(8) {
                    let node = nodes[roll(5) as usize];
                    let event_id = match (roll(10), events.len()) {
                        (0, _) | (_, 0) => EventId::new(),
                        (_, n) => events[roll(n as u64) as usize].event_id,
                    };
                    batch.push(AppliedReport {
                        event_id,
                        ingestor_id: node.to_owned(),
                        applied_at: t,
                    });
                    if roll(4) == 0 {
                        batch.push(batch[batch.len() - 1].clone());
                    }
                }
                let mut new = 0;
                for r in &batch {
                    let known = events.iter().any(|e| e.event_id == r.event_id);
                    if known && acks.insert((r.event_id, r.ingestor_id.clone())) {
                        new += 1;
                    }
                }
                assert_eq!(s.record_applied_all(&batch).await.unwrap(), new);
                recorded += new;
            }
            4 => {
                settled += s.settle_acks().await.unwrap();
            }
            _ => {
                let before = t - chrono::Duration::seconds(roll(300) as i64);
                let gone: Vec<EventId> = events
                    .iter()
                    .filter(|e| e.published_at.is_some_and(|p| p < before))
                    .map(|e| e.event_id)
                    .collect();
                let purged = s.purge(before).await.unwrap();
                assert_eq!(purged.events, gone.len() as u64);
                purged_events += purged.events;
                events.retain(|e| !gone.contains(&e.event_id));
                acks.retain(|(e, _)| !gone.contains(e));
            }
        }
        let expected: Vec<(String, i64)> = {
            let mut v: Vec<(String, i64)> = seen
                .iter()
                .map(|(node, first)| {
                    let owed = |e: &&Event| e.published_at.is_some_and(|p| p >= *first);
                    let published = events.iter().filter(owed).count() as i64;
                    let acked = events
                        .iter()
                        .filter(owed)
                        .filter(|e| acks.contains(&(e.event_id, node.clone())))
                        .count() as i64;
                    (node.clone(), published - acked)
                })
                .collect();
            v.sort();
            v
        };
        let listed = unacked_by_node(&s).await;
        assert_eq!(listed, expected, "after step {step}");
    }
    assert!(
        recorded > 20 && settled > 0 && purged_events > 20 && seen.len() == nodes.len(),
        "recorded {recorded}, settled {settled}, purged {purged_events}, seen {}",
        seen.len()
    );
}

/// Every ingestor's `unacked`, by id.
async fn unacked_by_node(s: &S) -> Vec<(String, i64)> {
    let list = s.list_ingestors().await.unwrap();
    list.into_iter().map(|i| (i.id, i.unacked)).collect()
}

async fn unacked(s: &S, ingestor: &str) -> i64 {
    let list = s.list_ingestors().await.unwrap();
    list.iter().find(|i| i.id == ingestor).unwrap().unacked
}

trait Micros {
    fn with_nanosecond_micros(self) -> Self;
}
impl Micros for Timestamp {
    fn with_nanosecond_micros(self) -> Self {
        Utc.timestamp_micros(self.timestamp_micros()).unwrap()
    }
}

// ---------------------------------------------------------------- lifecycle

/// The outbox events not yet claimed, by event id.
async fn claim_all(s: &S) -> Vec<OutboxEvent> {
    s.claim_events("lifecycle", LEASE, 100, now())
        .await
        .unwrap()
}

fn audit_of(records: &[keyward_core::store::audit::AuditRecord], request: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.request_id == request)
        .map(|r| format!("{} {} {}", r.actor, r.action, r.target))
        .collect()
}

async fn audit_page(
    s: &S,
    tenant: Option<&TenantId>,
) -> Vec<keyward_core::store::audit::AuditRecord> {
    s.list_audit(&AuditQuery {
        tenant: tenant.cloned(),
        limit: 200,
        ..AuditQuery::default()
    })
    .await
    .unwrap()
}

fn by(actor: &str, request: &str) -> Change {
    Change::new(actor, request, now())
}

/// Every RBAC change writes one `rbac.changed` for its tenant (no key) and
/// one audit record naming the event, in its own transaction; a change
/// refused by the database writes neither.
async fn rbac_changes_emit_events_and_audit(s: S) {
    let acme = tenant(&s, "acme").await;
    claim_all(&s).await;
    let ops = r("ops");
    let steps: Vec<(Change, &str)> = vec![
        (by("alice", "r1"), "role.put ops"),
        (by("alice", "r2"), "user.create bob"),
        (by("alice", "r3"), "user.roles bob"),
        (by("alice", "r4"), "group.put g"),
        (by("alice", "r5"), "group.delete g"),
    ];
    s.put_role(&acme, &ops, &admin_priv(), &steps[0].0)
        .await
        .unwrap();
    s.create_user(&new_user(&acme, "bob", &[]), &steps[1].0)
        .await
        .unwrap();
    s.set_user_roles(&acme, &u("bob"), std::slice::from_ref(&ops), &steps[2].0)
        .await
        .unwrap();
    let spec = GroupSpec {
        roles: vec![ops.clone()],
        users: vec![],
        api_keys: vec![],
    };
    s.put_group(&acme, &g("g"), &spec, &steps[3].0)
        .await
        .unwrap();
    s.delete_group(&acme, &g("g"), &steps[4].0).await.unwrap();
    // Refused: the role is held by bob. No event, no record.
    let refused = by("alice", "r6");
    assert!(matches!(
        s.delete_role(&acme, &ops, &refused).await,
        Err(StoreError::RoleInUse)
    ));

    let events = claim_all(&s).await;
    let rbac: Vec<EventId> = events
        .iter()
        .filter(|e| e.kind == RBAC_CHANGED)
        .map(|e| e.event_id)
        .collect();
    let emitting = [0, 2, 3, 4].map(|i| steps[i].0.event_id);
    assert_eq!(
        rbac, emitting,
        "one rbac.changed per change, in commit order"
    );
    assert!(
        events
            .iter()
            .all(|e| e.key_id.is_none() && e.tenant_id == acme)
    );
    assert!(!events.iter().any(|e| e.event_id == refused.event_id));

    let records = audit_page(&s, Some(&acme)).await;
    for (change, what) in &steps {
        let want = format!("alice {what}");
        assert_eq!(audit_of(&records, &change.request_id), [want]);
        let record = records
            .iter()
            .find(|r| r.request_id == change.request_id)
            .unwrap();
        assert_eq!(record.at, change.at);
        let emitted = emitting.contains(&change.event_id);
        assert_eq!(
            record.event_id,
            emitted.then_some(change.event_id),
            "{what}"
        );
    }
    assert!(
        audit_of(&records, "r6").is_empty(),
        "a rolled-back change left a record"
    );

    // Deleting the role once nothing holds it emits too.
    s.set_user_roles(&acme, &u("bob"), &[], &change())
        .await
        .unwrap();
    let delete = by("alice", "r7");
    s.delete_role(&acme, &ops, &delete).await.unwrap();
    assert!(
        claim_all(&s)
            .await
            .iter()
            .any(|e| e.event_id == delete.event_id)
    );
}

async fn key_update_changes_and_announces(s: S) {
    let acme = tenant(&s, "acme").await;
    let ops = role(&s, &acme, "ops", admin_priv()).await;
    let k = key(&s, &acme, "ci", &[]).await;
    key(&s, &acme, "taken", &[]).await;
    claim_all(&s).await;

    let update = by("alice", "u1");
    let expiry = now() + chrono::Duration::days(1);
    let updated = s
        .update_key(
            &acme,
            k.key_id,
            &KeyUpdate {
                name: Some(KeyName::parse("ci-2").unwrap()),
                roles: Some(vec![ops.clone()]),
                expires_at: Some(Some(expiry)),
            },
            &update,
        )
        .await
        .unwrap();
    assert_eq!(updated.name.as_str(), "ci-2");
    assert_eq!(updated.roles, vec![ops.clone()]);
    assert_eq!(updated.expires_at, Some(expiry.with_nanosecond_micros()));
    let events = claim_all(&s).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].event_id,
            events[0].kind.as_str(),
            events[0].key_id
        ),
        (update.event_id, KEY_UPDATED, Some(k.key_id))
    );
    let records = audit_page(&s, Some(&acme)).await;
    assert_eq!(
        audit_of(&records, "u1"),
        [format!("alice key.update {}", k.key_id)]
    );

    // Clearing the expiry; leaving the rest alone.
    let cleared = s
        .update_key(
            &acme,
            k.key_id,
            &KeyUpdate {
                expires_at: Some(None),
                ..KeyUpdate::default()
            },
            &change(),
        )
        .await
        .unwrap();
    assert_eq!((cleared.expires_at, cleared.name.as_str()), (None, "ci-2"));

    let rename = |name: &str| KeyUpdate {
        name: Some(KeyName::parse(name).unwrap()),
        ..KeyUpdate::default()
    };
    let refused = by("alice", "u3");
    assert!(matches!(
        s.update_key(&acme, k.key_id, &rename("taken"), &refused)
            .await,
        Err(StoreError::DuplicateKeyName)
    ));
    let ghost = KeyUpdate {
        roles: Some(vec![r("ghost")]),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        s.update_key(&acme, k.key_id, &ghost, &refused).await,
        Err(StoreError::UnknownRoles(_))
    ));
    assert!(matches!(
        s.update_key(&acme, KeyId::new(), &rename("x"), &refused)
            .await,
        Err(StoreError::KeyNotFound)
    ));
    revoke(&s, &acme, k.key_id).await;
    assert!(matches!(
        s.update_key(&acme, k.key_id, &rename("x"), &refused).await,
        Err(StoreError::InvalidState)
    ));
    let records = audit_page(&s, Some(&acme)).await;
    assert!(audit_of(&records, "u3").is_empty());
    assert!(
        !claim_all(&s)
            .await
            .iter()
            .any(|e| e.event_id == refused.event_id)
    );
}

fn successor() -> RotatedKey {
    let key_id = KeyId::new();
    RotatedKey {
        key_id,
        start: format!("kw_{key_id}_abcd"),
        secret_hash: keyward_core::digest::KeyDigest::of(&format!("rotated-{key_id}")).encode(),
    }
}

async fn rotation_with_and_without_grace(s: S) {
    let acme = tenant(&s, "acme").await;
    let ops = role(&s, &acme, "ops", admin_priv()).await;
    let ship = role(&s, &acme, "ship", ingest_priv("app-*")).await;
    let expiry = now() + chrono::Duration::days(30);
    let mut nk = new_key(&acme, "ci", std::slice::from_ref(&ops));
    nk.expires_at = Some(expiry);
    let old = s.create_key(&nk, &change()).await.unwrap();
    let spec = GroupSpec {
        roles: vec![ship.clone()],
        users: vec![],
        api_keys: vec![old.key_id],
    };
    s.put_group(&acme, &g("shippers"), &spec, &change())
        .await
        .unwrap();
    claim_all(&s).await;

    // Grace: both active, sharing the name; the old one expires at the
    // grace's end and names its successor.
    let rotate = by("alice", "rot1");
    let next = successor();
    let rotated = s
        .rotate_key(&acme, old.key_id, &next, Duration::from_secs(60), &rotate)
        .await
        .unwrap();
    assert_eq!(rotated.key.key_id, next.key_id);
    assert_eq!(
        (
            rotated.key.name.as_str(),
            rotated.key.roles.clone(),
            rotated.key.replaces
        ),
        ("ci", vec![ops.clone()], Some(old.key_id))
    );
    assert_eq!(
        rotated.key.expires_at,
        Some(expiry.with_nanosecond_micros())
    );
    assert_eq!(rotated.key.created_by, "alice");
    assert_eq!(rotated.old.replaced_by, Some(next.key_id));
    assert_eq!(rotated.old.status, KeyStatus::Active);
    let grace_end = rotated.old.expires_at.unwrap();
    assert!(grace_end <= rotate.at + chrono::Duration::seconds(60) && grace_end > rotate.at);
    let group = s.get_group(&acme, &g("shippers")).await.unwrap();
    assert!(
        group.api_keys.contains(&next.key_id),
        "the successor keeps the group"
    );
    let creds = s.key_credentials(next.key_id).await.unwrap().unwrap();
    let roles: HashSet<String> = creds.grants.iter().map(|g| g.role.to_string()).collect();
    assert_eq!(roles, HashSet::from(["ops".to_owned(), "ship".to_owned()]));
    let events = claim_all(&s).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_id, e.kind.as_str(), e.key_id))
            .collect::<Vec<_>>(),
        [(rotate.event_id, KEY_UPDATED, Some(old.key_id))]
    );
    let records = audit_page(&s, Some(&acme)).await;
    assert_eq!(
        audit_of(&records, "rot1"),
        [format!("alice key.rotate {}", old.key_id)]
    );

    // The name is still the successor's alone: no third key may take it,
    // and a replaced key cannot be rotated again.
    assert!(matches!(
        s.create_key(&new_key(&acme, "ci", &[]), &change()).await,
        Err(StoreError::DuplicateKeyName)
    ));
    assert!(matches!(
        s.rotate_key(&acme, old.key_id, &successor(), Duration::ZERO, &change())
            .await,
        Err(StoreError::InvalidState)
    ));

    // Grace 0: the old key is revoked by the rotation's own event.
    let now_rotate = by("alice", "rot2");
    let third = successor();
    let rotated = s
        .rotate_key(&acme, next.key_id, &third, Duration::ZERO, &now_rotate)
        .await
        .unwrap();
    assert_eq!(rotated.old.status, KeyStatus::Revoked);
    assert_eq!(
        rotated.old.revocation.as_ref().map(|r| r.event_id),
        Some(now_rotate.event_id)
    );
    let events = claim_all(&s).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.event_id, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(now_rotate.event_id, KEY_REVOKED)]
    );
    assert!(matches!(
        s.rotate_key(&acme, next.key_id, &successor(), Duration::ZERO, &change())
            .await,
        Err(StoreError::InvalidState)
    ));
    assert!(matches!(
        s.rotate_key(&acme, KeyId::new(), &successor(), Duration::ZERO, &change())
            .await,
        Err(StoreError::KeyNotFound)
    ));
}

/// Records page newest first by a cursor, filter by tenant, action and
/// actor; refused attempts are there as `denied`; retention purges by age.
async fn audit_lists_filters_and_purges(s: S) {
    let acme = tenant(&s, "acme").await;
    let beta = tenant(&s, "beta").await;
    for i in 0..5 {
        s.create_key(
            &new_key(&acme, &format!("k{i}"), &[]),
            &by("alice", &format!("a{i}")),
        )
        .await
        .unwrap();
    }
    s.create_key(&new_key(&beta, "k", &[]), &by("bob", "b0"))
        .await
        .unwrap();
    s.record_denied(&DeniedAttempt {
        tenant_id: acme.clone(),
        actor: "anonymous".into(),
        action: Action::KeyRevoke,
        target: KeyId::new().to_string(),
        request_id: "d0".into(),
        at: now(),
    })
    .await
    .unwrap();

    let query = |before, action, actor: Option<&str>| AuditQuery {
        tenant: Some(acme.clone()),
        action,
        actor: actor.map(str::to_owned),
        before,
        limit: 3,
    };
    let first = s.list_audit(&query(None, None, None)).await.unwrap();
    assert_eq!(first[0].request_id, "d0", "newest first");
    assert_eq!(first[0].outcome, AuditOutcome::Denied);
    let second = s
        .list_audit(&query(Some(first[2].id), None, None))
        .await
        .unwrap();
    let all: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|r| r.request_id.as_str())
        .collect();
    // acme's own creation record (tenant.create) is there too.
    assert_eq!(&all[..6], ["d0", "a4", "a3", "a2", "a1", "a0"]);
    assert!(all.iter().all(|r| *r != "b0"), "another tenant's records");
    let creates = s
        .list_audit(&query(None, Some(Action::KeyCreate), Some("alice")))
        .await
        .unwrap();
    assert!(
        creates
            .iter()
            .all(|r| r.action == "key.create" && r.actor == "alice")
    );
    assert_eq!(creates.len(), 3);
    let everyone = audit_page(&s, None).await;
    assert!(everyone.iter().any(|r| r.request_id == "b0"));

    assert_eq!(
        s.purge_audit(now() - chrono::Duration::days(1))
            .await
            .unwrap(),
        0
    );
    assert!(
        s.purge_audit(now() + chrono::Duration::seconds(1))
            .await
            .unwrap()
            >= 7
    );
    assert!(audit_page(&s, None).await.is_empty());
}

// ---------------------------------------------------------------- runner

/// An event's status follows its outbox row (pending, published,
/// applied); an unknown or purged event has none.
async fn event_status_follows_the_outbox(s: S) {
    let acme = tenant(&s, "acme").await;
    let k = key(&s, &acme, "ci", &[]).await;
    let change = change();
    let (ev, t0) = (change.event_id, change.at);
    s.revoke_key(&acme, k.key_id, &change).await.unwrap();
    let st = s.event_status(ev).await.unwrap().unwrap();
    assert_eq!(
        (
            st.kind.as_str(),
            &st.tenant_id,
            st.key_id,
            st.state,
            st.attempts
        ),
        ("key.revoked", &acme, Some(k.key_id), EventState::Pending, 0)
    );
    assert!(st.published_at.is_none());

    heartbeat(&s, "i1", t0).await;
    let claimed = s.claim_events("w", LEASE, 10, t0).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|e| e.id).collect();
    s.mark_published(&ids, t0, t0 - chrono::Duration::seconds(30))
        .await
        .unwrap();
    let st = s.event_status(ev).await.unwrap().unwrap();
    assert_eq!(
        (st.state, st.attempts, st.ingestors, st.applied_by),
        (EventState::Published, 0, 1, 0),
        "attempts counts failed ones"
    );
    assert!(st.published_at.is_some());

    s.record_applied(ev, "i1", t0).await.unwrap();
    let st = s.event_status(ev).await.unwrap().unwrap();
    assert_eq!((st.state, st.applied_by), (EventState::Applied, 1));

    assert!(s.event_status(EventId::new()).await.unwrap().is_none());
    s.purge(t0 + chrono::Duration::seconds(1)).await.unwrap();
    assert!(s.event_status(ev).await.unwrap().is_none(), "purged");
}

// ---------------------------------------------------------------- built-in role holders

fn protected<T: std::fmt::Debug>(r: StoreResult<T>) {
    assert!(
        matches!(r, Err(StoreError::ProtectedPrincipal)),
        "expected ProtectedPrincipal, got {r:?}"
    );
}

fn last_superadmin<T: std::fmt::Debug>(r: StoreResult<T>) {
    assert!(
        matches!(r, Err(StoreError::LastSuperadmin)),
        "expected LastSuperadmin, got {r:?}"
    );
}

/// Only a superadmin changes a `_platform` user, key or group holding a
/// built-in role (directly or through a group); nobody removes the last
/// superadmin user. A refused change writes nothing.
async fn builtin_role_holders_belong_to_superadmins(s: S) {
    let p = TenantId::platform();
    let sup = || change().by_superadmin(true);
    let plain = change;
    assert!(
        s.bootstrap_user(&new_user(&p, "root", &[r("superadmin")]))
            .await
            .unwrap()
    );
    let ops = role(&s, &p, "platform-admin", admin_priv()).await;
    let ops = vec![ops];
    s.create_user(&new_user(&p, "ops", &ops), &sup())
        .await
        .unwrap();
    s.create_user(&new_user(&p, "root2", &[r("superadmin")]), &sup())
        .await
        .unwrap();
    s.create_user(&new_user(&p, "member", &[]), &sup())
        .await
        .unwrap();
    let verifier = key(&s, &p, "ingestors", &[r("verifier")]).await;
    let grouped = key(&s, &p, "grouped", &[]).await;
    let spec = GroupSpec {
        roles: vec![r("superadmin")],
        users: vec![u("member")],
        api_keys: vec![grouped.key_id],
    };
    s.put_group(&p, &g("supers"), &spec, &sup()).await.unwrap();

    // A platform admin that is no superadmin: every such change refused.
    let audited = audit_page(&s, Some(&p)).await.len();
    protected(s.set_user_roles(&p, &u("root2"), &ops, &plain()).await);
    protected(s.set_user_roles(&p, &u("member"), &ops, &plain()).await);
    protected(s.delete_user(&p, &u("root2"), &plain()).await);
    protected(s.delete_user(&p, &u("member"), &plain()).await);
    protected(s.revoke_key(&p, verifier.key_id, &plain()).await);
    protected(s.revoke_key(&p, grouped.key_id, &plain()).await);
    let rename = KeyUpdate {
        name: Some(KeyName::parse("renamed").unwrap()),
        roles: None,
        expires_at: None,
    };
    protected(s.update_key(&p, verifier.key_id, &rename, &plain()).await);
    protected(
        s.rotate_key(&p, verifier.key_id, &successor(), Duration::ZERO, &plain())
            .await,
    );
    let emptied = GroupSpec {
        roles: vec![],
        users: vec![],
        api_keys: vec![],
    };
    protected(s.put_group(&p, &g("supers"), &emptied, &plain()).await);
    protected(s.delete_group(&p, &g("supers"), &plain()).await);
    assert_eq!(
        s.get_user(&p, &u("root2")).await.unwrap().roles,
        vec![r("superadmin")]
    );
    assert_eq!(
        s.get_key(&p, verifier.key_id, now()).await.unwrap().status,
        KeyStatus::Active
    );
    assert_eq!(
        s.get_group(&p, &g("supers")).await.unwrap().roles,
        vec![r("superadmin")]
    );
    assert_eq!(
        audit_page(&s, Some(&p)).await.len(),
        audited,
        "refusals write nothing"
    );
    // Group membership changes what a member may do: joining or leaving a
    // group is a change of the member too.
    let add = |users: &[&str], keys: &[KeyId]| GroupSpec {
        roles: ops.clone(),
        users: users.iter().map(|n| u(n)).collect(),
        api_keys: keys.to_vec(),
    };
    protected(
        s.put_group(&p, &g("ops-group"), &add(&["root2"], &[]), &plain())
            .await,
    );
    protected(
        s.put_group(&p, &g("ops-group"), &add(&[], &[verifier.key_id]), &plain())
            .await,
    );
    s.put_group(&p, &g("ops-group"), &add(&["ops"], &[]), &plain())
        .await
        .unwrap();
    s.put_group(&p, &g("ops-group"), &add(&["ops", "root2"], &[]), &sup())
        .await
        .unwrap();
    protected(
        s.put_group(&p, &g("ops-group"), &add(&["ops"], &[]), &plain())
            .await,
    );
    s.put_group(&p, &g("ops-group"), &add(&["ops"], &[]), &sup())
        .await
        .unwrap();
    // What holds no built-in role stays theirs to change, also in `_platform`.
    s.set_user_roles(&p, &u("ops"), &[], &plain())
        .await
        .unwrap();
    s.delete_user(&p, &u("ops"), &plain()).await.unwrap();

    // A superadmin may, until the last superadmin user would go.
    s.set_user_roles(&p, &u("root2"), &[], &sup())
        .await
        .unwrap();
    s.delete_user(&p, &u("root2"), &sup()).await.unwrap();
    s.revoke_key(&p, verifier.key_id, &sup()).await.unwrap();
    s.delete_user(&p, &u("root"), &sup()).await.unwrap();
    // `member` is the last one now, through the group.
    last_superadmin(s.delete_user(&p, &u("member"), &sup()).await);
    last_superadmin(s.delete_group(&p, &g("supers"), &sup()).await);
    last_superadmin(s.put_group(&p, &g("supers"), &emptied, &sup()).await);
    s.set_user_roles(&p, &u("member"), &[r("superadmin")], &sup())
        .await
        .unwrap();
    // Direct now as well: the group may go, the direct role may not.
    s.delete_group(&p, &g("supers"), &sup()).await.unwrap();
    last_superadmin(s.set_user_roles(&p, &u("member"), &[], &sup()).await);
    let left = s.user_grants(&p, &u("member")).await.unwrap();
    assert!(Permissions::from_grants(p.clone(), left).is_superadmin());
}

/// Two superadmins removing each other at once: one wins, the other is
/// refused — never both. Rounds, because the race is between two
/// transactions' reads and commits: without the lock on the `_platform`
/// row, PostgreSQL let both commit in some rounds of every run tried.
async fn last_superadmin_holds_under_concurrent_removals(s: S) {
    let p = TenantId::platform();
    let sup = || change().by_superadmin(true);
    assert!(
        s.bootstrap_user(&new_user(&p, "s0", &[r("superadmin")]))
            .await
            .unwrap()
    );
    let remove = |name: String| {
        let (s, p, change) = (Arc::clone(&s), p.clone(), sup());
        tokio::spawn(async move { s.delete_user(&p, &u(&name), &change).await })
    };
    let mut survivor = "s0".to_owned();
    for round in 1..=30 {
        let other = format!("s{round}");
        s.create_user(&new_user(&p, &other, &[r("superadmin")]), &sup())
            .await
            .unwrap();
        let (a, b) = (remove(survivor.clone()), remove(other.clone()));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        match (&a, &b) {
            (Ok(()), Err(StoreError::LastSuperadmin)) => survivor = other,
            (Err(StoreError::LastSuperadmin), Ok(())) => {}
            _ => panic!("round {round}: {a:?} {b:?}"),
        }
        assert_eq!(s.list_users(&p).await.unwrap().len(), 1, "round {round}");
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = keyward_core::testing::TestDatabase::sqlite().await;
                    super::$name(db.store()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
                        return;
                    };
                    super::$name(db.store()).await;
                }
            )*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    event_status_follows_the_outbox,
    tenants,
    roles_put_get_list_delete,
    roles_are_per_tenant,
    builtin_roles_are_read_only,
    role_in_use_cannot_be_deleted,
    users_crud,
    usernames_are_global_and_writes_are_all_or_nothing,
    bootstrap_happens_once,
    groups_crud_and_grants,
    group_members_must_exist_in_the_tenant,
    keys_create_get,
    key_hash_upgrade_is_compare_and_set,
    many_keys_are_read_in_one_statement,
    key_names_unique_among_active_keys,
    key_creation_is_all_or_nothing,
    key_listing_pages_and_filters,
    expired_keys_list_the_same_swept_or_not,
    key_usage_is_recorded_in_batches,
    revoke_writes_tombstone_and_one_event,
    concurrent_revokes_write_one_event,
    role_deleted_during_key_creation_is_never_half_assigned,
    claim_lease_publish,
    release_returns_leases,
    retry_schedule_and_dead_letters,
    purge_keeps_undelivered_rows,
    concurrent_claimers_never_share_a_row,
    ingestors_acks_and_applied_state,
    nodes_that_joined_after_the_send_are_not_awaited,
    unacked_counts_acks_that_outran_their_publication,
    unacked_stays_exact_through_a_mixed_history,
    rbac_changes_emit_events_and_audit,
    key_update_changes_and_announces,
    rotation_with_and_without_grace,
    audit_lists_filters_and_purges,
    builtin_role_holders_belong_to_superadmins,
    last_superadmin_holds_under_concurrent_removals,
);

/// PostgreSQL: a revoke that commits while a rotation or an update of the
/// same key is deciding wins — the rotation or update answers
/// `InvalidState` and writes nothing. The revoke here holds the key's row
/// (its `UPDATE`, uncommitted) until the other change waits for it, then
/// commits. Checked by removing `FOR UPDATE` from `key_state`: the
/// rotation then read the key as active, waited at its own `UPDATE` and
/// went on to revoke the revoked key again (a second `key.revoked`) and
/// give it a live successor; the update announced a change to a revoked
/// key. (SQLite serialises writers: there the race cannot happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_revoke_committed_during_a_rotation_or_an_update_wins() {
    use sqlx::Connection;
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let s = db.store();
    let acme = tenant(&s, "acme").await;
    let ops = role(&s, &acme, "ops", admin_priv()).await;
    for op in ["rotate", "update"] {
        let k = s
            .create_key(&new_key(&acme, op, std::slice::from_ref(&ops)), &change())
            .await
            .unwrap();
        claim_all(&s).await;
        let mut revoke = sqlx::PgConnection::connect(db.url.as_str()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut revoke).await.unwrap();
        sqlx::query("UPDATE api_keys SET status = 'revoked' WHERE key_id = $1")
            .bind(k.key_id.to_string())
            .execute(&mut revoke)
            .await
            .unwrap();
        let (store, tenant_id, key_id) = (Arc::clone(&s), acme.clone(), k.key_id);
        let renamed = KeyUpdate {
            name: Some(KeyName::parse("renamed").unwrap()),
            ..KeyUpdate::default()
        };
        let other = tokio::spawn(async move {
            if op == "rotate" {
                store
                    .rotate_key(&tenant_id, key_id, &successor(), Duration::ZERO, &change())
                    .await
                    .map(|r| r.key.key_id.to_string())
            } else {
                store
                    .update_key(&tenant_id, key_id, &renamed, &change())
                    .await
                    .map(|k| k.name.to_string())
            }
        });
        wait_for_a_lock_wait(db.url.as_str()).await;
        sqlx::query("COMMIT").execute(&mut revoke).await.unwrap();
        let result = other.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::InvalidState)),
            "{op} of a key revoked meanwhile: {result:?}"
        );
        assert!(claim_all(&s).await.is_empty(), "{op}: wrote an event");
    }
}

/// PostgreSQL: an ingestor's first row and a write that counts for it,
/// committed in either order, are counted once (migration 0009). Each
/// write here is held uncommitted while a node's first heartbeat (at 10)
/// comes: an event's mark stamped at 0, before that first sight (not
/// owed); an ack of an event published at 20 (owed, and acked). The
/// heartbeat waits for the write and counts it. Checked by removing the
/// `FOR UPDATE` from `ingestors_count_at_first_sight`: the heartbeat then
/// counted without the uncommitted write, whose trigger had found no
/// ingestor row, and each node owed one event more than it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_first_heartbeat_waits_for_writes_in_flight() {
    use sqlx::Connection;
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let s = db.store();
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 2).await;
    let events = claim_all(&s).await;
    let (early, late) = (&events[0], &events[1]);
    s.mark_published(&[late.id], at(20), at(20)).await.unwrap();
    let writes = [
        (
            "n-mark",
            "UPDATE outbox SET published_at = $1 WHERE event_id = $2",
            at(0),
            early.event_id,
        ),
        (
            "n-ack",
            "INSERT INTO event_acks (event_id, ingestor_id, applied_at, published_at) \
             VALUES ($2, 'n-ack', $1, $1)",
            at(20),
            late.event_id,
        ),
    ];
    for (node, write, stamp, event) in writes {
        let mut held = sqlx::PgConnection::connect(db.url.as_str()).await.unwrap();
        sqlx::query("BEGIN").execute(&mut held).await.unwrap();
        sqlx::query(write)
            .bind(stamp)
            .bind(event.to_string())
            .execute(&mut held)
            .await
            .unwrap();
        let store = Arc::clone(&s);
        let first_sight =
            tokio::spawn(async move { store.ingestor_heartbeat(node, "q", at(10)).await });
        wait_for_a_lock_wait(db.url.as_str()).await;
        sqlx::query("COMMIT").execute(&mut held).await.unwrap();
        first_sight.await.unwrap().unwrap();
    }
    // Both owe the late event; n-ack acked it.
    let listed = unacked_by_node(&s).await;
    assert_eq!(listed, [("n-ack".to_owned(), 0), ("n-mark".to_owned(), 1)]);
}

/// Polls until a session of this database waits for a lock (at most 5 s:
/// past that the test's assertions say what went wrong).
async fn wait_for_a_lock_wait(url: &str) {
    use sqlx::Connection;
    let mut watch = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// PostgreSQL: an event's mark takes `outbox_totals` before any outbox
/// row. A recording of acks holds it FOR SHARE (taken first) and then
/// locks the events' rows (its foreign-key check, FOR KEY SHARE); a mark
/// that had updated those rows before its trigger waited for the share
/// was a deadlock (40P01, `postgres_unacked_stays_exact_under_concurrent_writers`
/// about one run in ten on a loaded machine). Here the share is held, a
/// mark started and seen waiting: the recording's next step must find the
/// event's row free. Checked with the mark's statement as it was (no
/// `totals` CTE): the row was then locked by the waiting mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_mark_waits_for_the_totals_before_any_outbox_row() {
    use sqlx::Connection;
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let s = db.store();
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 1).await;
    let event = claim_all(&s).await.remove(0);
    let mut recording = sqlx::PgConnection::connect(db.url.as_str()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut recording).await.unwrap();
    sqlx::query("SELECT published FROM outbox_totals FOR SHARE")
        .execute(&mut recording)
        .await
        .unwrap();
    let store = Arc::clone(&s);
    let mark = tokio::spawn(async move { store.mark_published(&[event.id], now(), now()).await });
    wait_for_a_lock_wait(db.url.as_str()).await;
    let row = sqlx::query("SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(event.id)
        .execute(&mut recording)
        .await;
    assert!(
        row.is_ok(),
        "the waiting mark holds the event's row: {row:?}"
    );
    sqlx::query("COMMIT").execute(&mut recording).await.unwrap();
    assert_eq!(mark.await.unwrap().unwrap(), 1);
}

/// PostgreSQL: `unacked`'s counts (migration 0009) under every writer at
/// once — four workers claiming and marking, six report batches of
/// overlapping acks (some before their event's mark), nodes seen for the
/// first time meanwhile, settling and purges — end equal to the
/// definition counted from the rows, and no writer meets a deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unacked_stays_exact_under_concurrent_writers() {
    use sqlx::Connection;
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let s = db.store();
    let acme = tenant(&s, "acme").await;
    revoked_keys(&s, &acme, 120).await;
    let all = claim_all(&s).await;
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    s.release_leases("lifecycle", &ids).await.unwrap();
    let event_ids: Arc<Vec<EventId>> = Arc::new(all.iter().map(|e| e.event_id).collect());
    let nodes = ["n0", "n1", "n2", "n3"];
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let owner = format!("w{w}");
            loop {
                let batch = s.claim_events(&owner, LEASE, 7, now()).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
                s.mark_published(&ids, now(), now()).await.unwrap();
            }
        });
    }
    for r in 0..6_u64 {
        let (s, event_ids) = (Arc::clone(&s), Arc::clone(&event_ids));
        tasks.spawn(async move {
            let mut seed = 0x2545_F491_4F6C_DD1D_u64 + r;
            for _ in 0..40 {
                let mut batch = Vec::new();
                for _ in 0..12 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    batch.push(AppliedReport {
                        event_id: event_ids[(seed % event_ids.len() as u64) as usize],
                        ingestor_id: nodes[(seed >> 32) as usize % nodes.len()].to_owned(),
                        applied_at: now(),
                    });
                }
                s.record_applied_all(&batch).await.unwrap();
            }
        });
    }
    {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            for round in 0..20 {
                for node in &nodes[..(round / 5 + 1).min(nodes.len())] {
                    s.ingestor_heartbeat(node, "q", now()).await.unwrap();
                }
                s.settle_acks().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            for _ in 0..10 {
                s.purge(now() - chrono::Duration::milliseconds(100))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let mut conn = sqlx::PgConnection::connect(db.url.as_str()).await.unwrap();
    let defined: Vec<(String, i64)> = sqlx::query_as(
        "SELECT i.id, \
           (SELECT COUNT(*) FROM outbox o WHERE o.published_at >= i.first_seen_at) \
         - (SELECT COUNT(*) FROM event_acks a JOIN outbox o ON o.event_id = a.event_id \
            WHERE a.ingestor_id = i.id AND o.published_at >= i.first_seen_at) \
         FROM ingestors i ORDER BY i.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let listed = unacked_by_node(&s).await;
    assert_eq!(listed, defined);
    assert_eq!(listed.len(), nodes.len());
}
