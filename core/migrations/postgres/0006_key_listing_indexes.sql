-- Listing a tenant's keys reads one index range per page, whatever the
-- status filter and however deep the cursor: `active` and `revoked` page
-- newest first within the status; `expired` reads the ids of the active
-- keys whose expiry has passed (few, next to all of a tenant's keys) from
-- this index alone (key_id and status in it: covering) and sorts them.
-- `all` pages the unique (tenant_id, key_id) index of 0001.
CREATE INDEX api_keys_tenant_status ON api_keys (tenant_id, status, key_id);
CREATE INDEX api_keys_tenant_expiring ON api_keys (tenant_id, expires_at, key_id, status)
    WHERE status = 'active' AND expires_at IS NOT NULL;
