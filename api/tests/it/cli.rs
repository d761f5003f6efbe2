//! `keyward-api` refuses bad settings with one line and no echo.

use keyward_tests::assert_rejected;

const EXE: &str = env!("CARGO_BIN_EXE_keyward-api");

#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    let exe = std::path::Path::new(EXE);
    assert_rejected(exe, &[], &[("KEYWARD_LISTEN", "not-an-address")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_DATABASE_URL", "mysql://h/db")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_KEY_PREFIX", "NO")], None).await;
    assert_rejected(
        exe,
        &[],
        &[("KEYWARD_ADMIN_PASSWORD", "kw_sekrit")],
        Some("kw_sekrit"),
    )
    .await;
    assert_rejected(exe, &[], &[("KEYWARD_ARGON2_MEMORY_KIB", "1")], None).await;
    assert_rejected(exe, &["--no-such-flag"], &[], None).await;
    assert_rejected(exe, &["no-such-command"], &[], None).await;
}

// ------------------------------------------------- administration commands

mod admin {
    use keyward_api::admin_cli::{
        ListKeys, OutboxCommand, Output, RevokeKey, TenantsCommand, UsersCommand, list_keys,
        outbox, revoke_key, tenants, users,
    };
    use keyward_core::password::{Argon2Settings, PasswordHasher};
    use serde_json::{Value, json};

    use crate::support::{ADMIN, As, TestApp};

    const JSON: Output = Output { json: true };
    const TABLE: Output = Output { json: false };

    /// The commands change state through the same store operations as the
    /// API: the same rows, audit records (actor `cli`) and events.
    async fn admin_commands_write_what_the_api_writes(app: TestApp) {
        let store = app.store();
        let store = store.as_ref();
        let out = tenants(
            store,
            &TenantsCommand::Create {
                id: "acme".into(),
                name: Some("Acme".into()),
                output: TABLE,
            },
        )
        .await
        .unwrap();
        assert_eq!(out, "created tenant acme\n");
        let listed: Value = serde_json::from_str(
            &tenants(store, &TenantsCommand::List { output: JSON })
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(
            listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == "acme")
        );

        let (s, _) = app
            .put(
                "/api/v1/tenants/acme/roles/admins",
                ADMIN,
                json!({"privileges": [{"privilege": "admin"}]}),
            )
            .await;
        assert_eq!(s, 201);
        let password = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(password.path(), "a password from a file\n").unwrap();
        let hasher = PasswordHasher::new(Argon2Settings::default()).unwrap();
        let create_user = |password_file| UsersCommand::Create {
            tenant: "acme".into(),
            username: "acme-admin".into(),
            roles: vec!["admins".into()],
            password_file,
            output: TABLE,
        };
        let out = users(store, &hasher, &create_user(password.path().into()))
            .await
            .unwrap();
        assert_eq!(out, "created user acme-admin\n");
        // The user works over HTTP with the password from the file.
        let acme_admin = As::User("acme-admin", "a password from a file");
        let (s, _) = app
            .put(
                "/api/v1/tenants/acme/roles/shippers",
                acme_admin,
                json!({"privileges": [{"privilege": "ingestor"}]}),
            )
            .await;
        assert_eq!(s, 201);
        let short = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(short.path(), "kw_short").unwrap();
        let e = users(store, &hasher, &create_user(short.path().into()))
            .await
            .unwrap_err();
        assert!(
            !format!("{e:#}").contains("kw_short"),
            "never echoed: {e:#}"
        );

        let (s, key) = app
            .post(
                "/api/v1/tenants/acme/apikeys",
                acme_admin,
                json!({"name": "ci", "roles": ["shippers"]}),
            )
            .await;
        assert_eq!(s, 201, "{key}");
        let key_id = key["keyId"].as_str().unwrap().to_owned();
        let listed = list_keys(
            store,
            &ListKeys {
                tenant: "acme".into(),
                status: "active".into(),
                limit: 50,
                output: TABLE,
            },
        )
        .await
        .unwrap();
        assert!(listed.starts_with("KEY ID"), "{listed}");
        assert!(
            listed.contains(&key_id) && listed.contains("active"),
            "{listed}"
        );
        assert!(
            !listed.contains(key["secret"].as_str().unwrap()),
            "never a secret"
        );

        let revoke = RevokeKey {
            tenant: "acme".into(),
            key_id: key_id.clone(),
            output: JSON,
        };
        let revoked: Value =
            serde_json::from_str(&revoke_key(store, &revoke).await.unwrap()).unwrap();
        assert_eq!(revoked["status"], "revoked");
        assert_eq!(revoked["revokedBy"], "cli");
        let event = revoked["revocation"]["eventId"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, body) = app.get(&format!("/api/v1/events/{event}"), ADMIN).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["type"], "key.revoked");
        assert_eq!(body["state"], "pending");
        // A second revoke changes nothing and says so.
        let again = RevokeKey {
            output: TABLE,
            ..revoke
        };
        assert!(
            revoke_key(store, &again)
                .await
                .unwrap()
                .contains("already revoked")
        );

        let status: Value = serde_json::from_str(
            &outbox(store, &OutboxCommand::Status { output: JSON })
                .await
                .unwrap(),
        )
        .unwrap();
        // The revocation, and the two role changes made over HTTP.
        assert_eq!(status["pending"], 3, "{status}");
        assert_eq!(status["dead"], 0);
        assert_eq!(
            status["byType"],
            json!([
                {"type": "key.revoked", "pending": 1, "dead": 0},
                {"type": "rbac.changed", "pending": 2, "dead": 0},
            ])
        );
        let table = outbox(store, &OutboxCommand::Status { output: TABLE })
            .await
            .unwrap();
        assert!(table.contains("key.revoked") && table.contains("oldest pending event"));
        let retried: Value = serde_json::from_str(
            &outbox(store, &OutboxCommand::RetryDead { output: JSON })
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(retried["retried"], 0);

        // Break-glass: a new password, from standard input's stand-in.
        let new_password = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(new_password.path(), "the replacement password\n").unwrap();
        let set = UsersCommand::SetPassword {
            username: "acme-admin".into(),
            password_file: new_password.path().into(),
            output: TABLE,
        };
        let out = users(store, &hasher, &set).await.unwrap();
        assert_eq!(out, "password of acme-admin replaced\n");
        let (s, _) = app
            .get(
                "/api/v1/tenants/acme/roles",
                As::User("acme-admin", "the replacement password"),
            )
            .await;
        assert_eq!(s, 200, "the new password works");

        // Audited as the API's changes are, under the actor `cli`.
        let (s, audit) = app.get("/api/v1/audit?actor=cli", ADMIN).await;
        assert_eq!(s, 200);
        let actions: Vec<&str> = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "user.password",
                "key.revoke",
                "user.create",
                "tenant.create"
            ]
        );
        let record = &audit["items"][1];
        assert_eq!(record["target"], key_id.as_str());
        assert_eq!(record["eventId"], event.as_str());
    }

    on_both_stores!(admin_commands_write_what_the_api_writes);
}

/// The commands through the real binary: table and JSON on stdout, a bad
/// argument in one line.
#[tokio::test]
async fn admin_commands_run_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db?mode=rwc", dir.path().display());
    let run = |args: &[&str]| {
        std::process::Command::new(EXE)
            .args(args)
            .env("KEYWARD_DATABASE_URL", &url)
            .env("KEYWARD_ADMIN_PASSWORD", "a long enough password")
            .output()
            .unwrap()
    };
    let out = run(&["tenants", "create", "--id", "acme"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "created tenant acme\n"
    );
    let out = run(&["tenants", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["_platform", "acme"]);
    let out = run(&["outbox", "status"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("none pending"));
    let out = run(&["keys", "revoke", "--tenant", "acme", "--key-id", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--key-id"), "{err}");
}
