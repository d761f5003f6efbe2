//! `keyward-ingestor` refuses bad settings with one line and no echo.

use keyward_tests::assert_rejected;

const EXE: &str = env!("CARGO_BIN_EXE_keyward-ingestor");

#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    let exe = std::path::Path::new(EXE);
    let secret = "kw_not-a-real-key-sekrit";
    assert_rejected(exe, &[], &[("KEYWARD_VERIFIER_KEY", secret)], Some(secret)).await;
    assert_rejected(exe, &[], &[("KEYWARD_API_URL", "ftp://x")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_INGESTOR_ID", "a b")], None).await;
    assert_rejected(exe, &[], &[("KEYWARD_AMQP_URL", "amqps://h/")], None).await;
}
