-- +goose Up

-- live_events is the timeline of bankd's live page (package web/live): what
-- committed on any node, written by the triggers below in the transaction
-- that commits it, so a node shows what every other node did by reading this
-- table by id. Only for people watching: nothing in lockbank reads it to
-- decide anything, so it is UNLOGGED (no WAL for the hot path to pay; a crash
-- of PostgreSQL empties it) and pruned by every node after a few minutes.
-- Its ids come from a logged sequence, so they keep rising across such a
-- crash and a page that resumes with Last-Event-ID never sees an id twice.
--
-- Only sessions that ask write events: a bankd with its live page on
-- connects with lockbank.live_events=on (live.WriteEvents). The triggers'
-- WHEN reads that setting without calling their functions, so every other
-- session — a bankd with --live=false or API keys, a lockmgr library user,
-- an operator's psql — pays next to nothing for them (BENCHMARKS.md: the
-- events cost bankd about 15% of its throughput when written).
CREATE SEQUENCE live_event_ids AS bigint;

CREATE UNLOGGED TABLE live_events (
    id         bigint      PRIMARY KEY DEFAULT nextval('live_event_ids'),
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Entries written by one transaction share it: a batch.
    xact       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- The node whose session wrote it (bankd names its sessions "bankd NODE").
    node       text        NOT NULL DEFAULT coalesce(substring(current_setting('application_name') FROM '^bankd (.*)$'), ''),
    kind       text        NOT NULL,
    resource   text,
    account_id bigint,
    holder     text,
    token      bigint,
    old_token  bigint,
    amount     bigint,
    balance    bigint,
    strategy   text,
    code       text,
    detail     text
);

-- +goose StatementBegin
CREATE FUNCTION live_ledger_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_events (kind, account_id, resource, amount, balance, strategy, token)
    VALUES (NEW.kind, NEW.account_id, 'account:' || NEW.account_id, NEW.amount, NEW.balance_after, NEW.strategy, NEW.fence_token);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER live_ledger_event
    AFTER INSERT ON ledger_entries
    FOR EACH ROW WHEN (current_setting('lockbank.live_events', true) = 'on')
    EXECUTE FUNCTION live_ledger_event();

-- +goose StatementBegin
CREATE FUNCTION live_account_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO live_events (kind, account_id, resource, balance, detail)
    VALUES ('open', NEW.id, 'account:' || NEW.id, NEW.opening_balance, NEW.owner);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER live_account_event
    AFTER INSERT ON accounts
    FOR EACH ROW WHEN (current_setting('lockbank.live_events', true) = 'on')
    EXECUTE FUNCTION live_account_event();

-- A lease row changes for a grant (a new token: the first, after a release,
-- or a takeover of a lease that ran out), a renewal (same token, later
-- expiry) or a release (same token, expiry cut short). A first grant inserts
-- its row with token 0 and then draws the token (lockmgr_try_acquire): the
-- insert is no event, the draw is. A lease ran out, rather than being
-- released, when its expiry was not cut short of acquired_at + ttl (the test
-- lockmgr's takeover metric uses).
-- +goose StatementBegin
CREATE FUNCTION live_lease_event() RETURNS trigger
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

CREATE TRIGGER live_lease_event
    AFTER UPDATE ON leases
    FOR EACH ROW WHEN (current_setting('lockbank.live_events', true) = 'on')
    EXECUTE FUNCTION live_lease_event();

-- +goose Down
DROP TRIGGER live_lease_event ON leases;
DROP FUNCTION live_lease_event();
DROP TRIGGER live_account_event ON accounts;
DROP FUNCTION live_account_event();
DROP TRIGGER live_ledger_event ON ledger_entries;
DROP FUNCTION live_ledger_event();
DROP TABLE live_events;
DROP SEQUENCE live_event_ids;
