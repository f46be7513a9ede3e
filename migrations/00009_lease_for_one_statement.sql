-- +goose Up

-- A lease for one statement (issue 16): granted and released in the same
-- row version, inside the caller's statement, for a holder whose whole
-- critical section is that statement (account's lone lease withdrawal).
--
-- What makes it exclusive is the lease row's lock, not its expiry: the
-- grant's UPDATE locks the row until the caller's transaction ends, so no
-- other grant can be made and no other holder's fence can pass until then,
-- while the row already reads as released (expires_at = acquired_at) for
-- whoever comes after. The token is drawn as every grant's is
-- (lockmgr_next_token: above the resource's and every granted token), the
-- grant is recorded in lease_grants and commits synchronously (invariant 4),
-- and a waiter of another Manager is told at commit, as by a release.
--
-- Where lockmgr_try_acquire + the fence + the release cost a pipeline of
-- three statements and two updates of the lease row, this is one call and
-- one update. It returns the token, or NULL when it grants nothing: a live
-- lease holds the resource (or a rival took it over meanwhile), and the
-- caller takes the slow path that waits.
--
-- A takeover is one UPDATE: a rival's takeover in flight makes it wait and
-- then re-check expires_at against the new row, and finding the lease live
-- it grants nothing. Its stamp is taken before any wait for a fenced
-- writer's FOR SHARE (lockmgr_try_acquire stamps after it, so that a lease
-- lasts its TTL from when it could be used): a lease that ends with its
-- grant has no TTL to lose, and the stamp is only the grant's history.
-- +goose StatementBegin
CREATE FUNCTION lockmgr_grant_released(p_resource text, p_holder text, p_ttl_ms bigint, p_owner text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_token bigint;
    v_at    timestamptz := clock_timestamp();
BEGIN
    IF current_setting('synchronous_commit') IN ('off', 'local') THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
    UPDATE leases
    SET holder = p_holder, token = lockmgr_next_token(leases.token), lease_id = gen_random_uuid(),
        acquired_at = v_at, expires_at = v_at, ttl_ms = p_ttl_ms, owner = p_owner
    WHERE leases.resource = p_resource AND leases.expires_at <= now()
    RETURNING token INTO v_token;
    IF NOT FOUND THEN
        -- No row, or a live one. A first grant goes in as lockmgr_try_acquire's
        -- does: the row first, its token drawn once the row holds the key.
        INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms, owner)
        VALUES (p_resource, p_holder, 0, gen_random_uuid(), v_at, v_at, p_ttl_ms, p_owner)
        ON CONFLICT (resource) DO NOTHING;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        UPDATE leases SET token = lockmgr_next_token(0)
        WHERE leases.resource = p_resource
        RETURNING token INTO v_token;
    END IF;
    INSERT INTO lease_grants (token, resource, holder, granted_at)
    VALUES (v_token, p_resource, p_holder, v_at);
    -- As a release (lockmgr's sqlReleased): notify only when some Manager
    -- waits; the try-lock, held until commit, makes a waiter registering
    -- meanwhile wait for the commit and then find the lease released.
    IF NOT pg_try_advisory_xact_lock(1818979687, hashtext(p_resource)) THEN
        PERFORM pg_notify('lockmgr_release', p_resource || ' ' || v_token);
    END IF;
    RETURN v_token;
END;
$$;
-- +goose StatementEnd

-- The live page's lease events (00008) with one more case: a grant whose
-- lease ends with it (expires_at = acquired_at, lockmgr_grant_released) is a
-- grant and a release.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION live_lease_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text;
    v_old  bigint;
BEGIN
    IF NEW.token = 0 THEN
        RETURN NULL;
    ELSIF NEW.token <> OLD.token THEN
        v_kind := 'grant';
        IF OLD.token <> 0 THEN
            v_old := OLD.token;
            IF OLD.expires_at >= OLD.acquired_at + OLD.ttl_ms * interval '1 millisecond' THEN
                v_kind := 'takeover';
            END IF;
        END IF;
    ELSIF NEW.expires_at > OLD.expires_at THEN
        v_kind := 'renewal';
    ELSIF NEW.expires_at < OLD.expires_at THEN
        v_kind := 'release';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO live_events (kind, resource, account_id, holder, token, old_token, detail)
    VALUES (v_kind, NEW.resource,
            CASE WHEN NEW.resource ~ '^account:[0-9]{1,18}$' THEN substring(NEW.resource FROM 9)::bigint END,
            NEW.holder, NEW.token, v_old, NEW.ttl_ms::text);
    IF v_kind IN ('grant', 'takeover') AND NEW.expires_at <= NEW.acquired_at THEN
        INSERT INTO live_events (kind, resource, account_id, holder, token, detail)
        VALUES ('release', NEW.resource,
                CASE WHEN NEW.resource ~ '^account:[0-9]{1,18}$' THEN substring(NEW.resource FROM 9)::bigint END,
                NEW.holder, NEW.token, NEW.ttl_ms::text);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down

-- 00008's lease events again.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION live_lease_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text;
    v_old  bigint;
BEGIN
    IF NEW.token = 0 THEN
        RETURN NULL;
    ELSIF NEW.token <> OLD.token THEN
        v_kind := 'grant';
        IF OLD.token <> 0 THEN
            v_old := OLD.token;
            IF OLD.expires_at >= OLD.acquired_at + OLD.ttl_ms * interval '1 millisecond' THEN
                v_kind := 'takeover';
            END IF;
        END IF;
    ELSIF NEW.expires_at > OLD.expires_at THEN
        v_kind := 'renewal';
    ELSIF NEW.expires_at < OLD.expires_at THEN
        v_kind := 'release';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO live_events (kind, resource, account_id, holder, token, old_token, detail)
    VALUES (v_kind, NEW.resource,
            CASE WHEN NEW.resource ~ '^account:[0-9]{1,18}$' THEN substring(NEW.resource FROM 9)::bigint END,
            NEW.holder, NEW.token, v_old, NEW.ttl_ms::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
DROP FUNCTION lockmgr_grant_released(text, text, bigint, text);
