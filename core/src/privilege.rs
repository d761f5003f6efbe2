//! Privileges and the stream resources they may be limited to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::InvalidValue;

/// What a role may let its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PrivilegeKind {
    /// Everything, in every tenant. Built-in role of `_platform` only.
    Superadmin,
    /// May call `POST /api/v1/verify`. Built-in role of `_platform` only.
    Verifier,
    Admin,
    Editor,
    Writer,
    Reader,
    Ingestor,
}

impl PrivilegeKind {
    pub const ALL: [PrivilegeKind; 7] = [
        Self::Superadmin,
        Self::Verifier,
        Self::Admin,
        Self::Editor,
        Self::Writer,
        Self::Reader,
        Self::Ingestor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Superadmin => "superadmin",
            Self::Verifier => "verifier",
            Self::Admin => "admin",
            Self::Editor => "editor",
            Self::Writer => "writer",
            Self::Reader => "reader",
            Self::Ingestor => "ingestor",
        }
    }

    /// Only the built-in `_platform` roles hold these; no tenant role may.
    pub fn is_builtin_only(self) -> bool {
        matches!(self, Self::Superadmin | Self::Verifier)
    }

    /// Whether a `resource.stream` may narrow this privilege.
    pub fn takes_stream(self) -> bool {
        matches!(self, Self::Writer | Self::Reader | Self::Ingestor)
    }
}

impl fmt::Display for PrivilegeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrivilegeKind {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(InvalidValue::new("privilege", "unknown privilege"))
    }
}

/// A stream name or a glob over stream names where `*` matches any run of
/// characters, e.g. `app-*`. `^[A-Za-z0-9*][A-Za-z0-9._*-]{0,127}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamPattern(String);

crate::ids::string_schema!(StreamPattern, "^[A-Za-z0-9*][A-Za-z0-9._*-]{0,127}$");

impl StreamPattern {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let field = "resource.stream";
        if value.is_empty() || value.len() > 128 {
            return Err(InvalidValue::new(field, "must be 1 to 128 characters"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*');
        if value.starts_with(['.', '_', '-']) || !value.chars().all(allowed) {
            return Err(InvalidValue::new(
                field,
                "may hold only letters, digits, '.', '_', '-' and '*'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Glob match: `*` matches any (possibly empty) run of characters;
    /// everything else matches itself. Iterative, linear in practice, with
    /// no recursion a hostile pattern could blow up.
    pub fn matches(&self, stream: &str) -> bool {
        let (p, s) = (self.0.as_bytes(), stream.as_bytes());
        let (mut pi, mut si) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                backtrack = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && p[pi] == s[si] {
                pi += 1;
                si += 1;
            } else if let Some((star, matched)) = backtrack {
                pi = star + 1;
                si = matched + 1;
                backtrack = Some((star, matched + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

impl fmt::Display for StreamPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The resource a privilege is limited to: `{"stream": "app-*"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub stream: StreamPattern,
}

/// One privilege of a role, optionally limited to streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Privilege {
    pub privilege: PrivilegeKind,
    #[serde(default)]
    pub resource: Option<Resource>,
}

impl Privilege {
    pub fn new(kind: PrivilegeKind, stream: Option<StreamPattern>) -> Self {
        Self {
            privilege: kind,
            resource: stream.map(|stream| Resource { stream }),
        }
    }

    pub fn stream(&self) -> Option<&StreamPattern> {
        self.resource.as_ref().map(|r| &r.stream)
    }

    /// Checks that a tenant role may hold this privilege: no built-in-only
    /// privileges, and a stream only where the privilege takes one.
    pub fn check_for_tenant_role(&self) -> Result<(), InvalidValue> {
        if self.privilege.is_builtin_only() {
            return Err(InvalidValue::new(
                "privileges",
                "superadmin and verifier belong to the built-in roles only",
            ));
        }
        if self.resource.is_some() && !self.privilege.takes_stream() {
            return Err(InvalidValue::new(
                "privileges",
                "only writer, reader and ingestor take a resource",
            ));
        }
        Ok(())
    }

    /// Whether this privilege covers `stream` (no resource: every stream).
    pub fn covers_stream(&self, stream: &str) -> bool {
        self.stream().is_none_or(|p| p.matches(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pat(p: &str) -> StreamPattern {
        StreamPattern::parse(p).unwrap()
    }

    #[test]
    fn glob_examples() {
        assert!(pat("app-*").matches("app-logs"));
        assert!(pat("app-*").matches("app-"));
        assert!(!pat("app-*").matches("ap"));
        assert!(!pat("app-*").matches("web-app-logs"));
        assert!(pat("*").matches("anything"));
        assert!(pat("*-logs").matches("app-logs"));
        assert!(pat("a*b*c").matches("aXXbYYc"));
        assert!(!pat("a*b*c").matches("aXXbYY"));
        assert!(pat("app-logs").matches("app-logs"));
        assert!(!pat("app-logs").matches("app-logs2"));
    }

    #[test]
    fn stream_pattern_rejects_odd_input() {
        for bad in ["", "-a", "a b", "a/b", "a\0", &"a".repeat(129)] {
            assert!(StreamPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_roles_cannot_hold_builtin_privileges() {
        let p = Privilege::new(PrivilegeKind::Superadmin, None);
        assert!(p.check_for_tenant_role().is_err());
        let p = Privilege::new(PrivilegeKind::Admin, Some(pat("x")));
        assert!(p.check_for_tenant_role().is_err());
        let p = Privilege::new(PrivilegeKind::Ingestor, Some(pat("app-*")));
        assert!(p.check_for_tenant_role().is_ok());
    }

    #[test]
    fn privilege_json_shape() {
        let p: Privilege =
            serde_json::from_str(r#"{"privilege":"ingestor","resource":{"stream":"app-*"}}"#)
                .unwrap();
        assert_eq!(
            p,
            Privilege::new(PrivilegeKind::Ingestor, Some(pat("app-*")))
        );
        assert!(serde_json::from_str::<Privilege>(r#"{"privilege":"root"}"#).is_err());
    }

    proptest! {
        #[test]
        fn literal_pattern_matches_only_itself(s in "[a-z0-9.-]{1,20}", t in "[a-z0-9.-]{1,20}") {
            let name = format!("a{s}");
            let p = pat(&name);
            prop_assert!(p.matches(&name));
            prop_assert_eq!(p.matches(&format!("a{t}")), s == t);
        }

        #[test]
        fn star_suffix_is_prefix_match(prefix in "[a-z]{1,10}", rest in "[a-z0-9-]{0,10}", other in "[a-z0-9-]{0,20}") {
            let p = pat(&format!("{prefix}*"));
            let name = format!("{prefix}{rest}");
            prop_assert!(p.matches(&name));
            prop_assert_eq!(p.matches(&other), other.starts_with(&prefix));
        }

        #[test]
        fn star_infix_matches_any_middle(a in "[a-z]{1,5}", mid in "[a-z*]{0,10}", b in "[a-z]{1,5}") {
            let p = pat(&format!("{a}*{b}"));
            let s = format!("{a}{}{b}", mid.replace('*', ""));
            prop_assert!(p.matches(&s));
        }
    }
}
