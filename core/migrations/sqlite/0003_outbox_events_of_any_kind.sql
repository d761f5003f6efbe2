-- The outbox carries key.revoked, key.updated and rbac.changed; the last
-- names no key, so outbox.key_id becomes nullable.
--
-- SQLite cannot drop a NOT NULL: the table is rebuilt. Three things must
-- survive the rebuild:
-- * event_acks references outbox ON DELETE CASCADE: dropping outbox would
--   delete every `applied` report, so the reports are set aside first and
--   the table is created again afterwards;
-- * AUTOINCREMENT's high-water mark (sqlite_sequence): `sequence` in every
--   message must keep increasing, also past rows purged since;
-- * the indexes.
-- Existing rows keep their kind ('key.revoked') and routing: nothing else
-- changes for them.

CREATE TABLE event_acks_kept AS SELECT event_id, ingestor_id, applied_at FROM event_acks;
DROP TABLE event_acks;

CREATE TABLE outbox_rebuilt (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    key_id           TEXT,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    published_at     INTEGER,
    dead_at          INTEGER,
    last_error       TEXT,
    live_ingestors   INTEGER
);
INSERT INTO outbox_rebuilt (id, event_id, kind, tenant_id, key_id, created_at, attempts,
                            next_attempt_at, lease_owner, lease_until, published_at, dead_at,
                            last_error, live_ingestors)
    SELECT id, event_id, kind, tenant_id, key_id, created_at, attempts, next_attempt_at,
           lease_owner, lease_until, published_at, dead_at, last_error, live_ingestors
    FROM outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_rebuilt', seq FROM sqlite_sequence WHERE name = 'outbox';
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE published_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE event_acks (
    event_id     TEXT NOT NULL REFERENCES outbox (event_id) ON DELETE CASCADE,
    ingestor_id  TEXT NOT NULL,
    applied_at   INTEGER NOT NULL,
    PRIMARY KEY (event_id, ingestor_id)
);
INSERT INTO event_acks (event_id, ingestor_id, applied_at)
    SELECT event_id, ingestor_id, applied_at FROM event_acks_kept;
DROP TABLE event_acks_kept;
CREATE INDEX event_acks_ingestor ON event_acks (ingestor_id);
