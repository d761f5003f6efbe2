//! API key SQL, compiled once per backend (see `store/mod.rs`).

use super::audit::record_in;
use super::builtin::{Target, require_unprotected};
use super::rbac::link_error;
use super::{Conn, Db, SqlStore, sql};
use crate::ids::{KeyId, RoleName, TenantId};
use crate::store::audit::Action;
use crate::store::error::{Violation, on_constraint};
use crate::store::keys::{KeyChange, KeyChanges, KeyGrantRow, KeyRow, KeyStore, keys_credentials};
use crate::store::timestamp::{Ts, truncate_micros};
use crate::store::{
    ApiKey, Change, Dialect, JSON_ROWS_PER_STATEMENT, KEY_REVOKED, KEY_UPDATED, KeyCredentials,
    KeyQuery, KeyUpdate, NewApiKey, Revoked, Rotated, RotatedKey, StatusFilter, StoreError,
    StoreResult, Timestamp, json_rows,
};

/// The key columns every key read selects, with its roles and its
/// revocation event: one statement per page or key. The roles are the
/// key's own links, found by key id (its primary key's prefix), comma
/// separated (a role name has no comma). They were a second statement
/// over the page's id range, which for a sparse filter (50 revoked keys
/// among a million) read every key's links in between: ~49,000 rows, 17-24
/// ms at 1M keys on PostgreSQL (issue #17).
macro_rules! key_select {
    ($($tail:literal),*) => {
        key_select!(@from "api_keys k", $($tail),*)
    };
    (@from $from:literal, $($tail:literal),*) => {
        concat!(
            "SELECT k.key_id, k.tenant_id, k.name, k.start, k.status, k.created_by, k.created_at, \
                    k.expires_at, k.last_used_at, k.revoked_at, k.revoked_by, k.replaces, \
                    k.replaced_by, \
                    k.revocation_event_id AS event_id, o.attempts, o.published_at, o.dead_at, \
                    o.last_error, o.live_ingestors, \
                    (SELECT COUNT(*) FROM event_acks a WHERE a.event_id = k.revocation_event_id) \
                      AS applied_by, \
                    (SELECT string_agg(r.role_name, ',') FROM api_key_roles r \
                      WHERE r.key_id = k.key_id) AS roles \
             FROM ", $from, " LEFT JOIN outbox o ON o.event_id = k.revocation_event_id ",
            $($tail),*
        )
    };
}

/// Keys with their grants, as verification reads them: one row per grant
/// privilege, and for a key without roles of its own one row with NULL
/// grant columns; in no particular order (`keys_credentials` sorts them).
/// The arguments are each backend's "key id among `$1`" test, on `k` and
/// on `gk`.
///
/// Two flat joins, not a join against a union: SQLite materialises a
/// compound subquery on the right of a LEFT JOIN in a temporary b-tree and
/// sorts the result in another, and opening those on every read (their
/// page caches allocated and zeroed) was a third of a cache miss's
/// instructions under callgrind.
///
/// Each join is shaped so that SQLite reads as few b-trees as it can, a
/// cache miss being one such read per key (callgrind: SQLite's own work a
/// miss, 20.1 k instructions before, 15.1 k after): a role's privileges
/// join on the key's tenant, not the link's (the same tenant: a key's role
/// links are written with its tenant), so the link is read from its
/// primary key index alone; `role_privileges_covering` (migration 0010)
/// holds the privilege columns, so no table row is read for them; and the
/// group half starts from the key's group links (`CROSS JOIN` is SQLite's
/// way to fix the order; PostgreSQL plans it as a plain join), so a key in
/// no group costs one index probe there instead of its key row and a probe.
macro_rules! key_grants_select {
    ($k:literal, $gk:literal) => {
        concat!(
            "SELECT k.key_id, k.tenant_id, k.secret_hash, k.status, k.expires_at, \
                    kr.role_name, NULL AS group_name, p.privilege, p.stream, p.position \
             FROM api_keys k \
             LEFT JOIN api_key_roles kr ON kr.key_id = k.key_id \
             LEFT JOIN role_privileges p \
               ON p.tenant_id = k.tenant_id AND p.role_name = kr.role_name \
             WHERE ", $k, " \
             UNION ALL \
             SELECT k.key_id, k.tenant_id, k.secret_hash, k.status, k.expires_at, \
                    gr.role_name, gk.group_name, p.privilege, p.stream, p.position \
             FROM group_keys gk \
             CROSS JOIN api_keys k \
             JOIN group_roles gr ON gr.tenant_id = gk.tenant_id AND gr.group_name = gk.group_name \
             LEFT JOIN role_privileges p \
               ON p.tenant_id = gr.tenant_id AND p.role_name = gr.role_name \
             WHERE k.key_id = gk.key_id AND ", $gk
        )
    };
}

