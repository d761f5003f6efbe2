//! RBAC evaluation as pure functions over grants read from the store.
//!
//! A principal's effective roles are its direct roles plus the roles of
//! every group it belongs to. The store hands over the grants as they are
//! *now*; nothing here caches, so a change takes effect on the next decision.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::ids::{GroupName, RoleName, TenantId};
use crate::privilege::{Privilege, PrivilegeKind};

/// Where a role came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Grant {
    Direct,
    Group { group: GroupName },
}

/// One role reaching a principal one way, with the role's privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub role: RoleName,
    pub privileges: Vec<Privilege>,
    pub via: Grant,
}

/// A role the principal holds, and every way it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRole {
    pub name: RoleName,
    pub privileges: Vec<Privilege>,
    pub granted_by: Vec<Grant>,
}

/// Everything a principal of `tenant` may do, as of the read that built it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Permissions {
    pub tenant: TenantId,
    pub roles: Vec<EffectiveRole>,
}

impl Permissions {
    /// Folds grants into effective roles: direct ∪ group roles, one entry
    /// per role name, sorted by name, provenance direct first.
    pub fn from_grants(tenant: TenantId, grants: impl IntoIterator<Item = RoleGrant>) -> Self {
        let mut by_role: BTreeMap<RoleName, (Vec<Privilege>, BTreeSet<Grant>)> = BTreeMap::new();
        for g in grants {
            let entry = by_role
                .entry(g.role)
                .or_insert_with(|| (g.privileges, BTreeSet::new()));
            entry.1.insert(g.via);
        }
        let roles = by_role
            .into_iter()
            .map(|(name, (privileges, via))| EffectiveRole {
                name,
                privileges,
                granted_by: via.into_iter().collect(),
            })
            .collect();
        Self { tenant, roles }
    }

    pub fn role_names(&self) -> Vec<RoleName> {
        self.roles.iter().map(|r| r.name.clone()).collect()
    }

    /// The union of the effective roles' privileges, without repeats.
    pub fn privileges(&self) -> Vec<Privilege> {
        let set: BTreeSet<&Privilege> = self.roles.iter().flat_map(|r| &r.privileges).collect();
        set.into_iter().cloned().collect()
    }

    fn holds(&self, kind: PrivilegeKind) -> bool {
        self.roles
            .iter()
            .flat_map(|r| &r.privileges)
            .any(|p| p.privilege == kind)
    }

    /// Superadmin counts only for principals of `_platform`: a tenant role
    /// can never hold it, and this keeps it so even if one somehow did.
    pub fn is_superadmin(&self) -> bool {
        self.tenant.is_platform() && self.holds(PrivilegeKind::Superadmin)
    }

    /// `superadmin`, or `admin` held by a principal of `target` itself.
    pub fn may_act_on_tenant(&self, target: &TenantId) -> bool {
        self.is_superadmin() || (&self.tenant == target && self.holds(PrivilegeKind::Admin))
    }

    /// May call `POST /api/v1/verify`.
    pub fn may_verify(&self) -> bool {
        self.is_superadmin() || (self.tenant.is_platform() && self.holds(PrivilegeKind::Verifier))
    }
}

