//! How an API key's secret is stored: its SHA-256 digest in a
//! self-describing string, `$sha256$<base64>`, compared in constant time.
//!
//! A key's secret carries 256 bits from the OS CSPRNG, so nobody can guess
//! it from its digest and a slow password hash would only add cost (this
//! is what GitHub, Stripe and Unkey do). User passwords are another matter:
//! they are argon2id ([`crate::password`]). Keys written by earlier versions
//! hold an argon2id PHC string; [`StoredSecret`] tells the two apart so that
//! such a key keeps working and is rewritten after its next proof.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};

const PREFIX: &str = "$sha256$";

/// The SHA-256 digest of a key secret. `Debug` never prints it.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The stored form, `$sha256$<base64 without padding>`.
    pub fn encode(&self) -> String {
        format!("{PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }

    /// Parses the stored form; `None` for anything else.
    pub fn parse(stored: &str) -> Option<Self> {
        let b64 = stored.strip_prefix(PREFIX)?;
        let bytes = STANDARD_NO_PAD.decode(b64).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// One byte of the digest, to spread digests over a few slots. Not a
    /// secret: the digest is of a 256-bit random secret.
    pub fn slot_hint(&self) -> u8 {
        self.0[0]
    }

    /// Constant time: how much of a digest matched leaks nothing.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        constant_time_eq::constant_time_eq_32(&self.0, &other.0)
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest([redacted])")
    }
}

/// What a key row's `secret_hash` column holds.
#[derive(Debug, Clone, Copy)]
pub enum StoredSecret<'a> {
    Sha256(KeyDigest),
    /// An argon2id PHC string from an earlier version: proven with the
    /// password hasher once, then rewritten as a [`KeyDigest`].
    Argon2(&'a str),
    /// Neither: a corrupt row. Never matches.
    Unreadable,
}

impl<'a> StoredSecret<'a> {
    pub fn classify(stored: &'a str) -> Self {
        if let Some(d) = KeyDigest::parse(stored) {
            Self::Sha256(d)
        } else if stored.starts_with("$argon2") {
            Self::Argon2(stored)
        } else {
            Self::Unreadable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_match() {
        let d = KeyDigest::of("kw_secret");
        let stored = d.encode();
        assert!(stored.starts_with("$sha256$"), "{stored}");
        assert!(!stored.contains("kw_secret"));
        let back = KeyDigest::parse(&stored).unwrap();
        assert!(back.matches(&d));
        assert!(!back.matches(&KeyDigest::of("kw_secreu")));
        assert_eq!(format!("{d:?}"), "KeyDigest([redacted])");
    }

    #[test]
    fn known_vector() {
        // SHA-256("abc"), base64 without padding.
        assert_eq!(
            KeyDigest::of("abc").encode(),
            "$sha256$ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"
        );
    }

    #[test]
    fn classifies_stored_forms() {
        assert!(matches!(
            StoredSecret::classify(&KeyDigest::of("x").encode()),
            StoredSecret::Sha256(_)
        ));
        assert!(matches!(
            StoredSecret::classify("$argon2id$v=19$m=256,t=1,p=1$c2FsdA$aGFzaA"),
            StoredSecret::Argon2(_)
        ));
        for bad in ["", "$sha256$", "$sha256$!!!", "$sha256$YWJj", "plain"] {
            assert!(
                matches!(StoredSecret::classify(bad), StoredSecret::Unreadable),
                "{bad}"
            );
        }
    }
}