/// Many keys with their grants; `$1` is the list of key ids.
pub(super) const KEY_GRANTS: Dialect = Dialect {
    sqlite: key_grants_select!(
        "k.key_id IN (SELECT value FROM json_each($1))",
        "gk.key_id IN (SELECT value FROM json_each($1))"
    ),
    postgres: key_grants_select!("k.key_id = ANY($1)", "gk.key_id = ANY($1)"),
};

/// One key with its grants, `$1` its id: the same rows as `KEY_GRANTS` for
/// a list of one, cheaper to plan (no list to expand, nothing to
/// materialise per statement).
pub(super) const KEY_GRANTS_OF_ONE: Dialect = Dialect {
    sqlite: key_grants_select!("k.key_id = $1", "gk.key_id = $1"),
    postgres: key_grants_select!("k.key_id = $1", "gk.key_id = $1"),
};

/// `lastUsedAt` for a batch, `$1` a JSON array of `[keyId, microseconds
/// since the epoch]`, never moved backwards. One statement per chunk, not
/// one per key: a flush after a busy interval holds tens of thousands of
/// keys, and a statement each kept the write lock (and, on SQLite, sqlx's
/// connection thread) busy for a large share of every second.
const RECORD_USAGE: Dialect = Dialect {
    sqlite: "UPDATE api_keys SET last_used_at = u.at \
             FROM (SELECT json_extract(value, '$[0]') AS key_id, \
                          MAX(json_extract(value, '$[1]')) AS at \
                   FROM json_each($1) GROUP BY 1) AS u \
             WHERE api_keys.key_id = u.key_id \
               AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)",
    postgres: "UPDATE api_keys AS k SET last_used_at = u.at \
               FROM (SELECT e->>0 AS key_id, \
                            MAX(timestamptz 'epoch' + (e->>1)::bigint * interval '1 microsecond') AS at \
                     FROM jsonb_array_elements($1::jsonb) AS e GROUP BY 1) AS u \
               WHERE k.key_id = u.key_id \
                 AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
};

/// A key's role links in one statement, whatever their number. A role the
/// tenant lacks fails its foreign key, and `link_error` names the missing
/// ones: no read beforehand (a write's round trips are most of its cost on
/// PostgreSQL, issue #17).
const LINK_KEY_ROLES: Dialect = Dialect {
    sqlite: "INSERT INTO api_key_roles (tenant_id, key_id, role_name) \
             SELECT $1, $2, value FROM json_each($3) WHERE true ON CONFLICT DO NOTHING",
    postgres: "INSERT INTO api_key_roles (tenant_id, key_id, role_name) \
               SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING",
};

impl SqlStore {
    async fn insert_key_roles(
        &self,
        conn: &mut Conn,
        tenant: &TenantId,
        key_id: KeyId,
        roles: &[RoleName],
    ) -> StoreResult<()> {
        if roles.is_empty() {
            return Ok(());
        }
        let names = roles.iter().map(ToString::to_string).collect();
        let inserted = sqlx::query(sql(&LINK_KEY_ROLES))
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .bind(super::text_list(names))
            .execute(&mut *conn)
            .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) => Err(link_error(&self.pool, e, tenant, roles).await),
        }
    }
}

impl SqlStore {
    /// What a change of one key writes besides itself, on its transaction:
    /// its event (`kind`) with the notice to other API replicas, and the
    /// audit record.
    async fn key_changed(
        &self,
        conn: &mut Conn,
        change: &Change,
        tenant: &TenantId,
        key_id: KeyId,
        kind: &str,
        action: Action,
    ) -> StoreResult<()> {
        let evicted = KeyChange::Key(key_id);
        let event = self
            .emit(conn, change, kind, tenant, Some(key_id), Some(&evicted))
            .await?;
        let target = key_id.to_string();
        record_in(conn, change, tenant, action, &target, Some(event)).await
    }
}

