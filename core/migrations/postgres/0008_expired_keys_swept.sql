-- Listing a tenant's expired keys reads one index range per page, as
-- `active` and `revoked` do: a sweep (the API's, every minute) sets
-- `expiry_passed` on active keys whose expiry has passed, and the swept
-- keys wait in `api_keys_tenant_expired` by (tenant, id). Before this, the
-- page sorted all of the tenant's expired keys (issue #17: p99 1.4 ms at
-- 1,000 keys, 3.2-6.1 ms at 1,000,000 on PostgreSQL).
--
-- `expiry_passed` is a hint for indexes, never the truth: a key is expired
-- when it is active and its expiry has passed, swept or not. The listing
-- reads the swept keys from the new index and the not yet swept ones from
-- `api_keys_tenant_expiring`, which now holds unswept keys only (a
-- minute's worth of expiries, not every expiry of the tenant's history);
-- `api_keys_expiring` is the sweep's own. Every write of `expires_at`
-- clears the flag. The flag and status are in the listing's indexes so
-- that both answer from the index alone (SQLite reads a column its
-- partial index's WHERE tests from the table otherwise).
ALTER TABLE api_keys ADD COLUMN expiry_passed BOOLEAN NOT NULL DEFAULT FALSE;
DROP INDEX api_keys_tenant_expiring;
CREATE INDEX api_keys_tenant_expiring ON api_keys
    (tenant_id, expires_at, key_id, status, expiry_passed)
    WHERE status = 'active' AND expires_at IS NOT NULL AND NOT expiry_passed;
CREATE INDEX api_keys_tenant_expired ON api_keys
    (tenant_id, key_id, expires_at, status, expiry_passed)
    WHERE status = 'active' AND expiry_passed;
CREATE INDEX api_keys_expiring ON api_keys (expires_at)
    WHERE status = 'active' AND expires_at IS NOT NULL AND NOT expiry_passed;
