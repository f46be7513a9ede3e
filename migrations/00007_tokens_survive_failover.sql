-- +goose Up

-- Tokens that survive a failover (issue 15, invariant 4), by construction and
-- by a guard.
--
-- By construction: a token is drawn only inside a grant, and the grant now
-- commits with synchronous_commit on even when the session has it off (set
-- below, for the grant's transaction only). nextval WAL-logs the sequence 32
-- values ahead and only the call that logs writes WAL; a call that does not
-- relies on an earlier record, which is before its grant's commit record in
-- the WAL. A synchronous commit waits until the standby has everything up to
-- its commit record, so every token of every acknowledged grant is on the
-- standby: after promotion the sequence resumes above it. What can be lost
-- in a failover is only what no one was told of: draws of transactions that
-- rolled back or whose commit was never acknowledged.
--
-- By a guard: should the sequence still go back (a restore from backup, a
-- promotion of an asynchronous standby, an operator's setval), a grant
-- refuses a drawn token that is not above every token granted before — the
-- resource's current one and the newest in lease_grants (an index probe of
-- its primary key) — moves the sequence past it (setval) and draws again.
-- A sequence that went back can then never grant an old token; it costs a
-- grant one index probe, and the repair happens once.

-- lockmgr_next_token draws a token above p_floor (the resource's current
-- token, 0 for a first grant) and above every granted token.
-- +goose StatementBegin
CREATE FUNCTION lockmgr_next_token(p_floor bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_floor bigint;
    v_token bigint;
BEGIN
    -- The floor is read before the draw: every token committed by then was
    -- drawn before ours, so in a sequence that never went back ours is
    -- above it. Read after the draw, a grant that drew later but committed
    -- first would make the floor pass our token, and trigger a repair for
    -- nothing.
    v_floor := greatest(p_floor, (SELECT max(token) FROM lease_grants));
    v_token := nextval('fencing_tokens');
    FOR attempt IN 1..3 LOOP
        IF v_token > v_floor THEN
            RETURN v_token;
        END IF;
        -- The sequence went back. Repairs are serialised (lockmgr's class of
        -- two-key advisory locks, key 0: no resource's wait lock, which is
        -- taken in sessions, never in transactions) and move the sequence
        -- well past both the floor and the newest value any session drew
        -- (last_value): a grant drawing between that read and the setval
        -- would need a thousand draws to meet the values drawn after it.
        -- Should two grants still meet, lease_grants' primary key refuses
        -- the second: a token is never granted twice.
        RAISE WARNING 'lockmgr: fencing_tokens drew %, not above the granted %: moving the sequence past it', v_token, v_floor;
        PERFORM pg_advisory_xact_lock(1818979687, 0);
        PERFORM setval('fencing_tokens', greatest(v_floor, (SELECT last_value FROM fencing_tokens)) + 1000);
        v_token := nextval('fencing_tokens');
    END LOOP;
    RAISE EXCEPTION 'lockmgr: fencing_tokens keeps drawing tokens not above %', v_floor
        USING ERRCODE = 'serialization_failure';
END;
$$;
-- +goose StatementEnd

-- lockmgr_try_acquire of 00006 with a synchronous grant and the guarded draw.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint, p_owner text)
RETURNS TABLE (granted boolean, resource text, holder text, token bigint, lease_id uuid,
               acquired_at timestamptz, expires_at timestamptz, ttl_ms bigint, db_now timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    l leases%ROWTYPE;
    v_granted_at timestamptz;
BEGIN
    -- A grant commits synchronously whatever the session says: its token
    -- (and the sequence's WAL record it came from, which comes before the
    -- commit) must be on the synchronous standby before anyone is told of
    -- it (invariant 4). set_config(…, true) is SET LOCAL: it lasts until the
    -- end of the caller's transaction, and PostgreSQL reads the setting when
    -- it commits. Stronger settings (remote_write, remote_apply) are kept.
    IF current_setting('synchronous_commit') IN ('off', 'local') THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
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
                SET holder = p_holder, token = lockmgr_next_token(leases.token), lease_id = p_lease_id,
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
                UPDATE leases SET token = lockmgr_next_token(0)
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

-- 00006's function again: the session's synchronous_commit, nextval unguarded.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION lockmgr_try_acquire(p_resource text, p_holder text, p_lease_id uuid, p_ttl_ms bigint, p_owner text)
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
DROP FUNCTION lockmgr_next_token(bigint);