/// Where a key to be changed stands, read at the start of the change's
/// transaction (`KeyNotFound` if the tenant has no such key).
struct KeyState {
    active: bool,
    expires_at: Option<Timestamp>,
    replaced: bool,
}

/// Where the expired keys' listing reads its ids: the swept keys
/// (`expiry_passed`) from their index by (tenant, id), and the few not yet
/// swept from the index of unswept expiring keys (migration 0008). Given a
/// cursor, SQLite would rather page `(tenant_id, status, key_id)` below it
/// and test every active key, so it is told which index to use; PostgreSQL
/// picks these by their predicates.
const SWEPT_EXPIRED_FROM: Dialect = Dialect {
    sqlite: "api_keys e INDEXED BY api_keys_tenant_expired",
    postgres: "api_keys e",
};
const UNSWEPT_EXPIRED_FROM: Dialect = Dialect {
    sqlite: "api_keys e INDEXED BY api_keys_tenant_expiring",
    postgres: "api_keys e",
};

/// A page of the tenant's expired keys: the page's ids are the newest of
/// the swept ones (a range of their index, like any other filter) merged
/// with the unswept ones (a minute's worth of expiries, sorted), then those
/// rows are read. Both parts test the expiry against `now`: the flag only
/// says which index holds a key, never whether it has expired (a sweeper
/// whose clock runs ahead may set it early).
///
/// The shape is for PostgreSQL's generic plans (a prepared statement is
/// planned without its values after a few runs): with a `LIMIT` of its
/// own, the unswept part was read by walking the tenant's active keys in
/// id order, testing each (4.5 ms at 10,000 keys in the scale run, where
/// nothing was unswept); as a materialised CTE it has no order to keep and
/// reads its partial index. The outer query has no `LIMIT`, so it never
/// walks the primary key looking for the page's ids
/// (`store::postgres::list_plans` checks the generic plan).
fn expired_list_statement(
    tenant: &TenantId,
    query: &KeyQuery,
    now: Timestamp,
) -> sqlx::QueryBuilder<Db> {
    let limit = i64::from(query.limit);
    let cursor = |q: &mut sqlx::QueryBuilder<Db>| {
        if let Some(before) = query.before {
            q.push(" AND e.key_id < ").push_bind(before.to_string());
        }
    };
    let mut q = sqlx::QueryBuilder::new("WITH unswept AS MATERIALIZED (SELECT e.key_id FROM ");
    q.push(sql(&UNSWEPT_EXPIRED_FROM))
        .push(" WHERE e.tenant_id = ")
        .push_bind(tenant.as_str())
        .push(" AND e.status = 'active' AND NOT e.expiry_passed AND e.expires_at <= ")
        .push_bind(Ts(now));
    cursor(&mut q);
    q.push(") ")
        .push(key_select!(
            "WHERE k.key_id IN (SELECT key_id FROM (",
            "SELECT key_id FROM (SELECT e.key_id FROM "
        ))
        .push(sql(&SWEPT_EXPIRED_FROM))
        .push(" WHERE e.tenant_id = ")
        .push_bind(tenant.as_str())
        .push(" AND e.status = 'active' AND e.expiry_passed AND e.expires_at <= ")
        .push_bind(Ts(now));
    cursor(&mut q);
    // The page size in the text, not a parameter: a generic plan takes an
    // unknown LIMIT for a tenth of its input, and then joined the ids by
    // hashing the whole key table (a sequential scan per page). It is a
    // number from 1 to 200 (`KeyQuery`), so a statement per page size.
    q.push(format_args!(
        " ORDER BY e.key_id DESC LIMIT {limit}) AS swept \
         UNION ALL SELECT key_id FROM unswept) AS expired \
         ORDER BY key_id DESC LIMIT {limit}) ORDER BY k.key_id DESC"
    ));
    q
}

