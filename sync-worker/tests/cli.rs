//! `keyward-sync-worker` refuses bad settings with one line and no echo.

use keyward_tests::assert_rejected;

const EXE: &str = env!("CARGO_BIN_EXE_keyward-sync-worker");

#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    let exe = std::path::Path::new(EXE);
    assert_rejected(exe, &[], &[("KEYWARD_AMQP_URL", "http://x")], None).await;
    assert_rejected(
        exe,
        &[],
        &[("KEYWARD_AMQP_URL", "amqp://u:pw-sekrit@")],
        Some("pw-sekrit"),
    )
    .await;
    assert_rejected(exe, &[], &[("KEYWARD_EXCHANGE", "a b")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_LISTEN", "x")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_DATABASE_URL", "redis://x")], None).await;
}
