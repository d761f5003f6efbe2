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
-- whoever writes.
--
-- Concurrency (READ COMMITTED): an increment is a row update, so
-- concurrent ones add up. What a trigger cannot see is a row another
-- transaction has not committed: an ingestor's first row against a mark
-- or an ack of it. The one row of outbox_totals orders them: a mark's
-- trigger updates it before it reads the ingestors; an ingestor's first
-- row takes it FOR UPDATE before counting; writes of acks take it FOR
-- SHARE before their first row (a trigger; the store's recording of acks
-- takes it in a statement of its own before, so that its insert reads the
-- outbox as a purge it waited for left it); the purge takes it FOR UPDATE
-- first (store code). Every transaction takes it before any ingestor row,
-- and ingestor rows are locked in id order, so none waits on another in
-- the opposite order.
CREATE TABLE outbox_totals (
    id         BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    published  BIGINT NOT NULL
);
INSERT INTO outbox_totals (published)
    SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL;

ALTER TABLE ingestors
    ADD COLUMN published_before BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN acked BIGINT NOT NULL DEFAULT 0;
UPDATE ingestors i SET
    published_before = (SELECT COUNT(*) FROM outbox o
                        WHERE o.published_at < i.first_seen_at),
    acked = (SELECT COUNT(*) FROM event_acks a
             WHERE a.ingestor_id = i.id AND a.published_at >= i.first_seen_at);

-- Published events come (+1) or gone (-1), by publication time: the
-- totals row first, then each ingestor first seen after them.
CREATE TYPE publication_count AS (published_at TIMESTAMPTZ, sign INTEGER);
CREATE FUNCTION outbox_count(changes publication_count[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(changes) = 0 THEN
        RETURN;
    END IF;
    UPDATE outbox_totals SET published = published + (SELECT SUM(c.sign) FROM unnest(changes) c);
    -- A new statement: it sees an ingestor whose first row committed
    -- while this one waited for outbox_totals.
    UPDATE ingestors i SET published_before = i.published_before + d.n
    FROM (SELECT i2.id, SUM(c.sign) AS n FROM ingestors i2
          JOIN unnest(changes) c ON c.published_at < i2.first_seen_at
          GROUP BY i2.id) d
    WHERE i.id = d.id AND d.n <> 0;
END $$;

-- An UPDATE of the outbox: events published (or, were it ever written
-- so, unpublished). Claims and retries touch only unpublished rows: an
-- empty list.
CREATE FUNCTION outbox_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_count(ARRAY(
        SELECT ROW(m.published_at, 1)::publication_count FROM marked m
        WHERE m.published_at IS NOT NULL
        UNION ALL
        SELECT ROW(u.published_at, -1)::publication_count FROM unmarked u
        WHERE u.published_at IS NOT NULL));
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_published_counted AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS unmarked NEW TABLE AS marked
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_count_updated();

-- Rows written already published (the store never writes them so; a
-- restore or a hand-written row might). Per statement, as all of these:
-- a row trigger's update of the one counts row per row made a
-- 150,000-row insert take minutes (each update walks the versions the
-- transaction left of that row).
CREATE FUNCTION outbox_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_count(ARRAY(
        SELECT ROW(p.published_at, 1)::publication_count FROM inserted p
        WHERE p.published_at IS NOT NULL));
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_inserted_counted AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_count_inserted();

-- A DELETE of the outbox (the purge of old published events).
CREATE FUNCTION outbox_count_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM outbox_count(ARRAY(
        SELECT ROW(p.published_at, -1)::publication_count FROM purged p
        WHERE p.published_at IS NOT NULL));
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_purged_counted AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS purged
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_count_purged();

-- Writes of acks take outbox_totals before their first row (see above).
CREATE FUNCTION outbox_totals_share() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM outbox_totals FOR SHARE;
    RETURN NULL;
END $$;
CREATE TRIGGER event_acks_lock_totals BEFORE INSERT OR UPDATE OR DELETE ON event_acks
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_totals_share();

-- Acks recorded, settled or deleted: each ingestor's `acked` moves by its
-- rows counted after less those counted before (`sign` +1 for a new row,
-- -1 for an old one).
CREATE TYPE ack_count AS (ingestor_id TEXT, published_at TIMESTAMPTZ, sign INTEGER);
CREATE FUNCTION event_acks_count(changes ack_count[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ingestors WHERE id IN (SELECT c.ingestor_id FROM unnest(changes) c)
    ORDER BY id FOR UPDATE;
    UPDATE ingestors i SET acked = i.acked + d.n
    FROM (SELECT c.ingestor_id AS id, SUM(c.sign) AS n
          FROM unnest(changes) c JOIN ingestors i2 ON i2.id = c.ingestor_id
          WHERE c.published_at >= i2.first_seen_at
          GROUP BY c.ingestor_id) d
    WHERE i.id = d.id AND d.n <> 0;
END $$;

CREATE FUNCTION event_acks_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM event_acks_count(ARRAY(
        SELECT ROW(a.ingestor_id, a.published_at, 1)::ack_count FROM added a));
    RETURN NULL;
END $$;
CREATE TRIGGER event_acks_inserted_counted AFTER INSERT ON event_acks
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION event_acks_count_inserted();

CREATE FUNCTION event_acks_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM event_acks_count(ARRAY(
        SELECT ROW(a.ingestor_id, a.published_at, 1)::ack_count FROM added a
        UNION ALL
        SELECT ROW(r.ingestor_id, r.published_at, -1)::ack_count FROM removed r));
    RETURN NULL;
END $$;
CREATE TRIGGER event_acks_updated_counted AFTER UPDATE ON event_acks
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION event_acks_count_updated();

CREATE FUNCTION event_acks_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM event_acks_count(ARRAY(
        SELECT ROW(r.ingestor_id, r.published_at, -1)::ack_count FROM removed r));
    RETURN NULL;
END $$;
CREATE TRIGGER event_acks_deleted_counted AFTER DELETE ON event_acks
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION event_acks_count_deleted();

-- An ingestor's first row counts what marks and acks before it could not:
-- holding outbox_totals, in statements that see what committed meanwhile.
-- (A BEFORE INSERT trigger also runs for an upsert that updates; the store
-- inserts only when its update found no row.)
CREATE FUNCTION ingestors_count_at_first_sight() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM outbox_totals FOR UPDATE;
    NEW.published_before := (SELECT published FROM outbox_totals)
        - (SELECT COUNT(*) FROM outbox WHERE published_at >= NEW.first_seen_at);
    NEW.acked := (SELECT COUNT(*) FROM event_acks
                  WHERE ingestor_id = NEW.id AND published_at >= NEW.first_seen_at);
    RETURN NEW;
END $$;
CREATE TRIGGER ingestors_counted_at_first_sight BEFORE INSERT ON ingestors
    FOR EACH ROW EXECUTE FUNCTION ingestors_count_at_first_sight();
