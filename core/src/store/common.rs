//! The queries both backends share, written once.
//!
//! sqlx has no practical way to be generic over the database for this many
//! queries (every bound type needs its own higher-ranked bound), so
//! `sql_store!` expands the shared methods into each backend's `Store` impl,
//! where every type is concrete. SQLite accepts `$1`-style parameters, and
//! the `Ts` column type maps timestamps on both, so the SQL text is shared.
//! What truly differs (claiming with `SKIP LOCKED`, id lists, how a write
//! transaction begins, NOTIFY) is written in the backend modules and passed
//! in as `$specific`.
//!
//! A backend type provides `pool`, `begin_write()`, `notify_outbox(conn)` and
//! `notify_keys(conn, payload)` (payload `key:{id}` or `tenant:{id}`: which
//! cached verifications other replicas must drop).

/// The key columns every key read selects, with its revocation event.
macro_rules! key_select {
    ($($tail:literal),*) => {
        concat!(
            "SELECT k.key_id, k.tenant_id, k.name, k.start, k.status, k.created_by, k.created_at, \
                    k.expires_at, k.last_used_at, k.revoked_at, k.revoked_by, \
                    k.revocation_event_id AS event_id, o.attempts, o.published_at, o.dead_at, \
                    o.last_error, o.live_ingestors, \
                    (SELECT COUNT(*) FROM event_acks a WHERE a.event_id = k.revocation_event_id) \
                      AS applied_by \
             FROM api_keys k LEFT JOIN outbox o ON o.event_id = k.revocation_event_id ",
            $($tail),*
        )
    };
}

/// Keys with their grants, as verification reads them: one row per grant
/// privilege (NULL grant columns for a key without roles), ordered by key,
/// role, group and position. `$ids` is each backend's "key id among the
/// list bound as `$1`" test, on `{}` (the column).
macro_rules! key_grants_select {
    ($kr:literal, $gk:literal, $k:literal) => {
        concat!(
            "SELECT k.key_id, k.tenant_id, k.secret_hash, k.status, k.expires_at, \
                    g.role_name, g.group_name, g.privilege, g.stream, g.position \
             FROM api_keys k LEFT JOIN ( \
               SELECT kr.key_id AS owner, kr.role_name, NULL AS group_name, \
                      p.privilege, p.stream, p.position \
               FROM api_key_roles kr LEFT JOIN role_privileges p \
                 ON p.tenant_id = kr.tenant_id AND p.role_name = kr.role_name \
               WHERE ", $kr, " \
               UNION ALL \
               SELECT gk.key_id, gr.role_name, gk.group_name, p.privilege, p.stream, p.position \
               FROM group_keys gk \
               JOIN group_roles gr ON gr.tenant_id = gk.tenant_id AND gr.group_name = gk.group_name \
               LEFT JOIN role_privileges p \
                 ON p.tenant_id = gr.tenant_id AND p.role_name = gr.role_name \
               WHERE ", $gk, ") g ON g.owner = k.key_id \
             WHERE ", $k, " \
             ORDER BY k.key_id, g.role_name, g.group_name, g.position"
        )
    };
}
pub(crate) use key_grants_select;

