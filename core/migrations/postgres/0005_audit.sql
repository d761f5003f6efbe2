-- One record per state-changing request (API.md §10a): written in the
-- transaction of the change it records, so a change that rolls back leaves
-- none; refused attempts are written on their own ('denied'). Ids are ULIDs:
-- ordering by id is ordering by time, which the cursor relies on. No
-- foreign keys: records outlive what they name, and a refused attempt may
-- name a tenant that does not exist.
CREATE TABLE audit_records (
    id          TEXT PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    tenant_id   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'denied')),
    request_id  TEXT NOT NULL,
    event_id    TEXT
);
CREATE INDEX audit_records_tenant ON audit_records (tenant_id, id);
-- Retention: the worker's housekeeping deletes by age.
CREATE INDEX audit_records_at ON audit_records (at);