/// The expired page's plan, on PostgreSQL: the generic one, made once per
/// connection. Left to choose, PostgreSQL planned this statement anew on
/// every run (planning 0.5-2.3 ms against 0.5-0.7 ms of execution at 1M
/// keys); its generic plan reads the partial indexes whatever the tenant
/// (`store::postgres::list_plans`). Three round trips (BEGIN, this,
/// COMMIT) cost less than the planning. SQLite does not plan that way.
const GENERIC_PLAN: Dialect = Dialect {
    sqlite: "",
    postgres: "SET LOCAL plan_cache_mode = force_generic_plan",
};

/// Marks active keys whose expiry has passed as swept, oldest expiry
/// first, a batch at a time (`api_keys_expiring` holds only the unswept).
/// The outer test is checked again against a row another transaction
/// changed meanwhile (an update that moved the expiry ahead is left
/// alone); on PostgreSQL rows another sweeper (or a change) holds are
/// skipped rather than waited for, so two replicas sweeping at once never
/// deadlock. The batch is a materialised CTE there: as `IN (SELECT … LIMIT
/// … FOR UPDATE SKIP LOCKED)` PostgreSQL marked more than the limit (the
/// conformance test caught it). SQLite serialises writers.
const SWEEP_EXPIRED: Dialect = Dialect {
    sqlite: "UPDATE api_keys SET expiry_passed = TRUE \
             WHERE status = 'active' AND expires_at <= $1 AND key_id IN \
               (SELECT key_id FROM api_keys INDEXED BY api_keys_expiring \
                WHERE status = 'active' AND expires_at IS NOT NULL AND NOT expiry_passed \
                  AND expires_at <= $1 ORDER BY expires_at LIMIT $2)",
    postgres: "WITH batch AS MATERIALIZED \
                 (SELECT key_id FROM api_keys \
                  WHERE status = 'active' AND expires_at IS NOT NULL AND NOT expiry_passed \
                    AND expires_at <= $1 ORDER BY expires_at LIMIT $2 \
                  FOR UPDATE SKIP LOCKED) \
               UPDATE api_keys k SET expiry_passed = TRUE FROM batch \
               WHERE k.key_id = batch.key_id AND k.status = 'active' AND k.expires_at <= $1",
};

/// A page of a tenant's keys, newest first: one statement per (status
/// filter, cursor or not), each a range of one index, so a page costs the
/// same on the first page and deep into a million keys. One statement with
/// every case in its predicates (`$2 = 'all' OR …`, `$4 IS NULL OR key_id <
/// $4`) can use no range at all: a rare status scanned the tenant's keys
/// on every page, and a deep cursor every key before it (issue #17).
///
/// Indexes (migration 0006): `all` pages `(tenant_id, key_id)`; `active`
/// and `revoked` page `(tenant_id, status, key_id)`; `expired` pages the
/// swept expired keys' index (migration 0008) and adds the newest of those
/// not yet swept (`expired_list_statement`).
pub(super) fn list_statement(
    tenant: &TenantId,
    query: &KeyQuery,
    now: Timestamp,
) -> sqlx::QueryBuilder<Db> {
    let limit = i64::from(query.limit);
    if query.status == StatusFilter::Expired {
        return expired_list_statement(tenant, query, now);
    }
    let mut q = sqlx::QueryBuilder::new(key_select!("WHERE k.tenant_id = "));
    q.push_bind(tenant.as_str());
    match query.status {
        StatusFilter::All | StatusFilter::Expired => {}
        StatusFilter::Revoked => {
            q.push(" AND k.status = 'revoked'");
        }
        StatusFilter::Active => {
            q.push(" AND k.status = 'active' AND (k.expires_at IS NULL OR k.expires_at > ")
                .push_bind(Ts(now))
                .push(")");
        }
    }
    if let Some(before) = query.before {
        q.push(" AND k.key_id < ").push_bind(before.to_string());
    }
    q.push(" ORDER BY k.key_id DESC LIMIT ").push_bind(limit);
    q
}

