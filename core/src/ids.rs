//! Identifiers and names that parse: holding one of these types proves the
//! value is well formed, so nothing past the edge of the system re-checks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Why a value was refused. `field` names the input, for `details.field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: &'static str,
}

impl InvalidValue {
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`: roles, groups, users and key names.
fn check_name(field: &'static str, value: &str) -> Result<(), InvalidValue> {
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok {
        return Err(InvalidValue::new(
            field,
            "must start with a letter or digit",
        ));
    }
    if value.len() > 64 {
        return Err(InvalidValue::new(field, "must be at most 64 characters"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(InvalidValue::new(
            field,
            "may hold only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// The OpenAPI schema of a string newtype: a string with its pattern.
macro_rules! string_schema {
    ($name:ident, $pattern:literal) => {
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some($pattern))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use string_schema;

/// Declares a string newtype whose only constructor is `parse`.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $pattern:literal, $check:expr) => {
        string_schema!($name, $pattern);

        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                let check: fn(&'static str, &str) -> Result<(), InvalidValue> = $check;
                check($field, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A tenant id, `^[a-z0-9][a-z0-9-]{0,62}$`, or the reserved `_platform`.
    TenantId,
    "tenant",
    "^([a-z0-9][a-z0-9-]{0,62}|_platform)$",
    |field, value| {
        if value == TenantId::PLATFORM {
            return Ok(());
        }
        let mut chars = value.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !first_ok {
            return Err(InvalidValue::new(field, "must start with a lower-case letter or digit"));
        }
        if value.len() > 63 {
            return Err(InvalidValue::new(field, "must be at most 63 characters"));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(InvalidValue::new(field, "may hold only a-z, 0-9 and '-'"));
        }
        Ok(())
    }
);
name_type!(
    /// A username, unique across the whole service.
    Username,
    "username",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    check_name
);
name_type!(
    /// A role name, unique within its tenant.
    RoleName,
    "role",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    check_name
);
name_type!(
    /// A group name, unique within its tenant.
    GroupName,
    "group",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    check_name
);
name_type!(
    /// A key name, unique among the tenant's active keys.
    KeyName,
    "name",
    "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    check_name
);

impl TenantId {
    /// The tenant of the service's own operators.
    pub const PLATFORM: &'static str = "_platform";

    pub fn platform() -> Self {
        Self(Self::PLATFORM.to_owned())
    }

    pub fn is_platform(&self) -> bool {
        self.0 == Self::PLATFORM
    }
}

impl RoleName {
    pub const SUPERADMIN: &'static str = "superadmin";
    pub const VERIFIER: &'static str = "verifier";
}

/// Parses a canonical ULID: 26 upper-case Crockford base32 characters, as
/// the `ulid` crate prints them. Lower case or ambiguous letters are refused
/// so that one id has exactly one spelling (it is a map key and a path).
fn parse_ulid(field: &'static str, value: &str) -> Result<Ulid, InvalidValue> {
    let bad = || {
        InvalidValue::new(
            field,
            "must be a ULID (26 upper-case Crockford base32 characters)",
        )
    };
    if value.len() != ulid::ULID_LEN {
        return Err(bad());
    }
    let id = Ulid::from_string(value).map_err(|_| bad())?;
    // Only the canonical spelling: one id, one string (no lower case, no
    // I/L/O read as 1/1/0). Compared on the stack: key ids are parsed on
    // every verify.
    let mut canonical = [0u8; ulid::ULID_LEN];
    if id.array_to_str(&mut canonical) != value {
        return Err(bad());
    }
    Ok(id)
}

/// A new ULID, greater than every other this process made: ids made in
/// the same millisecond still sort in creation order (listings are newest
/// first by id).
fn monotonic_ulid() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    // Overflow needs 2^80 ids in one millisecond; a plain one then.
    generator.generate().unwrap_or_else(|_| Ulid::generate())
}

macro_rules! ulid_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        string_schema!($name, "^[0-7][0-9A-HJKMNP-TV-Z]{25}$");

        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub fn new() -> Self {
                Self(monotonic_ulid())
            }

            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                parse_ulid($field, value).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

ulid_type!(
    /// The id of an API key; also the middle part of its token.
    KeyId,
    "keyId"
);
ulid_type!(
    /// The id of an outbox event; the AMQP `message_id`.
    EventId,
    "eventId"
);
ulid_type!(
    /// The id of an audit record: ordering by id is ordering by time.
    AuditId,
    "id"
);

/// A user's password: 12 to 256 characters. Its `Debug` shows nothing;
/// it is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let n = value.chars().count();
        if !(12..=256).contains(&n) {
            return Err(InvalidValue::new(
                "password",
                "must be 12 to 256 characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_sort_in_creation_order() {
        let ids: Vec<KeyId> = (0..10_000).map(|_| KeyId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tenant_ids() {
        for ok in ["a", "acme", "acme-2", "0", "_platform", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "Acme",
            "a_b",
            "a b",
            "_other",
            &"a".repeat(64),
            "a\0",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "Log.Shippers_1-x", &"a".repeat(64)] {
            assert!(RoleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a b", "é", &"a".repeat(65), "%00"] {
            assert!(RoleName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(KeyName::parse("").unwrap_err().field, "name");
    }

    #[test]
    fn ulids_are_canonical() {
        let id = KeyId::new();
        assert_eq!(KeyId::parse(&id.to_string()).unwrap(), id);
        assert!(KeyId::parse(&id.to_string().to_lowercase()).is_err());
        // Crockford reads O as 0 and I/L as 1: one id, one spelling.
        let zero = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert!(KeyId::parse(zero).is_ok());
        assert!(KeyId::parse(&zero.replacen('0', "O", 1)).is_err());
        assert!(KeyId::parse(&zero.replacen('1', "L", 1)).is_err());
        assert!(
            KeyId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ").is_err(),
            "overflow"
        );
        assert!(KeyId::parse("not-a-ulid").is_err());
    }

    #[test]
    fn password_bounds_and_debug() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse(&"x".repeat(257)).is_err());
        let p = Password::parse("correct horse battery").unwrap();
        assert_eq!(format!("{p:?}"), "Password([redacted])");
    }
}
