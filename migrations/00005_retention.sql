-- +goose Up

-- Idempotency records are kept for a retention (bankd --idempotency-retention),
-- then pruned, after which the key is new again. The ledger is append-only
-- and keeps every entry with the key it was written under, so a key reused
-- after its retention puts a second entry under it: the ledger's
-- UNIQUE (account_id, idempotency_key) would refuse that change forever.
-- The guard against applying one request twice was never that constraint but
-- idempotency_keys' primary key (account_id, key), inserted in the same
-- statement or transaction as the entry: of two changes with one key, the
-- second to insert its record fails and takes its entry with it. So the
-- ledger keeps a plain index, for finding a key's entries.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_idempotency_key_key;
CREATE INDEX ledger_entries_idempotency_key_idx ON ledger_entries (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The pruners find what has outlived its retention by age, oldest first.
-- Both tables are insert-only, so each index costs one entry per insert.
-- leases gets none: its rows are updated by every renewal and release, which
-- an index on expires_at would stop from being HOT updates; its pruner reads
-- it whole instead (it holds one row per resource).
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
CREATE INDEX lease_grants_granted_at_idx ON lease_grants (granted_at);

-- Rows of leases are now pruned (lockmgr's Manager.Prune), so a grant may
-- find the row it waited for gone. lockmgr_try_acquire (migrations 00003 and 00004)
-- drew a first grant's token before the INSERT's wait for a conflicting row;
-- here it draws it after, so the token is still above every token granted
-- before (invariant 4). Only the first-grant branch differs.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint)
RETURNS TABLE (granted boolean, resource text, holder text, token bigint, lease_id uuid,
               acquired_at timestamptz, expires_at timestamptz, ttl_ms bigint, db_now timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l leases%ROWTYPE;
    v_granted_at timestamptz;
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT * INTO l FROM leases WHERE leases.resource = p_resource;
        IF FOUND AND l.expires_at > now() THEN
            RETURN QUERY SELECT false, l.resource, l.holder, l.token, NULL::uuid,
                                l.acquired_at, l.expires_at, l.ttl_ms, clock_timestamp();
            RETURN;
        ELSIF FOUND THEN
            -- Lock the row first: the wait for a fenced writer (or a rival
            -- takeover) happens here, and the grant is stamped after it.
            PERFORM 1 FROM leases
            WHERE leases.resource = p_resource AND leases.expires_at <= now()
            FOR UPDATE;
            IF FOUND THEN
                v_granted_at := clock_timestamp();
                UPDATE leases
                SET holder = p_holder, token = nextval('fencing_tokens'), lease_id = p_lease_id,
                    acquired_at = v_granted_at, expires_at = v_granted_at + p_ttl_ms * interval '1 millisecond',
                    ttl_ms = p_ttl_ms
                WHERE leases.resource = p_resource AND leases.expires_at <= now()
                RETURNING * INTO l;
            END IF;
        ELSE
            -- ON CONFLICT DO NOTHING: a concurrent first grant won; its row is
            -- read on the next pass. The row goes in without its token, which
            -- is drawn once the row is in: the INSERT may wait for a
            -- concurrent grant's row and then, were that row pruned
            -- meanwhile, go in after all, so a token drawn before that wait
            -- could be below the pruned row's. Drawn after it, the token is
            -- above every token granted before: while our row holds the
            -- resource's key, no other grant of it can commit. nextval is
            -- only reached when there was no row, so tokens are not burnt
            -- by every held try.
            v_granted_at := clock_timestamp();
            INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms)
            VALUES (p_resource, p_holder, 0, p_lease_id,
                    v_granted_at, v_granted_at + p_ttl_ms * interval '1 millisecond', p_ttl_ms)
            ON CONFLICT (resource) DO NOTHING
            RETURNING * INTO l;
            IF FOUND THEN
                UPDATE leases SET token = nextval('fencing_tokens')
                WHERE leases.resource = p_resource
                RETURNING * INTO l;
            END IF;
        END IF;
        IF FOUND THEN
            INSERT INTO lease_grants (token, resource, holder, granted_at)
            VALUES (l.token, l.resource, l.holder, l.acquired_at);
            RETURN QUERY SELECT true, l.resource, l.holder, l.token, l.lease_id,
                                l.acquired_at, l.expires_at, l.ttl_ms, clock_timestamp();
            RETURN;
        END IF;
        -- Lost a race: look again with a new snapshot.
    END LOOP;
    -- The row kept vanishing (a cleanup deleting it under us): no row, and
    -- the caller says so.
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP INDEX lease_grants_granted_at_idx;
DROP INDEX idempotency_keys_created_at_idx;
DROP INDEX ledger_entries_idempotency_key_idx;
-- Fails if a key was reused after its retention: the ledger then holds two
-- entries under it, and nothing may erase either.
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_account_id_idempotency_key_key
    UNIQUE (account_id, idempotency_key);

-- lockmgr_try_acquire as migration 00004 made it.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint)
RETURNS TABLE (granted boolean, resource text, holder text, token bigint, lease_id uuid,
               acquired_at timestamptz, expires_at timestamptz, ttl_ms bigint, db_now timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l leases%ROWTYPE;
    v_granted_at timestamptz;
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT * INTO l FROM leases WHERE leases.resource = p_resource;
        IF FOUND AND l.expires_at > now() THEN
            RETURN QUERY SELECT false, l.resource, l.holder, l.token, NULL::uuid,
                                l.acquired_at, l.expires_at, l.ttl_ms, clock_timestamp();
            RETURN;
        ELSIF FOUND THEN
            -- Lock the row first: the wait for a fenced writer (or a rival
            -- takeover) happens here, and the grant is stamped after it.
            PERFORM 1 FROM leases
            WHERE leases.resource = p_resource AND leases.expires_at <= now()
            FOR UPDATE;
            IF FOUND THEN
                v_granted_at := clock_timestamp();
                UPDATE leases
                SET holder = p_holder, token = nextval('fencing_tokens'), lease_id = p_lease_id,
                    acquired_at = v_granted_at, expires_at = v_granted_at + p_ttl_ms * interval '1 millisecond',
                    ttl_ms = p_ttl_ms
                WHERE leases.resource = p_resource AND leases.expires_at <= now()
                RETURNING * INTO l;
            END IF;
        ELSE
            -- ON CONFLICT DO NOTHING: a concurrent first grant won; its row is
            -- read on the next pass. nextval is only reached when there was
            -- no row, so tokens are not burnt by every held try.
            v_granted_at := clock_timestamp();
            INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms)
            VALUES (p_resource, p_holder, nextval('fencing_tokens'), p_lease_id,
                    v_granted_at, v_granted_at + p_ttl_ms * interval '1 millisecond', p_ttl_ms)
            ON CONFLICT (resource) DO NOTHING
            RETURNING * INTO l;
        END IF;
        IF FOUND THEN
            INSERT INTO lease_grants (token, resource, holder, granted_at)
            VALUES (l.token, l.resource, l.holder, l.acquired_at);
            RETURN QUERY SELECT true, l.resource, l.holder, l.token, l.lease_id,
                                l.acquired_at, l.expires_at, l.ttl_ms, clock_timestamp();
            RETURN;
        END IF;
        -- Lost a race: look again with a new snapshot.
    END LOOP;
    -- The row kept vanishing (a cleanup deleting it under us): no row, and
    -- the caller says so.
END;
$$;
-- +goose StatementEnd
