//! The API key format: `{prefix}_{keyId}_{random}{checksum}`.
//!
//! * `prefix`: `[a-z]{1,8}`, configurable, default `kw`;
//! * `keyId`: the key's ULID;
//! * `random`: 43 base62 characters from the OS CSPRNG (≥ 256 bits);
//! * `checksum`: 6 base62 characters of CRC32 over everything before it.
//!
//! The checksum lets every component reject a mistyped or made-up token
//! without any I/O; it is no secret and proves nothing about the key.

use std::fmt;
use std::str::FromStr;

use crate::ids::{InvalidValue, KeyId};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const RANDOM_LEN: usize = 43;
pub const CHECKSUM_LEN: usize = 6;
const START_RANDOM_CHARS: usize = 4;

/// The configurable first part of every token, `[a-z]{1,8}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if Self::is_valid(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidValue::new("keyPrefix", "must be 1 to 8 letters a-z"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_valid(value: &str) -> bool {
        (1..=8).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_lowercase())
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self("kw".to_owned())
    }
}

impl FromStr for KeyPrefix {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a token. Says nothing about any stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the API key is not of the expected shape")]
    Malformed,
    #[error("the API key's checksum does not match")]
    BadChecksum,
}

/// A well-formed token whose checksum matched. Holding one says nothing
/// about whether the key exists; its `Debug` hides the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    full: String,
    prefix_len: usize,
    key_id: KeyId,
}

impl ApiKeyToken {
    /// A new token for `key_id` with 43 random base62 characters drawn from
    /// the OS CSPRNG by rejection sampling (no modulo bias).
    pub fn generate(prefix: &KeyPrefix, key_id: KeyId) -> Result<Self, getrandom::Error> {
        let mut random = String::with_capacity(RANDOM_LEN);
        let mut buf = [0u8; 64];
        while random.len() < RANDOM_LEN {
            getrandom::fill(&mut buf)?;
            // 248 = 4 × 62: bytes at or above it would favour the first symbols.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if random.len() == RANDOM_LEN {
                    break;
                }
                random.push(BASE62[usize::from(b % 62)] as char);
            }
        }
        let mut full = format!("{prefix}_{key_id}_{random}");
        let sum = checksum(&full);
        full.extend(sum.iter().map(|&b| char::from(b)));
        Ok(Self {
            full,
            prefix_len: prefix.as_str().len(),
            key_id,
        })
    }

    /// Parses and checks a token without I/O.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        let (key_id, prefix_len) = Self::checked(value)?;
        Ok(Self {
            full: value.to_owned(),
            prefix_len,
            key_id,
        })
    }

    /// The key id of `value` if it is a well-formed token whose checksum
    /// matches: what `parse` checks, without keeping a copy of the secret
    /// (verification's hot path needs only the id, and hashes `value`
    /// itself).
    pub fn key_id_of(value: &str) -> Result<KeyId, TokenError> {
        Self::checked(value).map(|(key_id, _)| key_id)
    }

    /// The key id and the prefix's length.
    fn checked(value: &str) -> Result<(KeyId, usize), TokenError> {
        let (prefix, rest) = value.split_once('_').ok_or(TokenError::Malformed)?;
        if !KeyPrefix::is_valid(prefix) {
            return Err(TokenError::Malformed);
        }
        let (id, tail) = rest.split_once('_').ok_or(TokenError::Malformed)?;
        let key_id = KeyId::parse(id).map_err(|_| TokenError::Malformed)?;
        if tail.len() != RANDOM_LEN + CHECKSUM_LEN
            || !tail.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TokenError::Malformed);
        }
        let (body, sum) = value.split_at(value.len() - CHECKSUM_LEN);
        if checksum(body) != sum.as_bytes() {
            return Err(TokenError::BadChecksum);
        }
        Ok((key_id, prefix.len()))
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The whole token: the secret. Handle with care; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.full
    }

    /// The token up to and including the first 4 characters of `random`:
    /// safe to show, enough for a person to tell keys apart.
    pub fn start(&self) -> String {
        // prefix + '_' + 26 + '_' + 4
        self.full[..self.prefix_len + 1 + 26 + 1 + START_RANDOM_CHARS].to_owned()
    }
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyToken({}…[redacted])", self.start())
    }
}

