//! Principals holding `_platform`'s built-in roles (`superadmin`,
//! `verifier`), compiled once per backend (see `store/mod.rs`).
//!
//! An `admin` of `_platform` manages the operators' users and keys, but
//! must not be able to take the platform from its superadmins: strip their
//! roles, delete them, or revoke the ingestors' verifier keys. So a change
//! to a user, key or group that holds a built-in role is a superadmin's
//! alone, and no change may leave the platform without a superadmin user
//! (bootstrap never runs again once a user exists). Both are checked
//! inside the change's own transaction, so two concurrent changes cannot
//! each see the other's target still there.

use super::{Conn, sql, text_list};
use crate::ids::{GroupName, KeyId, RoleName, TenantId, Username};
use crate::store::{Change, Dialect, GroupSpec, StoreError, StoreResult};

/// What a `_platform` change touches.
pub(super) enum Target<'a> {
    User(&'a Username),
    Key(KeyId),
    Group(&'a GroupName),
}

/// A `_platform` change in progress: knows whether a superadmin user
/// existed when it began.
pub(super) struct PlatformChange {
    had_superadmin: bool,
}

impl PlatformChange {
    /// Starts guarding `change` of `target` in `tenant`; `None` outside
    /// `_platform`. Fails with `ProtectedPrincipal` when the actor is no
    /// superadmin and the target holds a built-in role now.
    ///
    /// Takes a lock on the `_platform` tenant row first: PostgreSQL then
    /// runs `_platform`'s changes one at a time (SQLite's `BEGIN IMMEDIATE`
    /// already does), and each reads what the one before committed.
    pub(super) async fn begin(
        conn: &mut Conn,
        tenant: &TenantId,
        target: Target<'_>,
        change: &Change,
    ) -> StoreResult<Option<Self>> {
        if !tenant.is_platform() {
            return Ok(None);
        }
        sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(tenant.as_str())
            .execute(&mut *conn)
            .await?;
        require_unprotected(conn, tenant, &target, change).await?;
        let had_superadmin = superadmin_user_exists(conn).await?;
        Ok(Some(Self { had_superadmin }))
    }

    /// Fails with `LastSuperadmin` when the change removed the last
    /// superadmin user (call it after the change's writes, before commit).
    pub(super) async fn finish(self, conn: &mut Conn) -> StoreResult<()> {
        if self.had_superadmin && !superadmin_user_exists(conn).await? {
            return Err(StoreError::LastSuperadmin);
        }
        Ok(())
    }
}

/// Users (`$2`, a list) of `_platform` (`$1`) holding a built-in role,
/// directly or through a group.
const USERS_HOLDING_BUILTIN: Dialect = Dialect {
    sqlite: "SELECT 1 FROM user_roles l JOIN roles r \
               ON r.tenant_id = l.tenant_id AND r.name = l.role_name \
             WHERE l.tenant_id = $1 AND r.builtin \
               AND l.username IN (SELECT value FROM json_each($2)) \
             UNION ALL \
             SELECT 1 FROM group_users m \
             JOIN group_roles g ON g.tenant_id = m.tenant_id AND g.group_name = m.group_name \
             JOIN roles r ON r.tenant_id = g.tenant_id AND r.name = g.role_name \
             WHERE m.tenant_id = $1 AND r.builtin \
               AND m.username IN (SELECT value FROM json_each($2)) \
             LIMIT 1",
    postgres: "SELECT 1 FROM user_roles l JOIN roles r \
                 ON r.tenant_id = l.tenant_id AND r.name = l.role_name \
               WHERE l.tenant_id = $1 AND r.builtin AND l.username = ANY($2) \
               UNION ALL \
               SELECT 1 FROM group_users m \
               JOIN group_roles g ON g.tenant_id = m.tenant_id AND g.group_name = m.group_name \
               JOIN roles r ON r.tenant_id = g.tenant_id AND r.name = g.role_name \
               WHERE m.tenant_id = $1 AND r.builtin AND m.username = ANY($2) \
               LIMIT 1",
};

/// The same for keys (`$2`: key ids).
const KEYS_HOLDING_BUILTIN: Dialect = Dialect {
    sqlite: "SELECT 1 FROM api_key_roles l JOIN roles r \
               ON r.tenant_id = l.tenant_id AND r.name = l.role_name \
             WHERE l.tenant_id = $1 AND r.builtin \
               AND l.key_id IN (SELECT value FROM json_each($2)) \
             UNION ALL \
             SELECT 1 FROM group_keys m \
             JOIN group_roles g ON g.tenant_id = m.tenant_id AND g.group_name = m.group_name \
             JOIN roles r ON r.tenant_id = g.tenant_id AND r.name = g.role_name \
             WHERE m.tenant_id = $1 AND r.builtin \
               AND m.key_id IN (SELECT value FROM json_each($2)) \
             LIMIT 1",
    postgres: "SELECT 1 FROM api_key_roles l JOIN roles r \
                 ON r.tenant_id = l.tenant_id AND r.name = l.role_name \
               WHERE l.tenant_id = $1 AND r.builtin AND l.key_id = ANY($2) \
               UNION ALL \
               SELECT 1 FROM group_keys m \
               JOIN group_roles g ON g.tenant_id = m.tenant_id AND g.group_name = m.group_name \
               JOIN roles r ON r.tenant_id = g.tenant_id AND r.name = g.role_name \
               WHERE m.tenant_id = $1 AND r.builtin AND m.key_id = ANY($2) \
               LIMIT 1",
};

/// A group's members join or leave with a PUT, and that changes what they
/// may do: when a member joining or leaving a `_platform` group holds a
/// built-in role, the PUT is a superadmin's (`ProtectedPrincipal`).
/// Two statements for the members, whatever their number.
pub(super) async fn require_members_unprotected(
    conn: &mut Conn,
    tenant: &TenantId,
    group: &GroupName,
    spec: &GroupSpec,
    change: &Change,
) -> StoreResult<()> {
    if !tenant.is_platform() || change.by_superadmin {
        return Ok(());
    }
    let mut users: Vec<String> = sqlx::query_scalar(
        "SELECT username FROM group_users WHERE tenant_id = $1 AND group_name = $2",
    )
    .bind(tenant.as_str())
    .bind(group.as_str())
    .fetch_all(&mut *conn)
    .await?;
    users.extend(spec.users.iter().map(ToString::to_string));
    let mut keys: Vec<String> = sqlx::query_scalar(
        "SELECT key_id FROM group_keys WHERE tenant_id = $1 AND group_name = $2",
    )
    .bind(tenant.as_str())
    .bind(group.as_str())
    .fetch_all(&mut *conn)
    .await?;
    keys.extend(spec.api_keys.iter().map(ToString::to_string));
    if any_holds_builtin(conn, &USERS_HOLDING_BUILTIN, users).await?
        || any_holds_builtin(conn, &KEYS_HOLDING_BUILTIN, keys).await?
    {
        return Err(StoreError::ProtectedPrincipal);
    }
    Ok(())
}

/// `ProtectedPrincipal` when the actor is no superadmin and `target`, in
/// `_platform`, holds a built-in role. All a key change needs: no key
/// counts as the last superadmin, so it takes no lock.
pub(super) async fn require_unprotected(
    conn: &mut Conn,
    tenant: &TenantId,
    target: &Target<'_>,
    change: &Change,
) -> StoreResult<()> {
    if tenant.is_platform() && !change.by_superadmin && holds_builtin(conn, target).await? {
        return Err(StoreError::ProtectedPrincipal);
    }
    Ok(())
}

/// Finishes a guarded change, if it was one.
pub(super) async fn finish(guard: Option<PlatformChange>, conn: &mut Conn) -> StoreResult<()> {
    match guard {
        Some(g) => g.finish(conn).await,
        None => Ok(()),
    }
}

/// Does `target` hold a built-in role, directly or through a group (a
/// group: among its own roles)?
async fn holds_builtin(conn: &mut Conn, target: &Target<'_>) -> StoreResult<bool> {
    match target {
        Target::User(u) => {
            any_holds_builtin(conn, &USERS_HOLDING_BUILTIN, vec![u.to_string()]).await
        }
        Target::Key(k) => any_holds_builtin(conn, &KEYS_HOLDING_BUILTIN, vec![k.to_string()]).await,
        Target::Group(g) => {
            let found: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM group_roles g JOIN roles r \
                   ON r.tenant_id = g.tenant_id AND r.name = g.role_name \
                 WHERE g.tenant_id = $1 AND g.group_name = $2 AND r.builtin",
            )
            .bind(TenantId::PLATFORM)
            .bind(g.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            Ok(found.is_some())
        }
    }
}

/// Does any of `members` hold a built-in role (`statement`: one of the
/// `…_HOLDING_BUILTIN` lists)?
async fn any_holds_builtin(
    conn: &mut Conn,
    statement: &Dialect,
    members: Vec<String>,
) -> StoreResult<bool> {
    if members.is_empty() {
        return Ok(false);
    }
    let found: Option<i32> = sqlx::query_scalar(sql(statement))
        .bind(TenantId::PLATFORM)
        .bind(text_list(members))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Is there a `_platform` user holding `superadmin`, directly or through a
/// group?
async fn superadmin_user_exists(conn: &mut Conn) -> StoreResult<bool> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM user_roles WHERE tenant_id = $1 AND role_name = $2 \
         UNION ALL \
         SELECT 1 FROM group_users m \
         JOIN group_roles g ON g.tenant_id = m.tenant_id AND g.group_name = m.group_name \
         WHERE m.tenant_id = $1 AND g.role_name = $2 \
         LIMIT 1",
    )
    .bind(TenantId::PLATFORM)
    .bind(RoleName::SUPERADMIN)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}