macro_rules! sql_store {
    ($store:ty, $db:ty, { $($specific:tt)* }) => {
        impl $store {
            /// Role names of `names` that `tenant` does not have.
            async fn missing_roles(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                names: &[$crate::ids::RoleName],
            ) -> $crate::store::StoreResult<Vec<String>> {
                let mut missing = Vec::new();
                for name in names {
                    let found: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM roles WHERE tenant_id = $1 AND name = $2")
                            .bind(tenant.as_str())
                            .bind(name.as_str())
                            .fetch_optional(&mut *conn)
                            .await?;
                    if found.is_none() {
                        missing.push(name.to_string());
                    }
                }
                Ok(missing)
            }

            /// Fails with `UnknownRoles` unless every role exists.
            async fn require_roles(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                names: &[$crate::ids::RoleName],
            ) -> $crate::store::StoreResult<()> {
                let missing = Self::missing_roles(conn, tenant, names).await?;
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err($crate::store::StoreError::UnknownRoles(missing))
                }
            }

            /// Maps a failed role-link insert: a role deleted since
            /// `require_roles` looked (its FK fired) is `UnknownRoles`.
            async fn link_error(
                &self,
                e: sqlx::Error,
                tenant: &$crate::ids::TenantId,
                names: &[$crate::ids::RoleName],
            ) -> $crate::store::StoreError {
                if !$crate::store::error::is_fk_violation(&e) {
                    return e.into();
                }
                let mut conn = match self.pool.acquire().await {
                    Ok(c) => c,
                    Err(e) => return e.into(),
                };
                match Self::missing_roles(&mut conn, tenant, names).await {
                    Ok(m) if !m.is_empty() => $crate::store::StoreError::UnknownRoles(m),
                    Ok(_) => $crate::store::StoreError::UnknownRoles(
                        names.iter().map(ToString::to_string).collect(),
                    ),
                    Err(e) => e,
                }
            }

            async fn is_builtin_role(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::RoleName,
            ) -> $crate::store::StoreResult<bool> {
                let builtin: Option<bool> = sqlx::query_scalar(
                    "SELECT builtin FROM roles WHERE tenant_id = $1 AND name = $2",
                )
                .bind(tenant.as_str())
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?;
                Ok(builtin.unwrap_or(false))
            }

            async fn roles_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                name: Option<&$crate::ids::RoleName>,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Role>> {
                let rows: Vec<$crate::store::rows::RolePrivilegeRow> = sqlx::query_as(
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
                $crate::store::rows::fold_roles(rows)
            }

            async fn users_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                username: Option<&$crate::ids::Username>,
            ) -> $crate::store::StoreResult<Vec<$crate::store::User>> {
                let name = username.map(|u| u.as_str());
                let users: Vec<$crate::store::rows::UserRow> = sqlx::query_as(
                    "SELECT tenant_id, username, created_at FROM users \
                     WHERE tenant_id = $1 AND ($2 IS NULL OR username = $2) ORDER BY username",
                )
                .bind(tenant.as_str())
                .bind(name)
                .fetch_all(&mut *conn)
                .await?;
                let links: Vec<$crate::store::rows::NameLinkRow> = sqlx::query_as(
                    "SELECT username AS owner, role_name AS name FROM user_roles \
                     WHERE tenant_id = $1 AND ($2 IS NULL OR username = $2) \
                     ORDER BY username, role_name",
                )
                .bind(tenant.as_str())
                .bind(name)
                .fetch_all(&mut *conn)
                .await?;
                let roles = $crate::store::rows::links_by_owner(links);
                users
                    .into_iter()
                    .map(|u| {
                        let r = roles.get(&u.username).map(Vec::as_slice).unwrap_or_default();
                        u.into_user(r)
                    })
                    .collect()
            }

            async fn insert_user_roles(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                username: &$crate::ids::Username,
                roles: &[$crate::ids::RoleName],
            ) -> $crate::store::StoreResult<()> {
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
                        return Err(self.link_error(e, tenant, roles).await);
                    }
                }
                Ok(())
            }

            async fn insert_user(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                user: &$crate::store::NewUser,
            ) -> $crate::store::StoreResult<()> {
                Self::require_roles(conn, &user.tenant_id, &user.roles).await?;
                sqlx::query(
                    "INSERT INTO users (username, tenant_id, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(user.username.as_str())
                .bind(user.tenant_id.as_str())
                .bind(&user.password_hash)
                .bind($crate::store::timestamp::Ts(user.created_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    if $crate::store::error::is_unique_violation(&e) {
                        $crate::store::StoreError::DuplicateUsername
                    } else if $crate::store::error::is_fk_violation(&e) {
                        $crate::store::StoreError::TenantNotFound
                    } else {
                        e.into()
                    }
                })?;
                self.insert_user_roles(conn, &user.tenant_id, &user.username, &user.roles).await
            }

            async fn groups_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                group: Option<&$crate::ids::GroupName>,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Group>> {
                use $crate::store::rows::{links_by_owner, GroupRow, NameLinkRow};
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
                let get = |i: usize, g: &str| -> &[String] {
                    links[i].get(g).map(Vec::as_slice).unwrap_or_default()
                };
                groups
                    .into_iter()
                    .map(|g| {
                        let (r, u, k) = (get(0, &g.name), get(1, &g.name), get(2, &g.name));
                        g.into_group(r, u, k)
                    })
                    .collect()
            }

            async fn keys_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                rows: Vec<$crate::store::rows::KeyRow>,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ApiKey>> {
                // Rows come newest first: the page spans [last, first] by id.
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
                    return Ok(Vec::new());
                };
                let links: Vec<$crate::store::rows::NameLinkRow> = sqlx::query_as(
                    "SELECT key_id AS owner, role_name AS name FROM api_key_roles \
                     WHERE tenant_id = $1 AND key_id >= $2 AND key_id <= $3 \
                     ORDER BY key_id, role_name",
                )
                .bind(&first.tenant_id)
                .bind(&last.key_id)
                .bind(&first.key_id)
                .fetch_all(&mut *conn)
                .await?;
                let roles = $crate::store::rows::links_by_owner(links);
                rows.into_iter()
                    .map(|k| {
                        let r = roles.get(&k.key_id).map(Vec::as_slice).unwrap_or_default();
                        k.into_key(r, now)
                    })
                    .collect()
            }

            async fn key_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                tenant: &$crate::ids::TenantId,
                key_id: $crate::ids::KeyId,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                let row: Option<$crate::store::rows::KeyRow> = sqlx::query_as(
                    $crate::store::common::key_select!("WHERE k.tenant_id = $1 AND k.key_id = $2"),
                )
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .fetch_optional(&mut *conn)
                .await?;
                let row = row.ok_or($crate::store::StoreError::KeyNotFound)?;
                Self::keys_in(conn, vec![row], now)
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::KeyNotFound)
            }

            /// Grant rows of a principal: `$1` its id, the two SELECTs its
            /// direct role links and its group memberships.
            async fn grants(
                conn: &mut <$db as sqlx::Database>::Connection,
                sql: &'static str,
                tenant: &str,
                principal: &str,
            ) -> $crate::store::StoreResult<Vec<$crate::rbac::RoleGrant>> {
                let rows: Vec<$crate::store::rows::GrantRow> = sqlx::query_as(sql)
                    .bind(tenant)
                    .bind(principal)
                    .fetch_all(&mut *conn)
                    .await?;
                $crate::store::rows::fold_grants(rows)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            $($specific)*

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            #[tracing::instrument(skip(self))]
            async fn create_tenant(
                &self,
                id: &$crate::ids::TenantId,
                name: Option<&str>,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::Tenant> {
                let now = $crate::store::timestamp::truncate_micros(now);
                sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(id.as_str())
                    .bind(name)
                    .bind($crate::store::timestamp::Ts(now))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if $crate::store::error::is_unique_violation(&e) {
                            $crate::store::StoreError::TenantExists
                        } else {
                            e.into()
                        }
                    })?;
                Ok($crate::store::Tenant {
                    id: id.clone(),
                    name: name.map(str::to_owned),
                    created_at: now,
                })
            }

            #[tracing::instrument(skip(self))]
            async fn list_tenants(&self) -> $crate::store::StoreResult<Vec<$crate::store::Tenant>> {
                let rows: Vec<$crate::store::rows::TenantRow> =
                    sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn tenant_exists(
                &self,
                id: &$crate::ids::TenantId,
            ) -> $crate::store::StoreResult<bool> {
                let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
            }

            #[tracing::instrument(skip(self, privileges))]
            async fn put_role(
                &self,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::RoleName,
                privileges: &[$crate::privilege::Privilege],
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<($crate::store::Role, bool)> {
                let now = $crate::store::timestamp::Ts($crate::store::timestamp::truncate_micros(now));
                let mut tx = self.begin_write().await?;
                if Self::is_builtin_role(&mut tx, tenant, name).await? {
                    return Err($crate::store::StoreError::BuiltinRole);
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
                .map_err(|e| {
                    if $crate::store::error::is_fk_violation(&e) {
                        $crate::store::StoreError::TenantNotFound
                    } else {
                        e.into()
                    }
                })?
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
                self.notify_keys(&mut tx, &format!("tenant:{tenant}")).await?;
                let role = Self::roles_in(&mut tx, tenant, Some(name))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::RoleNotFound)?;
                tx.commit().await?;
                Ok((role, created))
            }

            #[tracing::instrument(skip(self))]
            async fn get_role(
                &self,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::RoleName,
            ) -> $crate::store::StoreResult<$crate::store::Role> {
                let mut conn = self.pool.acquire().await?;
                Self::roles_in(&mut conn, tenant, Some(name))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::RoleNotFound)
            }

            #[tracing::instrument(skip(self))]
            async fn list_roles(
                &self,
                tenant: &$crate::ids::TenantId,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Role>> {
                let mut conn = self.pool.acquire().await?;
                Self::roles_in(&mut conn, tenant, None).await
            }

            #[tracing::instrument(skip(self))]
            async fn delete_role(
                &self,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::RoleName,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.begin_write().await?;
                if Self::is_builtin_role(&mut tx, tenant, name).await? {
                    return Err($crate::store::StoreError::BuiltinRole);
                }
                // The foreign keys from user, key and group role links refuse
                // the delete while anything holds the role.
                let deleted = sqlx::query("DELETE FROM roles WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if $crate::store::error::is_fk_violation(&e) {
                            $crate::store::StoreError::RoleInUse
                        } else {
                            e.into()
                        }
                    })?;
                if deleted.rows_affected() == 0 {
                    return Err($crate::store::StoreError::RoleNotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            #[tracing::instrument(skip(self, user), fields(username = %user.username))]
            async fn create_user(
                &self,
                user: &$crate::store::NewUser,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let mut user = user.clone();
                user.created_at = $crate::store::timestamp::truncate_micros(user.created_at);
                let mut tx = self.begin_write().await?;
                self.insert_user(&mut tx, &user).await?;
                tx.commit().await?;
                let mut roles = user.roles.clone();
                roles.sort();
                roles.dedup();
                Ok($crate::store::User {
                    tenant_id: user.tenant_id,
                    username: user.username,
                    roles,
                    created_at: user.created_at,
                })
            }

            #[tracing::instrument(skip(self, user), fields(username = %user.username))]
            async fn bootstrap_user(
                &self,
                user: &$crate::store::NewUser,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                    .fetch_one(&mut *tx)
                    .await?;
                if users > 0 {
                    return Ok(false);
                }
                match self.insert_user(&mut tx, user).await {
                    // Another replica bootstrapped at the same moment.
                    Err($crate::store::StoreError::DuplicateUsername) => Ok(false),
                    Err(e) => Err(e),
                    Ok(()) => {
                        tx.commit().await?;
                        Ok(true)
                    }
                }
            }

            #[tracing::instrument(skip(self))]
            async fn get_user(
                &self,
                tenant: &$crate::ids::TenantId,
                username: &$crate::ids::Username,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let mut conn = self.pool.acquire().await?;
                Self::users_in(&mut conn, tenant, Some(username))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::UserNotFound)
            }

            #[tracing::instrument(skip(self))]
            async fn list_users(
                &self,
                tenant: &$crate::ids::TenantId,
            ) -> $crate::store::StoreResult<Vec<$crate::store::User>> {
                let mut conn = self.pool.acquire().await?;
                Self::users_in(&mut conn, tenant, None).await
            }

            #[tracing::instrument(skip(self))]
            async fn set_user_roles(
                &self,
                tenant: &$crate::ids::TenantId,
                username: &$crate::ids::Username,
                roles: &[$crate::ids::RoleName],
            ) -> $crate::store::StoreResult<$crate::store::User> {
                let mut tx = self.begin_write().await?;
                let exists: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM users WHERE tenant_id = $1 AND username = $2",
                )
                .bind(tenant.as_str())
                .bind(username.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    return Err($crate::store::StoreError::UserNotFound);
                }
                Self::require_roles(&mut tx, tenant, roles).await?;
                sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1 AND username = $2")
                    .bind(tenant.as_str())
                    .bind(username.as_str())
                    .execute(&mut *tx)
                    .await?;
                self.insert_user_roles(&mut tx, tenant, username, roles).await?;
                // Remembered Basic proofs of this user hold its old roles.
                self.notify_keys(&mut tx, &format!("user:{username}")).await?;
                let user = Self::users_in(&mut tx, tenant, Some(username))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::UserNotFound)?;
                tx.commit().await?;
                Ok(user)
            }

            #[tracing::instrument(skip(self))]
            async fn delete_user(
                &self,
                tenant: &$crate::ids::TenantId,
                username: &$crate::ids::Username,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let deleted =
                    sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND username = $2")
                        .bind(tenant.as_str())
                        .bind(username.as_str())
                        .execute(&mut *tx)
                        .await?;
                if deleted.rows_affected() == 0 {
                    return Err($crate::store::StoreError::UserNotFound);
                }
                // Remembered Basic proofs of this user must stop working.
                self.notify_keys(&mut tx, &format!("user:{username}")).await?;
                tx.commit().await?;
                Ok(())
            }

            #[tracing::instrument(skip(self))]
            async fn user_credentials(
                &self,
                username: &$crate::ids::Username,
            ) -> $crate::store::StoreResult<Option<$crate::store::UserCredentials>> {
                let row: Option<$crate::store::rows::CredentialsRow> = sqlx::query_as(
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
                tenant: &$crate::ids::TenantId,
                username: &$crate::ids::Username,
            ) -> $crate::store::StoreResult<Vec<$crate::rbac::RoleGrant>> {
                let mut conn = self.pool.acquire().await?;
                Self::grants(
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
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::GroupName,
                spec: &$crate::store::GroupSpec,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<($crate::store::Group, bool)> {
                let now = $crate::store::timestamp::Ts($crate::store::timestamp::truncate_micros(now));
                let mut tx = self.begin_write().await?;
                Self::require_roles(&mut tx, tenant, &spec.roles).await?;
                let mut unknown_users = Vec::new();
                for user in &spec.users {
                    let found: Option<i32> = sqlx::query_scalar(
                        "SELECT 1 FROM users WHERE tenant_id = $1 AND username = $2",
                    )
                    .bind(tenant.as_str())
                    .bind(user.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if found.is_none() {
                        unknown_users.push(user.clone());
                    }
                }
                if !unknown_users.is_empty() {
                    return Err($crate::store::StoreError::UnknownUsers(unknown_users));
                }
                let mut unknown_keys = Vec::new();
                for key in &spec.api_keys {
                    let found: Option<i32> = sqlx::query_scalar(
                        "SELECT 1 FROM api_keys WHERE tenant_id = $1 AND key_id = $2",
                    )
                    .bind(tenant.as_str())
                    .bind(key.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if found.is_none() {
                        unknown_keys.push(*key);
                    }
                }
                if !unknown_keys.is_empty() {
                    return Err($crate::store::StoreError::UnknownKeys(unknown_keys));
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
                .map_err(|e| {
                    if $crate::store::error::is_fk_violation(&e) {
                        $crate::store::StoreError::TenantNotFound
                    } else {
                        e.into()
                    }
                })?
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
                        return Err(self.link_error(e, tenant, &spec.roles).await);
                    }
                }
                // Keys joining or leaving the group gain or lose its roles:
                // their cached verifications must go.
                self.notify_keys(&mut tx, &format!("tenant:{tenant}")).await?;
                let group = Self::groups_in(&mut tx, tenant, Some(name))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::GroupNotFound)?;
                tx.commit().await?;
                Ok((group, created))
            }

            #[tracing::instrument(skip(self))]
            async fn get_group(
                &self,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::GroupName,
            ) -> $crate::store::StoreResult<$crate::store::Group> {
                let mut conn = self.pool.acquire().await?;
                Self::groups_in(&mut conn, tenant, Some(name))
                    .await?
                    .pop()
                    .ok_or($crate::store::StoreError::GroupNotFound)
            }

            #[tracing::instrument(skip(self))]
            async fn list_groups(
                &self,
                tenant: &$crate::ids::TenantId,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Group>> {
                let mut conn = self.pool.acquire().await?;
                Self::groups_in(&mut conn, tenant, None).await
            }

            #[tracing::instrument(skip(self))]
            async fn delete_group(
                &self,
                tenant: &$crate::ids::TenantId,
                name: &$crate::ids::GroupName,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.begin_write().await?;
                self.notify_keys(&mut tx, &format!("tenant:{tenant}")).await?;
                let deleted =
                    sqlx::query("DELETE FROM rbac_groups WHERE tenant_id = $1 AND name = $2")
                        .bind(tenant.as_str())
                        .bind(name.as_str())
                        .execute(&mut *tx)
                        .await?;
                if deleted.rows_affected() == 0 {
                    return Err($crate::store::StoreError::GroupNotFound);
                }
                tx.commit().await?;
                Ok(())
            }

            #[tracing::instrument(skip(self, key), fields(key_id = %key.key_id))]
            async fn create_key(
                &self,
                key: &$crate::store::NewApiKey,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                use $crate::store::timestamp::{truncate_micros, Ts};
                let mut tx = self.begin_write().await?;
                Self::require_roles(&mut tx, &key.tenant_id, &key.roles).await?;
                sqlx::query(
                    "INSERT INTO api_keys (key_id, tenant_id, name, secret_hash, start, status, \
                                           created_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8)",
                )
                .bind(key.key_id.to_string())
                .bind(key.tenant_id.as_str())
                .bind(key.name.as_str())
                .bind(&key.secret_hash)
                .bind(&key.start)
                .bind(&key.created_by)
                .bind(Ts(truncate_micros(key.created_at)))
                .bind(key.expires_at.map(|t| Ts(truncate_micros(t))))
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if $crate::store::error::is_unique_violation(&e) {
                        $crate::store::StoreError::DuplicateKeyName
                    } else if $crate::store::error::is_fk_violation(&e) {
                        $crate::store::StoreError::TenantNotFound
                    } else {
                        e.into()
                    }
                })?;
                for role in &key.roles {
                    let inserted = sqlx::query(
                        "INSERT INTO api_key_roles (tenant_id, key_id, role_name) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(key.tenant_id.as_str())
                    .bind(key.key_id.to_string())
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await;
                    if let Err(e) = inserted {
                        return Err(self.link_error(e, &key.tenant_id, &key.roles).await);
                    }
                }
                let created = Self::key_in(&mut tx, &key.tenant_id, key.key_id, now).await?;
                tx.commit().await?;
                Ok(created)
            }

            #[tracing::instrument(skip(self))]
            async fn get_key(
                &self,
                tenant: &$crate::ids::TenantId,
                key_id: $crate::ids::KeyId,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                let mut conn = self.pool.acquire().await?;
                Self::key_in(&mut conn, tenant, key_id, now).await
            }

            #[tracing::instrument(skip(self))]
            async fn list_keys(
                &self,
                tenant: &$crate::ids::TenantId,
                query: &$crate::store::KeyQuery,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ApiKey>> {
                let mut conn = self.pool.acquire().await?;
                let rows: Vec<$crate::store::rows::KeyRow> = sqlx::query_as(
                    $crate::store::common::key_select!(
                        "WHERE k.tenant_id = $1 \
                           AND ($2 = 'all' \
                                OR ($2 = 'revoked' AND k.status = 'revoked') \
                                OR ($2 = 'active' AND k.status = 'active' \
                                    AND (k.expires_at IS NULL OR k.expires_at > $3)) \
                                OR ($2 = 'expired' AND k.status = 'active' AND k.expires_at <= $3)) \
                           AND ($4 IS NULL OR k.key_id < $4) \
                         ORDER BY k.key_id DESC LIMIT $5"
                    ),
                )
                .bind(tenant.as_str())
                .bind(query.status.as_str())
                .bind($crate::store::timestamp::Ts(now))
                .bind(query.before.map(|k| k.to_string()))
                .bind(i64::from(query.limit))
                .fetch_all(&mut *conn)
                .await?;
                Self::keys_in(&mut conn, rows, now).await
            }

            #[tracing::instrument(skip(self))]
            async fn key_credentials(
                &self,
                key_id: $crate::ids::KeyId,
            ) -> $crate::store::StoreResult<Option<$crate::store::KeyCredentials>> {
                Ok(self.key_credentials_many(&[key_id]).await?.pop())
            }

            #[tracing::instrument(skip(self, old_hash, new_hash))]
            async fn upgrade_key_hash(
                &self,
                key_id: $crate::ids::KeyId,
                old_hash: &str,
                new_hash: &str,
            ) -> $crate::store::StoreResult<bool> {
                // Compare-and-set: a concurrent upgrade (the same digest)
                // or anything else that rewrote the hash wins.
                let done = sqlx::query(
                    "UPDATE api_keys SET secret_hash = $3 WHERE key_id = $1 AND secret_hash = $2",
                )
                .bind(key_id.to_string())
                .bind(old_hash)
                .bind(new_hash)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip(self))]
            async fn revoke_key(
                &self,
                tenant: &$crate::ids::TenantId,
                key_id: $crate::ids::KeyId,
                revoked_by: &str,
                event_id: $crate::ids::EventId,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::Revoked> {
                let now = $crate::store::timestamp::truncate_micros(now);
                let ts = $crate::store::timestamp::Ts(now);
                let mut tx = self.begin_write().await?;
                // Only the call that flips the row writes the event: a second
                // or concurrent revoke changes nothing and writes nothing.
                let flipped = sqlx::query(
                    "UPDATE api_keys SET status = 'revoked', revoked_at = $3, revoked_by = $4, \
                                         revocation_event_id = $5 \
                     WHERE tenant_id = $1 AND key_id = $2 AND status = 'active'",
                )
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .bind(ts)
                .bind(revoked_by)
                .bind(event_id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if flipped {
                    sqlx::query(
                        "INSERT INTO outbox (event_id, kind, tenant_id, key_id, created_at, \
                                             next_attempt_at) \
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(event_id.to_string())
                    .bind($crate::store::KEY_REVOKED)
                    .bind(tenant.as_str())
                    .bind(key_id.to_string())
                    .bind(ts)
                    .execute(&mut *tx)
                    .await?;
                    self.notify_outbox(&mut tx).await?;
                    self.notify_keys(&mut tx, &format!("key:{key_id}")).await?;
                }
                let key = Self::key_in(&mut tx, tenant, key_id, now).await?;
                tx.commit().await?;
                Ok($crate::store::Revoked { key, newly_revoked: flipped })
            }

            #[tracing::instrument(skip(self, used), fields(keys = used.len()))]
            async fn record_key_usage(
                &self,
                used: &[($crate::ids::KeyId, $crate::store::Timestamp)],
            ) -> $crate::store::StoreResult<u64> {
                if used.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.begin_write().await?;
                let mut updated = 0;
                for (key_id, at) in used {
                    updated += sqlx::query(
                        "UPDATE api_keys SET last_used_at = $2 \
                         WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                    )
                    .bind(key_id.to_string())
                    .bind($crate::store::timestamp::Ts(*at))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(updated)
            }

            #[tracing::instrument(skip(self, last_error))]
            async fn schedule_retry(
                &self,
                owner: &str,
                id: i64,
                next_attempt_at: $crate::store::Timestamp,
                last_error: &str,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3, \
                                       last_error = $4, lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND published_at IS NULL",
                )
                .bind(id)
                .bind(owner)
                .bind($crate::store::timestamp::Ts(next_attempt_at))
                .bind(last_error)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip(self, last_error))]
            async fn mark_dead(
                &self,
                owner: &str,
                id: i64,
                last_error: &str,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, dead_at = $4, last_error = $3, \
                                       lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND published_at IS NULL",
                )
                .bind(id)
                .bind(owner)
                .bind(last_error)
                .bind($crate::store::timestamp::Ts(now))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(skip(self))]
            async fn retry_revocation(
                &self,
                tenant: &$crate::ids::TenantId,
                key_id: $crate::ids::KeyId,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::ApiKey> {
                let mut tx = self.begin_write().await?;
                let event: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT revocation_event_id FROM api_keys WHERE tenant_id = $1 AND key_id = $2",
                )
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let event = event
                    .ok_or($crate::store::StoreError::KeyNotFound)?
                    .ok_or($crate::store::StoreError::InvalidState)?;
                let revived = sqlx::query(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $2, \
                                       last_error = NULL \
                     WHERE event_id = $1 AND dead_at IS NOT NULL",
                )
                .bind(&event)
                .bind($crate::store::timestamp::Ts(now))
                .execute(&mut *tx)
                .await?;
                if revived.rows_affected() == 0 {
                    return Err($crate::store::StoreError::InvalidState);
                }
                self.notify_outbox(&mut tx).await?;
                let key = Self::key_in(&mut tx, tenant, key_id, now).await?;
                tx.commit().await?;
                Ok(key)
            }

            #[tracing::instrument(skip(self))]
            async fn retry_all_dead(
                &self,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let revived = sqlx::query(
                    "UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = $1, \
                                       last_error = NULL \
                     WHERE dead_at IS NOT NULL",
                )
                .bind($crate::store::timestamp::Ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                self.notify_outbox(&mut tx).await?;
                tx.commit().await?;
                Ok(revived)
            }

            #[tracing::instrument(skip(self))]
            async fn purge(
                &self,
                before: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::Purged> {
                let before = $crate::store::timestamp::Ts(before);
                let mut tx = self.begin_write().await?;
                let acks = sqlx::query(
                    "DELETE FROM event_acks WHERE event_id IN \
                       (SELECT event_id FROM outbox WHERE published_at < $1)",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let events = sqlx::query("DELETE FROM outbox WHERE published_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok($crate::store::Purged { events, acks })
            }

            async fn outbox_stats(&self) -> $crate::store::StoreResult<$crate::store::OutboxStats> {
                let (pending, oldest, dead): (i64, Option<$crate::store::timestamp::Ts>, i64) =
                    sqlx::query_as(
                        "SELECT \
                           (SELECT COUNT(*) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL), \
                           (SELECT MIN(created_at) FROM outbox WHERE published_at IS NULL AND dead_at IS NULL), \
                           (SELECT COUNT(*) FROM outbox WHERE dead_at IS NOT NULL)",
                    )
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::store::OutboxStats {
                    pending,
                    oldest_pending_at: oldest.map(|t| t.0),
                    dead,
                })
            }

            #[tracing::instrument(skip(self))]
            async fn ingestor_heartbeat(
                &self,
                id: &str,
                queue: &str,
                at: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO ingestors (id, queue, first_seen_at, last_seen_at) \
                     VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, \
                       last_seen_at = CASE WHEN excluded.last_seen_at > ingestors.last_seen_at \
                                           THEN excluded.last_seen_at \
                                           ELSE ingestors.last_seen_at END",
                )
                .bind(id)
                .bind(queue)
                .bind($crate::store::timestamp::Ts(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            #[tracing::instrument(skip(self))]
            async fn list_ingestors(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::IngestorRecord>> {
                let rows: Vec<$crate::store::rows::IngestorRow> = sqlx::query_as(
                    "SELECT i.id, i.queue, i.first_seen_at, i.last_seen_at, \
                       (SELECT COUNT(*) FROM outbox o \
                        WHERE o.published_at IS NOT NULL AND o.published_at >= i.first_seen_at \
                          AND NOT EXISTS (SELECT 1 FROM event_acks a \
                                          WHERE a.event_id = o.event_id AND a.ingestor_id = i.id)) \
                         AS unacked \
                     FROM ingestors i ORDER BY i.id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            #[tracing::instrument(skip(self))]
            async fn record_ack(
                &self,
                event_id: $crate::ids::EventId,
                ingestor_id: &str,
                applied_at: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO event_acks (event_id, ingestor_id, applied_at) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM outbox WHERE event_id = $1) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(event_id.to_string())
                .bind(ingestor_id)
                .bind($crate::store::timestamp::Ts(applied_at))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use key_select;
pub(crate) use sql_store;
