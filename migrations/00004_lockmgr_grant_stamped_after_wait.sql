-- +goose Up

-- lockmgr_try_acquire stamps a grant when it is made, not when its
-- transaction began. A takeover whose UPDATE waited for the lease row — held
-- FOR SHARE by a fenced writer (lockmgr.CheckFence) until that writer's
-- transaction ended, or FOR UPDATE by a rival takeover — used to be stamped
-- now(), the start of its transaction: a wait longer than the TTL gave a
-- lease that was already expired when granted (a 200 ms lease was seen
-- granted 400 ms past its expiry), and its holder's first fenced write was
-- refused.
--
-- The row is now locked first (SELECT … FOR UPDATE, where the wait happens;
-- an UPDATE would compute its new row before waiting), and the grant is
-- stamped clock_timestamp() once it holds the lock: acquired_at is when the
-- lease was granted and expires_at exactly its TTL later. Whether the old
-- lease has run out is still judged by now(), which is never later than the
-- lock's wait, so no lease is taken over before it ran out; the token is
-- still drawn after the wait, above every token granted before. A first
-- grant is stamped just before its INSERT, which waits only for a
-- concurrent first grant of the same resource (and then, most likely,
-- yields to it).
--
-- The holder's local deadline (Lease.Deadline: the local time before the
-- call was sent, plus the TTL, less a margin) stays before this expiry.
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

-- +goose Down
-- The function of migration 00003: grants stamped with now().
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint)
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
