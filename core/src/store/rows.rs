//! Row shapes shared by both backends and their conversion to the model.
//! A value the database should never hold (a bad id, an unknown privilege)
//! surfaces as `StoreError::Corrupt`, never as a panic.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::FromRow;

use super::error::{StoreError, StoreResult};
use super::model::*;
use super::timestamp::Ts;
use crate::ids::{EventId, GroupName, KeyId, KeyName, RoleName, TenantId, Username};
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
pub(crate) fn roles(names: &[String]) -> StoreResult<Vec<RoleName>> {
    names.iter().map(|n| role(n)).collect()
}

fn privilege(kind: &str, stream: Option<&str>) -> StoreResult<Privilege> {
    let kind = parse("privilege", kind, PrivilegeKind::from_str)?;
    let stream = stream
        .map(|s| parse("stream", s, StreamPattern::parse))
        .transpose()?;
    Ok(Privilege::new(kind, stream))
}

#[derive(FromRow)]
pub(crate) struct TenantRow {
    pub id: String,
    pub name: Option<String>,
    pub created_at: Ts,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(r: TenantRow) -> StoreResult<Self> {
        Ok(Tenant {
            id: tenant(&r.id)?,
            name: r.name,
            created_at: r.created_at.0,
        })
    }
}

/// A role joined with one of its privileges (none: `privilege` is NULL).
#[derive(FromRow)]
pub(crate) struct RolePrivilegeRow {
    pub tenant_id: String,
    pub name: String,
    pub builtin: bool,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub privilege: Option<String>,
    pub stream: Option<String>,
}

