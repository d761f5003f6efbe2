//! Page cursors (keys and audit records): a value or `400`, never a panic;
//! a cursor that decodes is the encoding of what it decoded to.
#![no_main]

use keyward_api::routes::{decode_cursor, encode_cursor};
use keyward_core::ids::{AuditId, KeyId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = decode_cursor(text, KeyId::parse) {
        assert_eq!(
            decode_cursor(&encode_cursor(&id), KeyId::parse).ok(),
            Some(id)
        );
    }
    let _ = decode_cursor(text, AuditId::parse);
});
