-- A key's role links by (tenant, key id). Without it the planner reads a
-- key's roles through api_key_roles_role (tenant_id, role_name): every link
-- of the tenant, on every create, fetch, revoke and list page — a cost that
-- grew with the tenant's keys (measured: 0.7 ms per create at 10,000 keys,
-- 4 ms at 100,000 on SQLite).
CREATE INDEX api_key_roles_key ON api_key_roles (tenant_id, key_id);
