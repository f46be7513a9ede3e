-- +goose Up

-- API keys (bankd --api-keys-file): who opened an account, and which key took
-- a lease. Both are NULL for what was made with keys off.

-- key_name is the name of the API key that opened the account. It is written
-- once, at INSERT, and never changed (the trigger below), so bankd may check
-- it before a change's transaction as safely as inside it.
ALTER TABLE accounts
    ADD COLUMN key_name text CHECK (key_name ~ '^[A-Za-z0-9._-]{1,64}$');

-- +goose StatementBegin
CREATE FUNCTION accounts_key_name_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accounts.key_name is set when the account is opened and never changes'
        USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd

-- UPDATE OF fires only for statements that name key_name in their SET list:
-- bankd's balance updates never do, so they pay nothing for it.
CREATE TRIGGER accounts_key_name_fixed
    BEFORE UPDATE OF key_name ON accounts
    FOR EACH ROW WHEN (OLD.key_name IS DISTINCT FROM NEW.key_name)
    EXECUTE FUNCTION accounts_key_name_fixed();

-- owner is who took the lease (lockmgr's Manager.As): renewing or releasing
-- it needs the same owner as well as its lease id. Every grant writes it, a
-- takeover included, so an owner never outlives its grant.
ALTER TABLE leases
    ADD COLUMN owner text CHECK (char_length(owner) BETWEEN 1 AND 100);

-- lockmgr_try_acquire of 00005 with the owner written by the grant, still in
-- one round trip. A new argument makes a new function (CREATE OR REPLACE
-- cannot change an argument list), so the four-argument one stays, replaced
-- below by a call of this one with no owner: nodes not yet upgraded keep
-- granting, and their grants clear the owner of a lease they take over.
-- +goose StatementBegin
CREATE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint, p_owner text)
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
                    ttl_ms = p_ttl_ms, owner = p_owner
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
            INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms, owner)
            VALUES (p_resource, p_holder, 0, p_lease_id,
                    v_granted_at, v_granted_at + p_ttl_ms * interval '1 millisecond', p_ttl_ms, p_owner)
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint)
RETURNS TABLE (granted boolean, resource text, holder text, token bigint, lease_id uuid,
               acquired_at timestamptz, expires_at timestamptz, ttl_ms bigint, db_now timestamptz)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM lockmgr_try_acquire(p_resource, p_holder, p_lease_id, p_ttl_ms, NULL::text);
$$;
-- +goose StatementEnd

-- +goose Down

-- The four-argument function of 00005 again, as it was.
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
DROP FUNCTION lockmgr_try_acquire(text, text, uuid, bigint, text);
ALTER TABLE leases DROP COLUMN owner;
DROP TRIGGER accounts_key_name_fixed ON accounts;
DROP FUNCTION accounts_key_name_fixed();
ALTER TABLE accounts DROP COLUMN key_name;
