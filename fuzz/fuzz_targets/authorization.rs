//! The `Authorization` header parser: Basic (base64 of UTF-8
//! `username:password`) or Bearer; anything else `401`. Never a panic, and
//! a Basic pair splits at its first `:`.
#![no_main]

use keyward_api::auth::{Presented, parse_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    match parse_authorization(header) {
        Ok(Presented::Basic(pair)) => assert!(!pair.username().contains(':')),
        Ok(Presented::Bearer(key)) => assert!(header.contains(key)),
        Err(e) => assert_eq!(e.code.as_str(), "unauthenticated"),
    }
});
