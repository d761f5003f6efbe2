//! The expired keys' listing as PostgreSQL plans it generically, as it
//! does a prepared statement after a few runs: the swept and the unswept
//! keys each from a partial index of their own, never the tenant's keys
//! walked in id order and tested one by one (issue #17: 4.5 ms a page at
//! 10,000 keys when the unswept part had a `LIMIT` of its own). Checked
//! failing against that shape of the statement.

use super::PgStore;
use super::keys::list_statement;
use crate::ids::{KeyId, TenantId};
use crate::store::{KeyQuery, StatusFilter};

/// A tenant with 50,000 active keys, each with a role, 50 of them expired
/// and swept, next to another tenant's keys expiring in a year; with
/// statistics. (Over a few thousand keys a hash join over the whole table
/// is cheaper than a page of index lookups, and PostgreSQL rightly takes
/// it.)
const KEYS: &str = "
    INSERT INTO tenants (id, created_at) VALUES ('acme', now()), ('other', now());
    INSERT INTO api_keys (key_id, tenant_id, name, secret_hash, start, status,
                          created_by, created_at, expires_at, expiry_passed)
    SELECT '01K' || lpad(i::text, 23, '0'), CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'other' END,
           'k' || i, 'h', 's', 'active', 'x', now(),
           CASE WHEN i % 2 = 1 THEN now() + interval '1 year'
                WHEN i % 2000 = 4 THEN now() - interval '1 day' END,
           i % 2000 = 4
    FROM generate_series(0, 99999) i;
    INSERT INTO roles (tenant_id, name, created_at, updated_at) VALUES ('acme', 'ingest', now(), now());
    INSERT INTO api_key_roles (tenant_id, key_id, role_name)
    SELECT tenant_id, key_id, 'ingest' FROM api_keys WHERE tenant_id = 'acme';
    ANALYZE api_keys;
    ANALYZE api_key_roles;";

#[tokio::test]
async fn expired_listing_reads_its_partial_indexes_in_a_generic_plan() {
    let Some(db) = keyward_core::testing::TestDatabase::postgres().await else {
        return;
    };
    let store = PgStore::connect(db.url.as_str()).await.unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    sqlx::raw_sql(KEYS).execute(&mut *conn).await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let cursor = KeyId::new().to_string();
    // The values in the order the statement binds them: each part's
    // tenant, time and cursor (the page size is in its text).
    for (before, args) in [
        (None, "'acme', now(), 'acme', now()".to_owned()),
        (
            Some(cursor.as_str()),
            format!("'acme', now(), '{cursor}', 'acme', now(), '{cursor}'"),
        ),
    ] {
        let query = KeyQuery {
            status: StatusFilter::Expired,
            limit: 50,
            before: before.map(|c| KeyId::parse(c).unwrap()),
        };
        let statement = list_statement(&tenant, &query, chrono::Utc::now());
        for step in [
            format!("PREPARE page AS {}", statement.sql().as_str()),
            format!("EXPLAIN (COSTS OFF) EXECUTE page({args})"),
            "DEALLOCATE page".to_owned(),
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(step))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            let plan = rows.join("\n");
            if plan.is_empty() {
                continue;
            }
            // Swept: their index by (tenant, id). Unswept: either index of
            // unswept expiring keys, read up to `now` (a minute's worth of
            // expiries, this tenant's or all tenants').
            assert!(
                plan.contains("api_keys_tenant_expired"),
                "{before:?}: swept keys not read from their index:\n{plan}"
            );
            assert!(
                plan.contains("api_keys_tenant_expiring") || plan.contains("api_keys_expiring"),
                "{before:?}: unswept keys not read from their index:\n{plan}"
            );
            // A page's roles: its own keys' links, by key id.
            assert!(
                plan.contains("Index Only Scan using api_key_roles_pkey on api_key_roles r"),
                "{before:?}: roles not read by key id:\n{plan}"
            );
            for walk in ["api_keys_tenant_status", "Seq Scan on api_key"] {
                assert!(
                    !plan.contains(walk),
                    "{before:?}: the tenant's keys walked ({walk}):\n{plan}"
                );
            }
        }
    }
}
