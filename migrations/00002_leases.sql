-- +goose Up

-- One database-wide sequence hands out every fencing token, so a token names
-- exactly one grant of one resource, and no token is ever handed out twice:
-- not after a release, an expiry, a restart, or a cleanup of old rows.
CREATE SEQUENCE fencing_tokens AS bigint;

-- leases is the cluster-wide lock table: one row per resource, describing its
-- newest grant. A release or expiry leaves the row in place (expires_at in the
-- past), so that the newest grant stays known: a stale holder can be told
-- apart from one whose lease merely ran out. An ordinary logged table, so a
-- crash of PostgreSQL loses no grant.
CREATE TABLE leases (
    resource    text        PRIMARY KEY CHECK (resource ~ '^[A-Za-z0-9:_.-]{1,200}$'),
    holder      text        NOT NULL CHECK (char_length(holder) BETWEEN 1 AND 100),
    token       bigint      NOT NULL,
    lease_id    uuid        NOT NULL UNIQUE,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ttl_ms      bigint      NOT NULL CHECK (ttl_ms > 0)
);

-- lease_grants is the append-only history of every grant: which token went to
-- which resource. It tells a token that was never issued for a resource from
-- one that is merely stale.
CREATE TABLE lease_grants (
    token      bigint      PRIMARY KEY,
    resource   text        NOT NULL,
    holder     text        NOT NULL,
    granted_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE lease_grants;
DROP TABLE leases;
DROP SEQUENCE fencing_tokens;
