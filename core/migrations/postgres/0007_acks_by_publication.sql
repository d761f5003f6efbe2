-- An ack keeps its event's publication time (NULL when the ack was
-- recorded before the worker marked the event published; the worker's
-- housekeeping fills those in). `GET /api/v1/ingestors`' `unacked` is then
-- the difference of two index range counts (events published since the
-- ingestor was first seen, its acks of those) instead of one index probe
-- per published event and ingestor: ~455 ms with 150,000 events and three
-- ingestors, every 30 s in the worker.
ALTER TABLE event_acks ADD COLUMN published_at TIMESTAMPTZ;
UPDATE event_acks SET published_at =
    (SELECT o.published_at FROM outbox o WHERE o.event_id = event_acks.event_id);
DROP INDEX event_acks_ingestor;
CREATE INDEX event_acks_ingestor ON event_acks (ingestor_id, published_at);
CREATE INDEX event_acks_unsettled ON event_acks (event_id) WHERE published_at IS NULL;