/// A key's state, read to decide a change to it: the row stays locked
/// until the transaction ends. On PostgreSQL a plain read would let a
/// revoke commit between this check and the change (the rotation of a
/// revoked key then revoked it a second time, with a second event, and
/// gave it a live successor; found by the soak); SQLite serialises writers.
const KEY_STATE_FOR_CHANGE: Dialect = Dialect {
    sqlite: "SELECT status, expires_at, replaced_by FROM api_keys \
             WHERE tenant_id = $1 AND key_id = $2",
    postgres: "SELECT status, expires_at, replaced_by FROM api_keys \
               WHERE tenant_id = $1 AND key_id = $2 FOR UPDATE",
};

async fn key_state(conn: &mut Conn, tenant: &TenantId, key_id: KeyId) -> StoreResult<KeyState> {
    let row: Option<(String, Option<Ts>, Option<String>)> =
        sqlx::query_as(sql(&KEY_STATE_FOR_CHANGE))
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    let (status, expires_at, replaced_by) = row.ok_or(StoreError::KeyNotFound)?;
    Ok(KeyState {
        active: status == "active",
        expires_at: expires_at.map(|t| t.0),
        replaced: replaced_by.is_some(),
    })
}

pub(super) async fn key_in(
    conn: &mut Conn,
    tenant: &TenantId,
    key_id: KeyId,
    now: Timestamp,
) -> StoreResult<ApiKey> {
    let row: Option<KeyRow> =
        sqlx::query_as(key_select!("WHERE k.tenant_id = $1 AND k.key_id = $2"))
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or(StoreError::KeyNotFound)?.into_key(now)
}

#[async_trait::async_trait]
impl KeyStore for SqlStore {
    #[tracing::instrument(skip(self, key), fields(key_id = %key.key_id))]
    async fn create_key(&self, key: &NewApiKey, change: &Change) -> StoreResult<ApiKey> {
        let mut tx = self.begin_write().await?;
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
        .map_err(on_constraint(|v| match v {
            Violation::Unique => Some(StoreError::DuplicateKeyName),
            Violation::ForeignKey => Some(StoreError::TenantNotFound),
        }))?;
        self.insert_key_roles(&mut tx, &key.tenant_id, key.key_id, &key.roles)
            .await?;
        let target = key.key_id.to_string();
        record_in(
            &mut tx,
            change,
            &key.tenant_id,
            Action::KeyCreate,
            &target,
            None,
        )
        .await?;
        tx.commit().await?;
        // What was written, as a read would return it (the conformance
        // tests compare the two): no read-back round trip.
        Ok(key.as_created(change.at))
    }

