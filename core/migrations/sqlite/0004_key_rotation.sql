-- Rotation (POST …/apikeys/{keyId}/rotate): the new key names the key it
-- replaces, the old one its successor. During a grace period the two share
-- a name while both are active: the unique index on active names leaves out
-- keys already replaced (the successor holds the name from then on).
ALTER TABLE api_keys ADD COLUMN replaces TEXT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
DROP INDEX api_keys_active_name;
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (tenant_id, name)
    WHERE status = 'active' AND replaced_by IS NULL;
