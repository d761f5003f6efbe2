-- `GET /api/v1/ingestors`' `unacked` from counts the database keeps as it
-- writes, instead of counting the outbox and the acks on every call: that
-- was linear in the events kept times the ingestors (161 ms after 150,000
-- events and three ingestors, every 30 s in each worker). For an ingestor
--
--   unacked = outbox_totals.published - published_before - acked
--             - its unsettled acks of events published since first seen
--
-- published_before: published events kept, published before it was first
-- seen; acked: its acks that carry a publication time (settled) at or
-- after it was first seen. The last term reads the few acks that outran
-- their event's mark (the worker settles them every 30 s). Triggers keep
-- the counts on every write to the outbox, the acks and the ingestors,
-- whoever writes. (SQLite runs one writer at a time: no trigger here can
-- miss another's uncommitted row, unlike on PostgreSQL.)
CREATE TABLE outbox_totals (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    published  INTEGER NOT NULL
);
INSERT INTO outbox_totals (id, published)
    SELECT 1, COUNT(*) FROM outbox WHERE published_at IS NOT NULL;

ALTER TABLE ingestors ADD COLUMN published_before INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ingestors ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;
UPDATE ingestors SET
    published_before = (SELECT COUNT(*) FROM outbox o
                        WHERE o.published_at < ingestors.first_seen_at),
    acked = (SELECT COUNT(*) FROM event_acks a
             WHERE a.ingestor_id = ingestors.id AND a.published_at >= ingestors.first_seen_at);

-- An event published (or, were it ever written so, unpublished).
CREATE TRIGGER outbox_published_counted AFTER UPDATE OF published_at ON outbox
WHEN OLD.published_at IS NOT NEW.published_at
BEGIN
    UPDATE outbox_totals
    SET published = published + (NEW.published_at IS NOT NULL) - (OLD.published_at IS NOT NULL);
    UPDATE ingestors SET published_before = published_before
        + coalesce(NEW.published_at < first_seen_at, 0)
        - coalesce(OLD.published_at < first_seen_at, 0)
    WHERE NEW.published_at < first_seen_at OR OLD.published_at < first_seen_at;
END;

-- A row written already published (the store never does; a restore or a
-- hand-written row might).
CREATE TRIGGER outbox_inserted_published_counted AFTER INSERT ON outbox
WHEN NEW.published_at IS NOT NULL
BEGIN
    UPDATE outbox_totals SET published = published + 1;
    UPDATE ingestors SET published_before = published_before + 1
    WHERE NEW.published_at < first_seen_at;
END;

-- A published event purged.
CREATE TRIGGER outbox_purged_counted AFTER DELETE ON outbox
WHEN OLD.published_at IS NOT NULL
BEGIN
    UPDATE outbox_totals SET published = published - 1;
    UPDATE ingestors SET published_before = published_before - 1
    WHERE OLD.published_at < first_seen_at;
END;

-- Acks recorded, settled or deleted: `acked` moves by the row's count
-- after less before.
CREATE TRIGGER event_acks_inserted_counted AFTER INSERT ON event_acks
WHEN NEW.published_at IS NOT NULL
BEGIN
    UPDATE ingestors SET acked = acked + 1
    WHERE id = NEW.ingestor_id AND first_seen_at <= NEW.published_at;
END;

CREATE TRIGGER event_acks_updated_counted AFTER UPDATE OF published_at ON event_acks
WHEN OLD.published_at IS NOT NEW.published_at
BEGIN
    UPDATE ingestors SET acked = acked
        + coalesce(NEW.published_at >= first_seen_at, 0)
        - coalesce(OLD.published_at >= first_seen_at, 0)
    WHERE id = NEW.ingestor_id;
END;

CREATE TRIGGER event_acks_deleted_counted AFTER DELETE ON event_acks
WHEN OLD.published_at IS NOT NULL
BEGIN
    UPDATE ingestors SET acked = acked - 1
    WHERE id = OLD.ingestor_id AND first_seen_at <= OLD.published_at;
END;

-- An ingestor's first row counts what was written before it.
CREATE TRIGGER ingestors_counted_at_first_sight AFTER INSERT ON ingestors
BEGIN
    UPDATE ingestors SET
        published_before = (SELECT published FROM outbox_totals)
            - (SELECT COUNT(*) FROM outbox WHERE published_at >= NEW.first_seen_at),
        acked = (SELECT COUNT(*) FROM event_acks
                 WHERE ingestor_id = NEW.id AND published_at >= NEW.first_seen_at)
    WHERE id = NEW.id;
END;
