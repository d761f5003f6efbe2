-- The outbox carries key.revoked, key.updated and rbac.changed; the last
-- names no key. Existing rows keep their kind ('key.revoked') and routing.
ALTER TABLE outbox ALTER COLUMN key_id DROP NOT NULL;
