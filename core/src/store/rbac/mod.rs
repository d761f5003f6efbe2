//! RBAC: roles (privileges), users (argon2id password hashes, never
//! returned) and groups (roles for their users and keys). Every change that
//! alters what a key or user may do notifies verification caches; role and
//! group changes and a user's roles also write one `rbac.changed` event for
//! the ingestors, and every change its audit record, in its transaction.
//! SQL: `sql.rs`.

use async_trait::async_trait;
use sqlx::FromRow;

use super::rows::{key_id, parse, privilege, role, roles, tenant};
use super::timestamp::Ts;
use super::{
    Backend, Change, Group, GroupSpec, NewUser, Role, StoreError, StoreResult, User,
    UserCredentials,
};
use crate::ids::{GroupName, RoleName, TenantId, Username};
use crate::privilege::Privilege;
use crate::rbac::RoleGrant;

#[async_trait]
pub trait RbacStore: Backend {
    // ---- roles
    /// Creates or replaces a role; `true` when it was created.
    async fn put_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        privileges: &[Privilege],
        change: &Change,
    ) -> StoreResult<(Role, bool)>;
    async fn get_role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Role>;
    async fn list_roles(&self, tenant: &TenantId) -> StoreResult<Vec<Role>>;
    /// Fails with `RoleInUse` while a user, key or group holds the role.
    async fn delete_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        change: &Change,
    ) -> StoreResult<()>;

    // ---- users
    async fn create_user(&self, user: &NewUser, change: &Change) -> StoreResult<User>;
    /// Creates `user` only if the service has no user at all; `true` if it did.
    async fn bootstrap_user(&self, user: &NewUser) -> StoreResult<bool>;
    async fn get_user(&self, tenant: &TenantId, username: &Username) -> StoreResult<User>;
    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>>;
    async fn set_user_roles(
        &self,
        tenant: &TenantId,
        username: &Username,
        roles: &[RoleName],
        change: &Change,
    ) -> StoreResult<User>;
    async fn delete_user(
        &self,
        tenant: &TenantId,
        username: &Username,
        change: &Change,
    ) -> StoreResult<()>;
    /// Replaces the user's password hash (`UserNotFound`); its remembered
    /// Basic proofs stop counting, on every replica.
    async fn set_user_password(
        &self,
        tenant: &TenantId,
        username: &Username,
        password_hash: &str,
        change: &Change,
    ) -> StoreResult<()>;
    /// For authentication only: usernames are unique across tenants.
    async fn user_credentials(&self, username: &Username) -> StoreResult<Option<UserCredentials>>;
    /// The user's role grants as they are now: direct and through groups.
    async fn user_grants(
        &self,
        tenant: &TenantId,
        username: &Username,
    ) -> StoreResult<Vec<RoleGrant>>;

    // ---- groups
    /// Creates or replaces a group; `true` when it was created.
    async fn put_group(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        spec: &GroupSpec,
        change: &Change,
    ) -> StoreResult<(Group, bool)>;
    async fn get_group(&self, tenant: &TenantId, name: &GroupName) -> StoreResult<Group>;
    async fn list_groups(&self, tenant: &TenantId) -> StoreResult<Vec<Group>>;
    async fn delete_group(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        change: &Change,
    ) -> StoreResult<()>;
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
