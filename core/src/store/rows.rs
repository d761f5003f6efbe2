//! Reading values back from the database, and the row shapes more than
//! one aggregate reads (role grants, name links). A value the database
//! should never hold (a bad id, an unknown privilege) surfaces as
//! `StoreError::Corrupt`, never as a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::FromRow;

use super::error::{StoreError, StoreResult};
use crate::ids::{GroupName, KeyId, RoleName, TenantId};
use crate::privilege::{Privilege, PrivilegeKind, StreamPattern};
use crate::rbac::{Grant, RoleGrant};

pub(crate) fn parse<T, E>(
    what: &str,
    value: &str,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    f(value).map_err(|_| StoreError::Corrupt(format!("bad {what} in the database")))
}

pub(crate) fn tenant(v: &str) -> StoreResult<TenantId> {
    parse("tenant id", v, TenantId::parse)
}
pub(crate) fn role(v: &str) -> StoreResult<RoleName> {
    parse("role name", v, RoleName::parse)
}
pub(crate) fn key_id(v: &str) -> StoreResult<KeyId> {
    parse("key id", v, KeyId::parse)
}
pub(crate) fn roles(
    names: impl IntoIterator<Item = impl AsRef<str>>,
) -> StoreResult<Vec<RoleName>> {
    names.into_iter().map(|n| role(n.as_ref())).collect()
}

pub(crate) fn privilege(kind: &str, stream: Option<&str>) -> StoreResult<Privilege> {
    let kind = parse("privilege", kind, PrivilegeKind::from_str)?;
    let stream = stream
        .map(|s| parse("stream", s, StreamPattern::parse))
        .transpose()?;
    Ok(Privilege::new(kind, stream))
}

#[derive(FromRow)]
pub(crate) struct NameLinkRow {
    /// The owner: a username, group name or key id.
    pub owner: String,
    pub name: String,
}

/// Groups `(owner, name)` link rows by owner, names in row order.
pub(crate) fn links_by_owner(rows: Vec<NameLinkRow>) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        map.entry(r.owner).or_default().push(r.name);
    }
    map
}

/// One grant row: a role reached directly (`group_name` NULL) or through a
/// group, joined with one of the role's privileges.
#[derive(FromRow)]
pub(crate) struct GrantRow {
    pub role_name: String,
    pub group_name: Option<String>,
    pub privilege: Option<String>,
    pub stream: Option<String>,
}

/// Folds grant rows (ordered by role, group, privilege position) into one
/// `RoleGrant` per (role, route).
pub(crate) fn fold_grants(rows: Vec<GrantRow>) -> StoreResult<Vec<RoleGrant>> {
    let mut out: Vec<(String, Option<String>, RoleGrant)> = Vec::new();
    for r in rows {
        let same = out.last().is_some_and(|(role_name, group, _)| {
            *role_name == r.role_name && *group == r.group_name
        });
        if !same {
            let via = match &r.group_name {
                None => Grant::Direct,
                Some(g) => Grant::Group {
                    group: parse("group name", g, GroupName::parse)?,
                },
            };
            let grant = RoleGrant {
                role: role(&r.role_name)?,
                privileges: Vec::new(),
                via,
            };
            out.push((r.role_name.clone(), r.group_name.clone(), grant));
        }
        if let (Some(kind), Some((_, _, last))) = (r.privilege.as_deref(), out.last_mut()) {
            last.privileges.push(privilege(kind, r.stream.as_deref())?);
        }
    }
    Ok(out.into_iter().map(|(_, _, g)| g).collect())
}