    #[tracing::instrument(skip(self))]
    async fn get_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        now: Timestamp,
    ) -> StoreResult<ApiKey> {
        let mut conn = self.pool.acquire().await?;
        key_in(&mut conn, tenant, key_id, now).await
    }

    #[tracing::instrument(skip(self))]
    async fn list_keys(
        &self,
        tenant: &TenantId,
        query: &KeyQuery,
        now: Timestamp,
    ) -> StoreResult<Vec<ApiKey>> {
        let mut conn = self.pool.acquire().await?;
        let mut statement = list_statement(tenant, query, now);
        let generic = sql(&GENERIC_PLAN);
        let rows: Vec<KeyRow> = if query.status == StatusFilter::Expired && !generic.is_empty() {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::query(generic).execute(&mut *tx).await?;
            let rows = statement.build_query_as().fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        } else {
            statement.build_query_as().fetch_all(&mut *conn).await?
        };
        rows.into_iter().map(|k| k.into_key(now)).collect()
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn key_credentials(&self, key_id: KeyId) -> StoreResult<Option<KeyCredentials>> {
        let found: Vec<KeyGrantRow> = sqlx::query_as(sql(&KEY_GRANTS_OF_ONE))
            .bind(key_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        Ok(keys_credentials(found)?.pop())
    }

    #[tracing::instrument(skip(self, old_hash, new_hash))]
    async fn upgrade_key_hash(
        &self,
        key_id: KeyId,
        old_hash: &str,
        new_hash: &str,
    ) -> StoreResult<bool> {
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
        tenant: &TenantId,
        key_id: KeyId,
        change: &Change,
    ) -> StoreResult<Revoked> {
        let now = change.at;
        let mut tx = self.begin_write().await?;
        // Protects the ingestors' verifier keys from non-superadmins.
        require_unprotected(&mut tx, tenant, &Target::Key(key_id), change).await?;
        // Only the call that flips the row writes the event: a second
        // or concurrent revoke changes nothing and writes nothing.
        let flipped = sqlx::query(
            "UPDATE api_keys SET status = 'revoked', revoked_at = $3, revoked_by = $4, \
                             revocation_event_id = $5 \
         WHERE tenant_id = $1 AND key_id = $2 AND status = 'active'",
        )
        .bind(tenant.as_str())
        .bind(key_id.to_string())
        .bind(Ts(now))
        .bind(&change.actor)
        .bind(change.event_id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if flipped {
            self.key_changed(
                &mut tx,
                change,
                tenant,
                key_id,
                KEY_REVOKED,
                Action::KeyRevoke,
            )
            .await?;
        }
        let key = key_in(&mut tx, tenant, key_id, now).await?;
        tx.commit().await?;
        Ok(Revoked {
            key,
            newly_revoked: flipped,
        })
    }

    #[tracing::instrument(skip(self, update))]
    async fn update_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        update: &KeyUpdate,
        change: &Change,
    ) -> StoreResult<ApiKey> {
        let mut tx = self.begin_write().await?;
        require_unprotected(&mut tx, tenant, &Target::Key(key_id), change).await?;
        if !key_state(&mut tx, tenant, key_id).await?.active {
            return Err(StoreError::InvalidState);
        }
        if let Some(name) = &update.name {
            sqlx::query("UPDATE api_keys SET name = $3 WHERE tenant_id = $1 AND key_id = $2")
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|v| {
                    (v == Violation::Unique).then_some(StoreError::DuplicateKeyName)
                }))?;
        }
        if let Some(roles) = &update.roles {
            sqlx::query("DELETE FROM api_key_roles WHERE tenant_id = $1 AND key_id = $2")
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .execute(&mut *tx)
                .await?;
            self.insert_key_roles(&mut tx, tenant, key_id, roles)
                .await?;
        }
        if let Some(expires_at) = update.expires_at {
            sqlx::query(
                "UPDATE api_keys SET expires_at = $3, expiry_passed = FALSE \
                 WHERE tenant_id = $1 AND key_id = $2",
            )
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .bind(expires_at.map(|t| Ts(truncate_micros(t))))
            .execute(&mut *tx)
            .await?;
        }
        self.key_changed(
            &mut tx,
            change,
            tenant,
            key_id,
            KEY_UPDATED,
            Action::KeyUpdate,
        )
        .await?;
        let key = key_in(&mut tx, tenant, key_id, change.at).await?;
        tx.commit().await?;
        Ok(key)
    }

    #[tracing::instrument(skip(self, new), fields(new_key_id = %new.key_id))]
    async fn rotate_key(
        &self,
        tenant: &TenantId,
        key_id: KeyId,
        new: &RotatedKey,
        grace: std::time::Duration,
        change: &Change,
    ) -> StoreResult<Rotated> {
        let now = change.at;
        let mut tx = self.begin_write().await?;
        require_unprotected(&mut tx, tenant, &Target::Key(key_id), change).await?;
        let old = key_state(&mut tx, tenant, key_id).await?;
        if !old.active || old.replaced || old.expires_at.is_some_and(|at| at <= now) {
            return Err(StoreError::InvalidState);
        }
        // The old key is marked replaced first: from then on the unique
        // index on active names leaves it out, and its successor can take
        // the same name.
        let event_kind = if grace.is_zero() {
            sqlx::query(
                "UPDATE api_keys SET status = 'revoked', revoked_at = $3, revoked_by = $4, \
                                     revocation_event_id = $5, replaced_by = $6 \
                 WHERE tenant_id = $1 AND key_id = $2",
            )
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .bind(Ts(now))
            .bind(&change.actor)
            .bind(change.event_id.to_string())
            .bind(new.key_id.to_string())
            .execute(&mut *tx)
            .await?;
            KEY_REVOKED
        } else {
            let grace = chrono::Duration::from_std(grace).map_err(|_| StoreError::InvalidState)?;
            // A grace period never extends the old key's life.
            let until = old.expires_at.map_or(now + grace, |at| at.min(now + grace));
            sqlx::query(
                "UPDATE api_keys SET expires_at = $3, replaced_by = $4, expiry_passed = FALSE \
                 WHERE tenant_id = $1 AND key_id = $2",
            )
            .bind(tenant.as_str())
            .bind(key_id.to_string())
            .bind(Ts(truncate_micros(until)))
            .bind(new.key_id.to_string())
            .execute(&mut *tx)
            .await?;
            KEY_UPDATED
        };
        sqlx::query(
            "INSERT INTO api_keys (key_id, tenant_id, name, secret_hash, start, status, \
                                   created_by, created_at, expires_at, replaces) \
             SELECT $1, tenant_id, name, $2, $3, 'active', $4, $5, $6, key_id \
             FROM api_keys WHERE tenant_id = $7 AND key_id = $8",
        )
        .bind(new.key_id.to_string())
        .bind(&new.secret_hash)
        .bind(&new.start)
        .bind(&change.actor)
        .bind(Ts(now))
        .bind(old.expires_at.map(Ts))
        .bind(tenant.as_str())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
        // The successor holds what the old key held: its roles, and its
        // place in groups (else clients that switch would lose privileges).
        for copy in [
            "INSERT INTO api_key_roles (tenant_id, key_id, role_name) \
             SELECT tenant_id, $1, role_name FROM api_key_roles \
             WHERE tenant_id = $2 AND key_id = $3",
            "INSERT INTO group_keys (tenant_id, group_name, key_id) \
             SELECT tenant_id, group_name, $1 FROM group_keys \
             WHERE tenant_id = $2 AND key_id = $3",
        ] {
            sqlx::query(copy)
                .bind(new.key_id.to_string())
                .bind(tenant.as_str())
                .bind(key_id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        self.key_changed(
            &mut tx,
            change,
            tenant,
            key_id,
            event_kind,
            Action::KeyRotate,
        )
        .await?;
        let key = key_in(&mut tx, tenant, new.key_id, now).await?;
        let old = key_in(&mut tx, tenant, key_id, now).await?;
        tx.commit().await?;
        Ok(Rotated { key, old })
    }

    #[tracing::instrument(skip(self, used), fields(keys = used.len()))]
    async fn record_key_usage(&self, used: &[(KeyId, Timestamp)]) -> StoreResult<u64> {
        if used.is_empty() {
            return Ok(0);
        }
        // A transaction per chunk: one for the whole batch (100,000 keys
        // after a busy interval) held SQLite's write lock, and PostgreSQL's
        // row locks, for the whole flush, so a revoke of any of those keys
        // waited for it. Uses are independent and never move backwards, so
        // a flush cut short loses nothing: the caller writes it again.
        // Sorted, so that two replicas' flushes of common keys meet in
        // matching chunks, one short transaction each, not across batches.
        let mut used = used.to_vec();
        used.sort_by_key(|(key_id, _)| *key_id);
        let mut updated = 0;
        for chunk in used.chunks(JSON_ROWS_PER_STATEMENT) {
            let list = json_rows(chunk, |(key_id, at)| {
                serde_json::json!([key_id.to_string(), at.timestamp_micros()])
            });
            let mut tx = self.begin_write().await?;
            updated += sqlx::query(sql(&RECORD_USAGE))
                .bind(list)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
        }
        Ok(updated)
    }

    // Verification's cache misses: a span at info would cost each miss its
    // formatting (see the quiet routes in the API's `observe`).
    #[tracing::instrument(level = "debug", skip(self, ids), fields(n = ids.len()))]
    async fn key_credentials_many(&self, ids: &[KeyId]) -> StoreResult<Vec<KeyCredentials>> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        if let Some(found) = self.inline_key_grants(&ids) {
            return keys_credentials(found);
        }
        let found: Vec<KeyGrantRow> = sqlx::query_as(sql(&KEY_GRANTS))
            .bind(super::text_list(ids))
            .fetch_all(&self.pool)
            .await?;
        keys_credentials(found)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn sweep_expired_keys(&self, now: Timestamp, limit: u32) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let swept = sqlx::query(sql(&SWEEP_EXPIRED))
            .bind(Ts(now))
            .bind(i64::from(limit))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(swept)
    }

    async fn key_changes(&self) -> StoreResult<Option<Box<dyn KeyChanges>>> {
        self.listen_key_changes().await
    }
}