/// May a key holding `privileges` ingest into `stream`? `ingestor` or
/// `writer` on that stream, or `editor`/`admin` (which cover every stream).
pub fn may_ingest(privileges: &[Privilege], stream: &str) -> bool {
    privileges.iter().any(|p| match p.privilege {
        PrivilegeKind::Ingestor | PrivilegeKind::Writer => p.covers_stream(stream),
        PrivilegeKind::Editor | PrivilegeKind::Admin => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privilege::StreamPattern;
    use proptest::prelude::*;

    fn role(n: &str) -> RoleName {
        RoleName::parse(n).unwrap()
    }
    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t).unwrap()
    }
    fn grant(r: &str, kinds: &[PrivilegeKind], via: Grant) -> RoleGrant {
        RoleGrant {
            role: role(r),
            privileges: kinds.iter().map(|&k| Privilege::new(k, None)).collect(),
            via,
        }
    }
    fn group(g: &str) -> Grant {
        Grant::Group {
            group: GroupName::parse(g).unwrap(),
        }
    }

    #[test]
    fn group_roles_count_with_provenance() {
        let p = Permissions::from_grants(
            tenant("acme"),
            [
                grant("ops", &[PrivilegeKind::Admin], group("admins")),
                grant("ops", &[PrivilegeKind::Admin], Grant::Direct),
                grant("ro", &[PrivilegeKind::Reader], group("readers")),
            ],
        );
        assert_eq!(p.role_names(), vec![role("ops"), role("ro")]);
        assert_eq!(p.roles[0].granted_by, vec![Grant::Direct, group("admins")]);
        assert!(p.may_act_on_tenant(&tenant("acme")));
        assert!(!p.may_act_on_tenant(&tenant("other")));
        assert!(!p.may_verify());
    }

    #[test]
    fn admin_only_through_a_group_still_counts() {
        let p = Permissions::from_grants(
            tenant("acme"),
            [grant("ops", &[PrivilegeKind::Admin], group("admins"))],
        );
        assert!(p.may_act_on_tenant(&tenant("acme")));
    }

    #[test]
    fn superadmin_reaches_every_tenant_but_only_from_platform() {
        let sa = [grant(
            "superadmin",
            &[PrivilegeKind::Superadmin],
            Grant::Direct,
        )];
        let p = Permissions::from_grants(TenantId::platform(), sa.clone());
        assert!(p.may_act_on_tenant(&tenant("acme")));
        assert!(p.may_verify());
        let p = Permissions::from_grants(tenant("acme"), sa);
        assert!(!p.is_superadmin());
        assert!(!p.may_act_on_tenant(&tenant("other")));
    }

    #[test]
    fn verifier_is_not_admin() {
        let p = Permissions::from_grants(
            TenantId::platform(),
            [grant("verifier", &[PrivilegeKind::Verifier], Grant::Direct)],
        );
        assert!(p.may_verify());
        assert!(!p.may_act_on_tenant(&tenant("acme")));
        assert!(!p.may_act_on_tenant(&TenantId::platform()));
    }

    #[test]
    fn no_roles_no_rights() {
        let p = Permissions::from_grants(tenant("acme"), []);
        assert!(!p.may_act_on_tenant(&tenant("acme")));
        assert!(p.privileges().is_empty());
    }

    #[test]
    fn ingest_rules() {
        let s = |p: &str| Some(StreamPattern::parse(p).unwrap());
        let privs = vec![
            Privilege::new(PrivilegeKind::Ingestor, s("app-*")),
            Privilege::new(PrivilegeKind::Reader, s("db-*")),
        ];
        assert!(may_ingest(&privs, "app-logs"));
        assert!(!may_ingest(&privs, "db-logs"), "reader does not ingest");
        assert!(may_ingest(
            &[Privilege::new(PrivilegeKind::Editor, None)],
            "x"
        ));
        assert!(may_ingest(
            &[Privilege::new(PrivilegeKind::Writer, None)],
            "x"
        ));
        assert!(!may_ingest(
            &[Privilege::new(PrivilegeKind::Verifier, None)],
            "x"
        ));
        assert!(!may_ingest(&[], "x"));
    }

    proptest! {
        /// The privilege union never depends on the order grants arrive in.
        #[test]
        fn order_does_not_matter(mut seq in proptest::collection::vec((0..4usize, 0..3usize), 0..12)) {
            let names = ["a", "b", "c", "d"];
            let make = |(r, g): (usize, usize)| RoleGrant {
                role: role(names[r]),
                // a role has one privilege set whatever the route to it
                privileges: vec![Privilege::new(PrivilegeKind::ALL[r], None)],
                via: if g == 0 { Grant::Direct } else { group(names[g]) },
            };
            let a = Permissions::from_grants(tenant("t"), seq.iter().copied().map(make));
            seq.reverse();
            let b = Permissions::from_grants(tenant("t"), seq.iter().copied().map(make));
            prop_assert_eq!(a, b);
        }
    }
}
