//! Roles, users and groups SQL, compiled once per backend (see
//! `store/mod.rs`).

use std::collections::HashSet;

use super::audit::record_in;
use super::builtin::{self, PlatformChange, Target};
use super::{Conn, Pool, SqlStore, sql, text_list};
use crate::ids::{GroupName, RoleName, TenantId, Username};
use crate::privilege::Privilege;
use crate::rbac::RoleGrant;
use crate::store::audit::Action;
use crate::store::error::{Violation, on_constraint, violation};
use crate::store::keys::KeyChange;
use crate::store::rbac::{
    CredentialsRow, GroupRow, RbacStore, RolePrivilegeRow, UserRow, fold_roles,
};
use crate::store::rows::{GrantRow, NameLinkRow, fold_grants, links_by_owner};
use crate::store::timestamp::{Ts, truncate_micros};
use crate::store::{
    Change, Dialect, Group, GroupSpec, NewUser, RBAC_CHANGED, Role, StoreError, StoreResult, User,
    UserCredentials,
};

/// Which of a list (`$2`) a tenant (`$1`) has: one statement, whatever
/// the list's length.
const EXISTING_ROLES: Dialect = Dialect {
    sqlite: "SELECT name FROM roles \
             WHERE tenant_id = $1 AND name IN (SELECT value FROM json_each($2))",
    postgres: "SELECT name FROM roles WHERE tenant_id = $1 AND name = ANY($2)",
};
const EXISTING_USERS: Dialect = Dialect {
    sqlite: "SELECT username FROM users \
             WHERE tenant_id = $1 AND username IN (SELECT value FROM json_each($2))",
    postgres: "SELECT username FROM users WHERE tenant_id = $1 AND username = ANY($2)",
};
const EXISTING_KEYS: Dialect = Dialect {
    sqlite: "SELECT key_id FROM api_keys \
             WHERE tenant_id = $1 AND key_id IN (SELECT value FROM json_each($2))",
    postgres: "SELECT key_id FROM api_keys WHERE tenant_id = $1 AND key_id = ANY($2)",
};

/// The entries of `names` that `tenant` does not have, in their order.
async fn missing<T: ToString + Clone>(
    conn: &mut Conn,
    statement: &Dialect,
    tenant: &TenantId,
    names: &[T],
) -> StoreResult<Vec<T>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<String> = names.iter().map(ToString::to_string).collect();
    let found: HashSet<String> = sqlx::query_scalar(sql(statement))
        .bind(tenant.as_str())
        .bind(text_list(wanted.clone()))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    Ok(names
        .iter()
        .zip(&wanted)
        .filter(|(_, w)| !found.contains(*w))
        .map(|(n, _)| n.clone())
        .collect())
}

/// Role names of `names` that `tenant` does not have.
async fn missing_roles(
    conn: &mut Conn,
    tenant: &TenantId,
    names: &[RoleName],
) -> StoreResult<Vec<String>> {
    let missing = missing(conn, &EXISTING_ROLES, tenant, names).await?;
    Ok(missing.iter().map(ToString::to_string).collect())
}

/// Fails with `UnknownRoles` unless every role exists.
pub(super) async fn require_roles(
    conn: &mut Conn,
    tenant: &TenantId,
    names: &[RoleName],
) -> StoreResult<()> {
    let missing = missing_roles(conn, tenant, names).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::UnknownRoles(missing))
    }
}

/// Maps a failed role-link insert: a role the tenant lacks (its FK fired:
/// never there, or deleted since someone looked) is `UnknownRoles`, naming
/// the missing ones as committed now.
pub(super) async fn link_error(
    pool: &Pool,
    e: sqlx::Error,
    tenant: &TenantId,
    names: &[RoleName],
) -> StoreError {
    if violation(&e) != Some(Violation::ForeignKey) {
        return e.into();
    }
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    match missing_roles(&mut conn, tenant, names).await {
        Ok(m) if !m.is_empty() => StoreError::UnknownRoles(m),
        Ok(_) => StoreError::UnknownRoles(names.iter().map(ToString::to_string).collect()),
        Err(e) => e,
    }
}

