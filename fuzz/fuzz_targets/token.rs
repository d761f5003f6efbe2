//! The API key parser and its checksum: any string either parses into a
//! token whose parts agree with it, or is refused; never a panic.
#![no_main]

use keyward_core::token::ApiKeyToken;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = ApiKeyToken::parse(text) {
        // What parsed must describe the input it came from.
        assert!(text.contains(&token.key_id().to_string()));
        assert!(text.starts_with(&token.start()));
        assert_eq!(token.expose_secret(), text);
        let again = ApiKeyToken::parse(token.expose_secret()).expect("a parsed token parses again");
        assert_eq!(again.key_id(), token.key_id());
    }
});
