-- +goose Up

-- lockmgr_try_acquire grants a lease in one round trip: it takes over the
-- resource's newest lease if that has run out or been released, makes the
-- first grant of a resource that has no row, or reports who holds it. The
-- held case only reads: no transaction id, no fencing token, no row lock, so
-- it costs no WAL flush, however many waiters ask. The holder's lease_id is
-- never returned to anyone else (it is the holder's secret).
--
-- Time is the database's: now() (the transaction's start) decides expiry and
-- stamps the grant, as lockmgr's other statements do; clock_timestamp() is
-- returned so the caller can tell how long a held lease has left.
--
-- Each statement in a VOLATILE plpgsql function takes a new snapshot, so a
-- caller that loses a race (a concurrent takeover, or a concurrent first
-- grant) reads the winner's row on its next pass and reports it as held.
-- The takeover UPDATE takes the row lock, so two takeovers serialize, and
-- nextval runs for the row version finally updated, after any wait: the new
-- token is above every token granted before.
-- +goose StatementBegin
CREATE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint)
RETURNS TABLE (granted boolean, resource text, holder text, token bigint, lease_id uuid,
               acquired_at timestamptz, expires_at timestamptz, ttl_ms bigint, db_now timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l leases%ROWTYPE;
BEGIN
    FOR attempt IN 1..3 LOOP
        SELECT * INTO l FROM leases WHERE leases.resource = p_resource;
        IF FOUND AND l.expires_at > now() THEN
            RETURN QUERY SELECT false, l.resource, l.holder, l.token, NULL::uuid,
                                l.acquired_at, l.expires_at, l.ttl_ms, clock_timestamp();
            RETURN;
        ELSIF FOUND THEN
            UPDATE leases
            SET holder = p_holder, token = nextval('fencing_tokens'), lease_id = p_lease_id,
                acquired_at = now(), expires_at = now() + p_ttl_ms * interval '1 millisecond',
                ttl_ms = p_ttl_ms
            WHERE leases.resource = p_resource AND leases.expires_at <= now()
            RETURNING * INTO l;
        ELSE
            -- ON CONFLICT DO NOTHING: a concurrent first grant won; its row is
            -- read on the next pass. nextval is only reached when there was
            -- no row, so tokens are not burnt by every held try.
            INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms)
            VALUES (p_resource, p_holder, nextval('fencing_tokens'), p_lease_id,
                    now(), now() + p_ttl_ms * interval '1 millisecond', p_ttl_ms)
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

-- +goose Down
DROP FUNCTION lockmgr_try_acquire(text, text, uuid, bigint);