async fn is_builtin_role(conn: &mut Conn, tenant: &TenantId, name: &RoleName) -> StoreResult<bool> {
    let builtin: Option<bool> =
        sqlx::query_scalar("SELECT builtin FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(builtin.unwrap_or(false))
}

async fn roles_in(
    conn: &mut Conn,
    tenant: &TenantId,
    name: Option<&RoleName>,
) -> StoreResult<Vec<Role>> {
    let rows: Vec<RolePrivilegeRow> = sqlx::query_as(
        "SELECT r.tenant_id, r.name, r.builtin, r.created_at, r.updated_at, \
                p.privilege, p.stream \
         FROM roles r LEFT JOIN role_privileges p \
           ON p.tenant_id = r.tenant_id AND p.role_name = r.name \
         WHERE r.tenant_id = $1 AND ($2 IS NULL OR r.name = $2) \
         ORDER BY r.name, p.position",
    )
    .bind(tenant.as_str())
    .bind(name.map(|n| n.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    fold_roles(rows)
}

async fn users_in(
    conn: &mut Conn,
    tenant: &TenantId,
    username: Option<&Username>,
) -> StoreResult<Vec<User>> {
    let name = username.map(|u| u.as_str());
    let users: Vec<UserRow> = sqlx::query_as(
        "SELECT tenant_id, username, created_at FROM users \
         WHERE tenant_id = $1 AND ($2 IS NULL OR username = $2) ORDER BY username",
    )
    .bind(tenant.as_str())
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let links: Vec<NameLinkRow> = sqlx::query_as(
        "SELECT username AS owner, role_name AS name FROM user_roles \
         WHERE tenant_id = $1 AND ($2 IS NULL OR username = $2) \
         ORDER BY username, role_name",
    )
    .bind(tenant.as_str())
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let roles = links_by_owner(links);
    users
        .into_iter()
        .map(|u| {
            let r = roles
                .get(&u.username)
                .map(Vec::as_slice)
                .unwrap_or_default();
            u.into_user(r)
        })
        .collect()
}

async fn insert_user_roles(
    pool: &Pool,
    conn: &mut Conn,
    tenant: &TenantId,
    username: &Username,
    roles: &[RoleName],
) -> StoreResult<()> {
    for role in roles {
        let inserted = sqlx::query(
            "INSERT INTO user_roles (tenant_id, username, role_name) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(username.as_str())
        .bind(role.as_str())
        .execute(&mut *conn)
        .await;
        if let Err(e) = inserted {
            return Err(link_error(pool, e, tenant, roles).await);
        }
    }
    Ok(())
}

async fn insert_user(pool: &Pool, conn: &mut Conn, user: &NewUser) -> StoreResult<()> {
    require_roles(conn, &user.tenant_id, &user.roles).await?;
    sqlx::query(
        "INSERT INTO users (username, tenant_id, password_hash, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(user.username.as_str())
    .bind(user.tenant_id.as_str())
    .bind(&user.password_hash)
    .bind(Ts(user.created_at))
    .execute(&mut *conn)
    .await
    .map_err(on_constraint(|v| match v {
        Violation::Unique => Some(StoreError::DuplicateUsername),
        Violation::ForeignKey => Some(StoreError::TenantNotFound),
    }))?;
    insert_user_roles(pool, conn, &user.tenant_id, &user.username, &user.roles).await
}

async fn groups_in(
    conn: &mut Conn,
    tenant: &TenantId,
    group: Option<&GroupName>,
) -> StoreResult<Vec<Group>> {
    let name = group.map(|g| g.as_str());
    let groups: Vec<GroupRow> = sqlx::query_as(
        "SELECT tenant_id, name, created_at, updated_at FROM rbac_groups \
         WHERE tenant_id = $1 AND ($2 IS NULL OR name = $2) ORDER BY name",
    )
    .bind(tenant.as_str())
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let mut links = Vec::with_capacity(3);
    for sql in [
        "SELECT group_name AS owner, role_name AS name FROM group_roles \
         WHERE tenant_id = $1 AND ($2 IS NULL OR group_name = $2) ORDER BY 1, 2",
        "SELECT group_name AS owner, username AS name FROM group_users \
         WHERE tenant_id = $1 AND ($2 IS NULL OR group_name = $2) ORDER BY 1, 2",
        "SELECT group_name AS owner, key_id AS name FROM group_keys \
         WHERE tenant_id = $1 AND ($2 IS NULL OR group_name = $2) ORDER BY 1, 2",
    ] {
        let rows: Vec<NameLinkRow> = sqlx::query_as(sql)
            .bind(tenant.as_str())
            .bind(name)
            .fetch_all(&mut *conn)
            .await?;
        links.push(links_by_owner(rows));
    }
    let get =
        |i: usize, g: &str| -> &[String] { links[i].get(g).map(Vec::as_slice).unwrap_or_default() };
    groups
        .into_iter()
        .map(|g| {
            let (r, u, k) = (get(0, &g.name), get(1, &g.name), get(2, &g.name));
            g.into_group(r, u, k)
        })
        .collect()
}

/// Grant rows of a principal: `$1` its id, the two SELECTs its
/// direct role links and its group memberships.
pub(super) async fn grants(
    conn: &mut Conn,
    sql: &'static str,
    tenant: &str,
    principal: &str,
) -> StoreResult<Vec<RoleGrant>> {
    let rows: Vec<GrantRow> = sqlx::query_as(sql)
        .bind(tenant)
        .bind(principal)
        .fetch_all(&mut *conn)
        .await?;
    fold_grants(rows)
}

impl SqlStore {
    /// What every RBAC change of a tenant writes besides itself, on its
    /// transaction: the `rbac.changed` event that makes ingestors drop the
    /// tenant's cached keys, with the notice of what other API replicas
    /// must drop (`evicted`), and the audit record.
    async fn rbac_changed(
        &self,
        conn: &mut Conn,
        change: &Change,
        tenant: &TenantId,
        (action, target): (Action, &str),
        evicted: Option<KeyChange>,
    ) -> StoreResult<()> {
        let event = self
            .emit(conn, change, RBAC_CHANGED, tenant, None, evicted.as_ref())
            .await?;
        record_in(conn, change, tenant, action, target, Some(event)).await
    }
}

#[async_trait::async_trait]
impl RbacStore for SqlStore {
    #[tracing::instrument(skip(self, privileges))]
    async fn put_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        privileges: &[Privilege],
        change: &Change,
    ) -> StoreResult<(Role, bool)> {
        let now = Ts(change.at);
        // The built-in names are reserved in every tenant: a tenant role
        // named `superadmin` would read as what it is not in every list.
        if [RoleName::SUPERADMIN, RoleName::VERIFIER].contains(&name.as_str()) {
            return Err(StoreError::BuiltinRole);
        }
        let mut tx = self.begin_write().await?;
        if is_builtin_role(&mut tx, tenant, name).await? {
            return Err(StoreError::BuiltinRole);
        }
        let created = sqlx::query(
            "INSERT INTO roles (tenant_id, name, builtin, created_at, updated_at) \
         VALUES ($1, $2, FALSE, $3, $3) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(on_constraint(|v| {
            (v == Violation::ForeignKey).then_some(StoreError::TenantNotFound)
        }))?
        .rows_affected()
            == 1;
        if !created {
            sqlx::query("UPDATE roles SET updated_at = $3 WHERE tenant_id = $1 AND name = $2")
                .bind(tenant.as_str())
                .bind(name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM role_privileges WHERE tenant_id = $1 AND role_name = $2")
                .bind(tenant.as_str())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for (position, p) in (0_i32..).zip(privileges) {
            sqlx::query(
                "INSERT INTO role_privileges (tenant_id, role_name, position, privilege, stream) \
             VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(tenant.as_str())
            .bind(name.as_str())
            .bind(position)
            .bind(p.privilege.as_str())
            .bind(p.stream().map(|s| s.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        // Keys holding the role (directly or via a group) now hold
        // other privileges: caches must forget them.
        let evicted = Some(KeyChange::Tenant(tenant.clone()));
        let what = (Action::RolePut, name.as_str());
        self.rbac_changed(&mut tx, change, tenant, what, evicted)
            .await?;
        let role = roles_in(&mut tx, tenant, Some(name))
            .await?
            .pop()
            .ok_or(StoreError::RoleNotFound)?;
        tx.commit().await?;
        Ok((role, created))
    }

    #[tracing::instrument(skip(self))]
    async fn get_role(&self, tenant: &TenantId, name: &RoleName) -> StoreResult<Role> {
        let mut conn = self.pool.acquire().await?;
        roles_in(&mut conn, tenant, Some(name))
            .await?
            .pop()
            .ok_or(StoreError::RoleNotFound)
    }

    #[tracing::instrument(skip(self))]
    async fn list_roles(&self, tenant: &TenantId) -> StoreResult<Vec<Role>> {
        let mut conn = self.pool.acquire().await?;
        roles_in(&mut conn, tenant, None).await
    }

    #[tracing::instrument(skip(self))]
    async fn delete_role(
        &self,
        tenant: &TenantId,
        name: &RoleName,
        change: &Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if is_builtin_role(&mut tx, tenant, name).await? {
            return Err(StoreError::BuiltinRole);
        }
        // The foreign keys from user, key and group role links refuse
        // the delete while anything holds the role.
        let deleted = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(on_constraint(|v| {
                (v == Violation::ForeignKey).then_some(StoreError::RoleInUse)
            }))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::RoleNotFound);
        }
        // No key or user holds a role that can be deleted.
        let what = (Action::RoleDelete, name.as_str());
        self.rbac_changed(&mut tx, change, tenant, what, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip(self, user), fields(username = %user.username))]
    async fn create_user(&self, user: &NewUser, change: &Change) -> StoreResult<User> {
        let mut user = user.clone();
        user.created_at = truncate_micros(user.created_at);
        let mut tx = self.begin_write().await?;
        insert_user(&self.pool, &mut tx, &user).await?;
        let target = user.username.as_str();
        record_in(
            &mut tx,
            change,
            &user.tenant_id,
            Action::UserCreate,
            target,
            None,
        )
        .await?;
        tx.commit().await?;
        let mut roles = user.roles.clone();
        roles.sort();
        roles.dedup();
        Ok(User {
            tenant_id: user.tenant_id,
            username: user.username,
            roles,
            created_at: user.created_at,
        })
    }

    #[tracing::instrument(skip(self, user), fields(username = %user.username))]
    async fn bootstrap_user(&self, user: &NewUser) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&mut *tx)
            .await?;
        if users > 0 {
            return Ok(false);
        }
        match insert_user(&self.pool, &mut tx, user).await {
            // Another replica bootstrapped at the same moment.
            Err(StoreError::DuplicateUsername) => Ok(false),
            Err(e) => Err(e),
            Ok(()) => {
                tx.commit().await?;
                Ok(true)
            }
        }
    }

    #[tracing::instrument(skip(self))]
    async fn get_user(&self, tenant: &TenantId, username: &Username) -> StoreResult<User> {
        let mut conn = self.pool.acquire().await?;
        users_in(&mut conn, tenant, Some(username))
            .await?
            .pop()
            .ok_or(StoreError::UserNotFound)
    }

    #[tracing::instrument(skip(self))]
    async fn list_users(&self, tenant: &TenantId) -> StoreResult<Vec<User>> {
        let mut conn = self.pool.acquire().await?;
        users_in(&mut conn, tenant, None).await
    }

    #[tracing::instrument(skip(self))]
    async fn set_user_roles(
        &self,
        tenant: &TenantId,
        username: &Username,
        roles: &[RoleName],
        change: &Change,
    ) -> StoreResult<User> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM users WHERE tenant_id = $1 AND username = $2")
                .bind(tenant.as_str())
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::UserNotFound);
        }
        let guard = PlatformChange::begin(&mut tx, tenant, Target::User(username), change).await?;
        require_roles(&mut tx, tenant, roles).await?;
        sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1 AND username = $2")
            .bind(tenant.as_str())
            .bind(username.as_str())
            .execute(&mut *tx)
            .await?;
        insert_user_roles(&self.pool, &mut tx, tenant, username, roles).await?;
        // Remembered Basic proofs of this user hold its old roles.
        let evicted = Some(KeyChange::User(username.clone()));
        let what = (Action::UserRoles, username.as_str());
        self.rbac_changed(&mut tx, change, tenant, what, evicted)
            .await?;
        builtin::finish(guard, &mut tx).await?;
        let user = users_in(&mut tx, tenant, Some(username))
            .await?
            .pop()
            .ok_or(StoreError::UserNotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    #[tracing::instrument(skip(self))]
    async fn delete_user(
        &self,
        tenant: &TenantId,
        username: &Username,
        change: &Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let guard = PlatformChange::begin(&mut tx, tenant, Target::User(username), change).await?;
        let deleted = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND username = $2")
            .bind(tenant.as_str())
            .bind(username.as_str())
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::UserNotFound);
        }
        // Remembered Basic proofs of this user must stop working.
        self.notify_keys(&mut tx, &KeyChange::User(username.clone()))
            .await?;
        let target = username.as_str();
        record_in(&mut tx, change, tenant, Action::UserDelete, target, None).await?;
        builtin::finish(guard, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip(self, password_hash))]
    async fn set_user_password(
        &self,
        tenant: &TenantId,
        username: &Username,
        password_hash: &str,
        change: &Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let guard = PlatformChange::begin(&mut tx, tenant, Target::User(username), change).await?;
        let updated = sqlx::query(
            "UPDATE users SET password_hash = $3 WHERE tenant_id = $1 AND username = $2",
        )
        .bind(tenant.as_str())
        .bind(username.as_str())
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::UserNotFound);
        }
        // Remembered Basic proofs of the old password must stop working.
        self.notify_keys(&mut tx, &KeyChange::User(username.clone()))
            .await?;
        let target = username.as_str();
        record_in(&mut tx, change, tenant, Action::UserPassword, target, None).await?;
        builtin::finish(guard, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn user_credentials(&self, username: &Username) -> StoreResult<Option<UserCredentials>> {
        let row: Option<CredentialsRow> = sqlx::query_as(
            "SELECT tenant_id, username, password_hash FROM users WHERE username = $1",
        )
        .bind(username.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    #[tracing::instrument(skip(self))]
    async fn user_grants(
        &self,
        tenant: &TenantId,
        username: &Username,
    ) -> StoreResult<Vec<RoleGrant>> {
        let mut conn = self.pool.acquire().await?;
        grants(
            &mut conn,
            "SELECT ur.role_name, NULL AS group_name, p.privilege, p.stream, p.position \
         FROM user_roles ur LEFT JOIN role_privileges p \
           ON p.tenant_id = ur.tenant_id AND p.role_name = ur.role_name \
         WHERE ur.tenant_id = $1 AND ur.username = $2 \
         UNION ALL \
         SELECT gr.role_name, gu.group_name, p.privilege, p.stream, p.position \
         FROM group_users gu \
         JOIN group_roles gr ON gr.tenant_id = gu.tenant_id AND gr.group_name = gu.group_name \
         LEFT JOIN role_privileges p \
           ON p.tenant_id = gr.tenant_id AND p.role_name = gr.role_name \
         WHERE gu.tenant_id = $1 AND gu.username = $2 \
         ORDER BY 1, 2, 5",
            tenant.as_str(),
            username.as_str(),
        )
        .await
    }

    #[tracing::instrument(skip(self, spec))]
    async fn put_group(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        spec: &GroupSpec,
        change: &Change,
    ) -> StoreResult<(Group, bool)> {
        let now = Ts(change.at);
        let mut tx = self.begin_write().await?;
        let guard = PlatformChange::begin(&mut tx, tenant, Target::Group(name), change).await?;
        builtin::require_members_unprotected(&mut tx, tenant, name, spec, change).await?;
        require_roles(&mut tx, tenant, &spec.roles).await?;
        let unknown_users = missing(&mut tx, &EXISTING_USERS, tenant, &spec.users).await?;
        if !unknown_users.is_empty() {
            return Err(StoreError::UnknownUsers(unknown_users));
        }
        let unknown_keys = missing(&mut tx, &EXISTING_KEYS, tenant, &spec.api_keys).await?;
        if !unknown_keys.is_empty() {
            return Err(StoreError::UnknownKeys(unknown_keys));
        }
        let created = sqlx::query(
            "INSERT INTO rbac_groups (tenant_id, name, created_at, updated_at) \
         VALUES ($1, $2, $3, $3) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(on_constraint(|v| {
            (v == Violation::ForeignKey).then_some(StoreError::TenantNotFound)
        }))?
        .rows_affected()
            == 1;
        if !created {
            sqlx::query(
                "UPDATE rbac_groups SET updated_at = $3 WHERE tenant_id = $1 AND name = $2",
            )
            .bind(tenant.as_str())
            .bind(name.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for table in [
                "DELETE FROM group_roles WHERE tenant_id = $1 AND group_name = $2",
                "DELETE FROM group_users WHERE tenant_id = $1 AND group_name = $2",
                "DELETE FROM group_keys WHERE tenant_id = $1 AND group_name = $2",
            ] {
                sqlx::query(table)
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let links = spec
        .roles
        .iter()
        .map(|r| ("INSERT INTO group_roles (tenant_id, group_name, role_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", r.to_string()))
        .chain(spec.users.iter().map(|u| ("INSERT INTO group_users (tenant_id, group_name, username) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", u.to_string())))
        .chain(spec.api_keys.iter().map(|k| ("INSERT INTO group_keys (tenant_id, group_name, key_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", k.to_string())));
        for (sql, value) in links {
            let inserted = sqlx::query(sql)
                .bind(tenant.as_str())
                .bind(name.as_str())
                .bind(value)
                .execute(&mut *tx)
                .await;
            if let Err(e) = inserted {
                return Err(link_error(&self.pool, e, tenant, &spec.roles).await);
            }
        }
        // Keys joining or leaving the group gain or lose its roles:
        // their cached verifications must go.
        let evicted = Some(KeyChange::Tenant(tenant.clone()));
        let what = (Action::GroupPut, name.as_str());
        self.rbac_changed(&mut tx, change, tenant, what, evicted)
            .await?;
        builtin::finish(guard, &mut tx).await?;
        let group = groups_in(&mut tx, tenant, Some(name))
            .await?
            .pop()
            .ok_or(StoreError::GroupNotFound)?;
        tx.commit().await?;
        Ok((group, created))
    }

    #[tracing::instrument(skip(self))]
    async fn get_group(&self, tenant: &TenantId, name: &GroupName) -> StoreResult<Group> {
        let mut conn = self.pool.acquire().await?;
        groups_in(&mut conn, tenant, Some(name))
            .await?
            .pop()
            .ok_or(StoreError::GroupNotFound)
    }

    #[tracing::instrument(skip(self))]
    async fn list_groups(&self, tenant: &TenantId) -> StoreResult<Vec<Group>> {
        let mut conn = self.pool.acquire().await?;
        groups_in(&mut conn, tenant, None).await
    }

    #[tracing::instrument(skip(self))]
    async fn delete_group(
        &self,
        tenant: &TenantId,
        name: &GroupName,
        change: &Change,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let guard = PlatformChange::begin(&mut tx, tenant, Target::Group(name), change).await?;
        let deleted = sqlx::query("DELETE FROM rbac_groups WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::GroupNotFound);
        }
        // Its keys lose its roles.
        let evicted = Some(KeyChange::Tenant(tenant.clone()));
        let what = (Action::GroupDelete, name.as_str());
        self.rbac_changed(&mut tx, change, tenant, what, evicted)
            .await?;
        builtin::finish(guard, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
