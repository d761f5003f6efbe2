-- A role's privileges with the columns verification reads (an index-only
-- scan once the table is vacuumed), as on SQLite, where this saves a table
-- probe per privilege on every cache miss. The primary key stays: it is
-- what keeps positions unique.
CREATE INDEX role_privileges_covering
    ON role_privileges (tenant_id, role_name, position) INCLUDE (privilege, stream);