/// Folds rows ordered by role name (then privilege position) into roles.
pub(crate) fn fold_roles(rows: Vec<RolePrivilegeRow>) -> StoreResult<Vec<Role>> {
    let mut out: Vec<Role> = Vec::new();
    for r in rows {
        let same = out.last().is_some_and(|last| last.name.as_str() == r.name);
        if !same {
            out.push(Role {
                tenant_id: tenant(&r.tenant_id)?,
                name: role(&r.name)?,
                privileges: Vec::new(),
                builtin: r.builtin,
                created_at: r.created_at.0,
                updated_at: r.updated_at.0,
            });
        }
        if let (Some(kind), Some(last)) = (r.privilege.as_deref(), out.last_mut()) {
            last.privileges.push(privilege(kind, r.stream.as_deref())?);
        }
    }
    Ok(out)
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    pub tenant_id: String,
    pub username: String,
    pub created_at: Ts,
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

impl UserRow {
    pub(crate) fn into_user(self, role_names: &[String]) -> StoreResult<User> {
        Ok(User {
            tenant_id: tenant(&self.tenant_id)?,
            username: parse("username", &self.username, Username::parse)?,
            roles: roles(role_names)?,
            created_at: self.created_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialsRow {
    pub tenant_id: String,
    pub username: String,
    pub password_hash: String,
}

impl TryFrom<CredentialsRow> for UserCredentials {
    type Error = StoreError;
    fn try_from(r: CredentialsRow) -> StoreResult<Self> {
        Ok(UserCredentials {
            tenant_id: tenant(&r.tenant_id)?,
            username: parse("username", &r.username, Username::parse)?,
            password_hash: r.password_hash,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct GroupRow {
    pub tenant_id: String,
    pub name: String,
    pub created_at: Ts,
    pub updated_at: Ts,
}

impl GroupRow {
    pub(crate) fn into_group(
        self,
        role_names: &[String],
        users: &[String],
        keys: &[String],
    ) -> StoreResult<Group> {
        Ok(Group {
            tenant_id: tenant(&self.tenant_id)?,
            name: parse("group name", &self.name, GroupName::parse)?,
            roles: roles(role_names)?,
            users: users
                .iter()
                .map(|u| parse("username", u, Username::parse))
                .collect::<StoreResult<_>>()?,
            api_keys: keys.iter().map(|k| key_id(k)).collect::<StoreResult<_>>()?,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        })
    }
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

/// A key with its revocation event, if any, as lists and reads select it.
#[derive(FromRow)]
pub(crate) struct KeyRow {
    pub key_id: String,
    pub tenant_id: String,
    pub name: String,
    pub start: String,
    pub status: String,
    pub created_by: String,
    pub created_at: Ts,
    pub expires_at: Option<Ts>,
    pub last_used_at: Option<Ts>,
    pub revoked_at: Option<Ts>,
    pub revoked_by: Option<String>,
    pub event_id: Option<String>,
    pub attempts: Option<i32>,
    pub published_at: Option<Ts>,
    pub dead_at: Option<Ts>,
    pub last_error: Option<String>,
    pub live_ingestors: Option<i64>,
    pub applied_by: Option<i64>,
}

impl KeyRow {
    pub(crate) fn into_key(self, role_names: &[String], now: Timestamp) -> StoreResult<ApiKey> {
        let active = self.status == "active";
        let revocation = match (&self.event_id, active) {
            (Some(event_id), false) => Some(revocation(&self, event_id)?),
            _ => None,
        };
        Ok(ApiKey {
            key_id: key_id(&self.key_id)?,
            tenant_id: tenant(&self.tenant_id)?,
            name: parse("key name", &self.name, KeyName::parse)?,
            roles: roles(role_names)?,
            start: self.start,
            created_by: self.created_by,
            created_at: self.created_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            last_used_at: self.last_used_at.map(|t| t.0),
            status: KeyStatus::at(active, self.expires_at.map(|t| t.0), now),
            revoked_at: self.revoked_at.map(|t| t.0),
            revoked_by: self.revoked_by,
            revocation,
        })
    }
}

/// Derives the revocation state from the outbox row. After a purge the row
/// is gone: the event was published long ago, so it reads as `published`.
fn revocation(r: &KeyRow, event_id: &str) -> StoreResult<Revocation> {
    let applied_by = r.applied_by.unwrap_or(0);
    let ingestors = r.live_ingestors.unwrap_or(0);
    let state = if r.dead_at.is_some() {
        RevocationState::Failed
    } else if r.published_at.is_none() && r.attempts.is_some() {
        RevocationState::Pending
    } else if ingestors > 0 && applied_by >= ingestors {
        RevocationState::Applied
    } else {
        RevocationState::Published
    };
    Ok(Revocation {
        state,
        event_id: parse("event id", event_id, EventId::parse)?,
        attempts: r.attempts.unwrap_or(0),
        published_at: r.published_at.map(|t| t.0),
        applied_by,
        ingestors,
        last_error: r.last_error.clone(),
    })
}

/// A key as verification reads it, one row per grant privilege (the grant
/// columns are NULL for a key without roles).
#[derive(FromRow)]
pub(crate) struct KeyGrantRow {
    pub key_id: String,
    pub tenant_id: String,
    pub secret_hash: String,
    pub status: String,
    pub expires_at: Option<Ts>,
    pub role_name: Option<String>,
    pub group_name: Option<String>,
    pub privilege: Option<String>,
    pub stream: Option<String>,
}

/// The keys of `rows` (ordered by key, role, group, position) with their
/// folded grants.
pub(crate) fn keys_credentials(rows: Vec<KeyGrantRow>) -> StoreResult<Vec<KeyCredentials>> {
    let mut out: Vec<(KeyCredentials, Vec<GrantRow>)> = Vec::new();
    for r in rows {
        if out
            .last()
            .is_none_or(|(k, _)| k.key_id.to_string() != r.key_id)
        {
            let key = KeyCredentials {
                key_id: key_id(&r.key_id)?,
                tenant_id: tenant(&r.tenant_id)?,
                secret_hash: r.secret_hash.clone(),
                active: r.status == "active",
                expires_at: r.expires_at.map(|t| t.0),
                grants: Vec::new(),
            };
            out.push((key, Vec::new()));
        }
        if let (Some(role_name), Some((_, grants))) = (r.role_name, out.last_mut()) {
            grants.push(GrantRow {
                role_name,
                group_name: r.group_name,
                privilege: r.privilege,
                stream: r.stream,
            });
        }
    }
    out.into_iter()
        .map(|(key, grants)| {
            Ok(KeyCredentials {
                grants: fold_grants(grants)?,
                ..key
            })
        })
        .collect()
}

#[derive(FromRow)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub kind: String,
    pub tenant_id: String,
    pub key_id: String,
    pub created_at: Ts,
    pub attempts: i32,
}

impl TryFrom<OutboxRow> for OutboxEvent {
    type Error = StoreError;
    fn try_from(r: OutboxRow) -> StoreResult<Self> {
        Ok(OutboxEvent {
            id: r.id,
            event_id: parse("event id", &r.event_id, EventId::parse)?,
            kind: r.kind,
            tenant_id: tenant(&r.tenant_id)?,
            key_id: key_id(&r.key_id)?,
            created_at: r.created_at.0,
            attempts: r.attempts,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct IngestorRow {
    pub id: String,
    pub queue: String,
    pub first_seen_at: Ts,
    pub last_seen_at: Ts,
    pub unacked: i64,
}

impl From<IngestorRow> for IngestorRecord {
    fn from(r: IngestorRow) -> Self {
        IngestorRecord {
            id: r.id,
            queue: r.queue,
            first_seen_at: r.first_seen_at.0,
            last_seen_at: r.last_seen_at.0,
            unacked: r.unacked,
        }
    }
}
