-- +goose Up

-- accounts is the protected resource. balance is in minor units and can never
-- go negative; opening_balance is kept so that the money invariant
-- (balance = opening + deposits - withdrawals) can be checked from the ledger
-- alone. fence_token records the highest fencing token that has written here.
CREATE TABLE accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner           text        NOT NULL CHECK (char_length(owner) BETWEEN 1 AND 100),
    balance         bigint      NOT NULL CHECK (balance >= 0),
    opening_balance bigint      NOT NULL CHECK (opening_balance >= 0),
    currency        char(3)     NOT NULL DEFAULT 'INR',
    fence_token     bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- ledger_entries is the append-only history of every change to a balance.
CREATE TABLE ledger_entries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint      NOT NULL REFERENCES accounts (id),
    kind            text        NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    amount          bigint      NOT NULL CHECK (amount > 0),
    balance_after   bigint      NOT NULL,
    strategy        text        NOT NULL,
    fence_token     bigint,
    idempotency_key text,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, idempotency_key)
);

CREATE INDEX ledger_entries_account_id_idx ON ledger_entries (account_id, id);

-- idempotency_keys stores the first outcome of every keyed request, success or
-- business error, in the same transaction as the change it describes, so a
-- retry is answered from here and never applied twice.
CREATE TABLE idempotency_keys (
    account_id     bigint      NOT NULL REFERENCES accounts (id),
    key            text        NOT NULL,
    request_hash   text        NOT NULL,
    entry_id       bigint      REFERENCES ledger_entries (id),
    error_code     text,
    error_message  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key),
    CHECK ((entry_id IS NULL) <> (error_code IS NULL))
);

-- The ledger is history: nothing may rewrite or erase it, not even a bug in
-- bankd. TRUNCATE is left to operators (it needs table ownership anyway).
-- +goose StatementBegin
CREATE FUNCTION ledger_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE ledger_entries;
DROP FUNCTION ledger_entries_append_only();
DROP TABLE accounts;
