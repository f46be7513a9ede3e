-- The lease strategy's lone withdrawal before issue 16's lease for one
-- statement: one pipeline of BEGIN, the account check, lockmgr's grant, the
-- write fenced by the grant's lease id, the release, COMMIT.
\set a random(1, 10000)
\startpipeline
BEGIN;
SELECT 1 / (SELECT count(*)::int FROM accounts WHERE id = :a);
SELECT granted, token FROM lockmgr_try_acquire('account:' || :a, 'vm', ('00000000-0000-0000-0000-' || lpad(:a::text, 12, '0'))::uuid, 5000, NULL);
WITH lease AS (
    SELECT token FROM leases
    WHERE resource = 'account:' || :a AND lease_id = ('00000000-0000-0000-0000-' || lpad(:a::text, 12, '0'))::uuid
      AND expires_at > clock_timestamp()
), account AS (
    UPDATE accounts SET balance = balance - 1, fence_token = greatest(fence_token, (SELECT token FROM lease)), updated_at = now()
    WHERE id = :a AND balance - 1 >= 0 AND EXISTS (SELECT 1 FROM lease)
    RETURNING id, balance
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token)
    SELECT id, 'withdrawal', 1, balance, 'lease', (SELECT token FROM lease) FROM account
    RETURNING id
)
SELECT id FROM entry;
WITH released AS (
    UPDATE leases SET expires_at = least(expires_at, clock_timestamp())
    WHERE resource = 'account:' || :a AND lease_id = ('00000000-0000-0000-0000-' || lpad(:a::text, 12, '0'))::uuid
    RETURNING resource, token
)
SELECT token, pg_try_advisory_xact_lock(1818979687, hashtext(resource)) FROM released;
COMMIT;
\endpipeline
