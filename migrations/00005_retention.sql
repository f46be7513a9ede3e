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

-- +goose Down
DROP INDEX lease_grants_granted_at_idx;
DROP INDEX idempotency_keys_created_at_idx;
DROP INDEX ledger_entries_idempotency_key_idx;
-- Fails if a key was reused after its retention: the ledger then holds two
-- entries under it, and nothing may erase either.
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_account_id_idempotency_key_key
    UNIQUE (account_id, idempotency_key);