/// The token holds the whole secret: wiped when dropped.
impl Drop for ApiKeyToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.full);
    }
}

/// CRC32 of `body` as 6 base62 digits, most significant first.
/// An array, not a String: tokens are parsed on every verify.
fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so nothing is left over; digits are ASCII by construction.
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> ApiKeyToken {
        ApiKeyToken::generate(&KeyPrefix::default(), KeyId::new()).unwrap()
    }

    #[test]
    fn generated_tokens_round_trip() {
        let t = token();
        let s = t.expose_secret();
        assert_eq!(s.len(), 2 + 1 + 26 + 1 + RANDOM_LEN + CHECKSUM_LEN);
        let parsed = ApiKeyToken::parse(s).unwrap();
        assert_eq!(parsed.key_id(), t.key_id());
        assert_eq!(parsed.start(), t.start());
        assert!(s.starts_with(&t.start()));
        assert_eq!(t.start().len(), 2 + 1 + 26 + 1 + 4);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = token();
        let dbg = format!("{t:?}");
        assert!(!dbg.contains(&t.expose_secret()[t.start().len()..]));
    }

    #[test]
    fn custom_prefix() {
        let p = KeyPrefix::parse("acme").unwrap();
        let t = ApiKeyToken::generate(&p, KeyId::new()).unwrap();
        assert!(t.expose_secret().starts_with("acme_"));
        assert!(ApiKeyToken::parse(t.expose_secret()).is_ok());
        for bad in ["", "Kw", "abcdefghi", "k1"] {
            assert!(KeyPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_shapes() {
        let t = token();
        let s = t.expose_secret();
        for bad in [
            "",
            "kw",
            "kw_",
            &s[..s.len() - 1],
            &format!("{s}x"),
            &s.replacen("kw_", "KW_", 1),
            &s.replacen("kw_", "_", 1),
            &s.to_lowercase(),
            "kw_01ARZ3NDEKTSV4RRFFQ69G5FAV_short",
        ] {
            assert_eq!(ApiKeyToken::parse(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn checksum_is_fixed_width_base62() {
        for body in ["", "a", "kw_x", &"z".repeat(100)] {
            let c = checksum(body);
            assert_eq!(c.len(), CHECKSUM_LEN);
            assert!(c.iter().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    /// The random part draws every symbol (a biased or truncated alphabet
    /// would show up as missing symbols over a few thousand draws).
    #[test]
    fn random_part_uses_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = token();
            let s = t.expose_secret();
            let random = &s[30..30 + RANDOM_LEN];
            seen.extend(random.bytes());
        }
        assert_eq!(seen.len(), 62);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any single-character change is caught, by shape or checksum.
        #[test]
        fn any_single_change_is_rejected(pos in 0usize..78, sym in 0usize..62) {
            let t = token();
            let s = t.expose_secret();
            let pos = pos % s.len();
            let replacement = BASE62[sym];
            prop_assume!(s.as_bytes()[pos] != replacement);
            let mut bytes = s.as_bytes().to_vec();
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(ApiKeyToken::parse(&changed).is_err());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,100}") {
            let _ = ApiKeyToken::parse(&s);
        }

        #[test]
        fn round_trip_any_prefix(prefix in "[a-z]{1,8}") {
            let p = KeyPrefix::parse(&prefix).unwrap();
            let t = ApiKeyToken::generate(&p, KeyId::new()).unwrap();
            let back = ApiKeyToken::parse(t.expose_secret()).unwrap();
            prop_assert_eq!(back, t);
        }
    }
}
