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
