-- Keyward schema, PostgreSQL. Integrity lives in constraints: foreign keys
-- from every role link to roles (NO ACTION: deleting a role in use fails),
-- a partial unique index for active key names, unique outbox event ids.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE role_privileges (
    tenant_id   TEXT NOT NULL,
    role_name   TEXT NOT NULL,
    position    INTEGER NOT NULL,
    privilege   TEXT NOT NULL,
    stream      TEXT,
    PRIMARY KEY (tenant_id, role_name, position),
    FOREIGN KEY (tenant_id, role_name) REFERENCES roles (tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE user_roles (
    tenant_id   TEXT NOT NULL,
    username    TEXT NOT NULL,
    role_name   TEXT NOT NULL,
    PRIMARY KEY (username, role_name),
    FOREIGN KEY (tenant_id, username) REFERENCES users (tenant_id, username) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_name) REFERENCES roles (tenant_id, name)
);
CREATE INDEX user_roles_role ON user_roles (tenant_id, role_name);

CREATE TABLE api_keys (
    key_id               TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    name                 TEXT NOT NULL,
    secret_hash          TEXT NOT NULL,
    start                TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_by           TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ,
    last_used_at         TIMESTAMPTZ,
    revoked_at           TIMESTAMPTZ,
    revoked_by           TEXT,
    revocation_event_id  TEXT,
    UNIQUE (tenant_id, key_id)
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (tenant_id, name) WHERE status = 'active';

CREATE TABLE api_key_roles (
    tenant_id   TEXT NOT NULL,
    key_id      TEXT NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    role_name   TEXT NOT NULL,
    PRIMARY KEY (key_id, role_name),
    FOREIGN KEY (tenant_id, role_name) REFERENCES roles (tenant_id, name)
);
CREATE INDEX api_key_roles_role ON api_key_roles (tenant_id, role_name);

CREATE TABLE rbac_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE group_roles (
    tenant_id   TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    role_name   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_name, role_name),
    FOREIGN KEY (tenant_id, group_name) REFERENCES rbac_groups (tenant_id, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, role_name) REFERENCES roles (tenant_id, name)
);
CREATE INDEX group_roles_role ON group_roles (tenant_id, role_name);

CREATE TABLE group_users (
    tenant_id   TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    username    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_name, username),
    FOREIGN KEY (tenant_id, group_name) REFERENCES rbac_groups (tenant_id, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, username) REFERENCES users (tenant_id, username) ON DELETE CASCADE
);
CREATE INDEX group_users_user ON group_users (username);

CREATE TABLE group_keys (
    tenant_id   TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_name, key_id),
    FOREIGN KEY (tenant_id, group_name) REFERENCES rbac_groups (tenant_id, name) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, key_id) REFERENCES api_keys (tenant_id, key_id) ON DELETE CASCADE
);
CREATE INDEX group_keys_key ON group_keys (key_id);

CREATE TABLE outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_until      TIMESTAMPTZ,
    published_at     TIMESTAMPTZ,
    dead_at          TIMESTAMPTZ,
    last_error       TEXT,
    live_ingestors   BIGINT
);
-- Claiming reads only undelivered rows: the index stays small whatever the
-- history, so a claim costs the same with 200k delivered rows in the table.
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE published_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE ingestors (
    id             TEXT PRIMARY KEY,
    queue          TEXT NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    last_seen_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE event_acks (
    event_id     TEXT NOT NULL REFERENCES outbox (event_id) ON DELETE CASCADE,
    ingestor_id  TEXT NOT NULL,
    applied_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, ingestor_id)
);
CREATE INDEX event_acks_ingestor ON event_acks (ingestor_id);

-- The operators' tenant and its built-in roles.
INSERT INTO tenants (id, name, created_at) VALUES ('_platform', 'Keyward operators', now());
INSERT INTO roles (tenant_id, name, builtin, created_at, updated_at) VALUES
    ('_platform', 'superadmin', TRUE, now(), now()),
    ('_platform', 'verifier', TRUE, now(), now());
INSERT INTO role_privileges (tenant_id, role_name, position, privilege, stream) VALUES
    ('_platform', 'superadmin', 0, 'superadmin', NULL),
    ('_platform', 'verifier', 0, 'verifier', NULL);
