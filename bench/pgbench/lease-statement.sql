-- The lease strategy's lone withdrawal now (account's sqlApplyLoneLeased):
-- the same statement as row.sql under a lease for itself
-- (lockmgr_grant_released), between BEGIN and COMMIT in one pipeline.
\set a random(1, 10000)
\startpipeline
BEGIN;
WITH lease AS (
    SELECT lockmgr_grant_released('account:' || :a, 'vm', 5000, NULL) AS token
    FROM accounts WHERE id = :a AND balance - 1 >= 0
), account AS (
    UPDATE accounts SET balance = balance - 1, fence_token = greatest(fence_token, (SELECT token FROM lease)), updated_at = now()
    WHERE id = :a AND balance - 1 >= 0 AND (SELECT token FROM lease) IS NOT NULL
    RETURNING id, balance
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token)
    SELECT id, 'withdrawal', 1, balance, 'lease', (SELECT token FROM lease) FROM account
    RETURNING id
)
SELECT id FROM entry;
COMMIT;
\endpipeline
