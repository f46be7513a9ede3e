-- The row strategy's lone withdrawal (account's sqlApplyLone): one
-- autocommitted statement.
\set a random(1, 10000)
WITH account AS (
    UPDATE accounts SET balance = balance - 1, updated_at = now()
    WHERE id = :a AND balance - 1 >= 0
    RETURNING id, balance
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy)
    SELECT id, 'withdrawal', 1, balance, 'row' FROM account
    RETURNING id
)
SELECT id FROM entry;
