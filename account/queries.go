package account

// Every statement of the package, with the lock it takes and why, in the
// order of the paths that send them (see the package comment): accounts and
// their ledger, the lone statement, the batch, the demonstrations, pruning.
// Each touches one account's rows (invariant 8: one account per
// transaction), except pruning's, which is no change (retention.go).

const accountColumns = `id, owner, balance, opening_balance, currency, fence_token, created_at, updated_at, key_name`

const entryColumns = `id, account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, created_at`

// Accounts and their ledger (account.go).

// No lock: a new row is visible to nobody until commit.
const sqlCreateAccount = `
INSERT INTO accounts (owner, balance, opening_balance, key_name)
VALUES ($1, $2, $2, $3)
RETURNING ` + accountColumns

// No lock: a plain snapshot read.
const sqlGetAccount = `SELECT ` + accountColumns + ` FROM accounts WHERE id = $1`

// No lock: key_name is written once, at INSERT, and never changes. NULL
// (opened with keys off) matches no key.
const sqlOpenedByKey = `SELECT coalesce(key_name = $2, false) FROM accounts WHERE id = $1`

const sqlAccountExists = `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)`

const sqlLedger = `
SELECT ` + entryColumns + `
FROM ledger_entries
WHERE account_id = $1 AND id > $2
ORDER BY id
LIMIT $3`

// The lone statement (lone.go).

// A lone row change in one autocommitted statement. The UPDATE takes the
// account's row lock — the row strategy's pessimistic lock — and, after any
// wait for it, re-checks its WHERE against the newest balance, so the funds
// check and the write happen under the lock. No row: refused or
// no such account, and nothing was written. A stored outcome under the key
// makes the last INSERT fail, undoing the whole statement.
const sqlApplyLone = `
WITH account AS (
    UPDATE accounts
    SET balance = balance + $2, updated_at = now()
    WHERE id = $1 AND balance + $2 >= 0
    RETURNING id, balance
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, idempotency_key, request_hash)
    SELECT id, $3, $4, balance, $5, $6, $7 FROM account
    RETURNING ` + entryColumns + `, request_hash
), keys AS (
    INSERT INTO idempotency_keys (account_id, key, request_hash, entry_id)
    SELECT account_id, idempotency_key, request_hash, id FROM entry WHERE idempotency_key IS NOT NULL
)
SELECT ` + entryColumns + ` FROM entry`

// The lone lease withdrawal (lone.go, applyLoneLeased) in one autocommitted
// statement: sqlApplyLone under a lease for this statement alone
// (lockmgr_grant_released, lockmgr/instatement.go; $8 to $11 its
// arguments). The grant is asked for only when the account exists and its
// funds suffice in the statement's snapshot, so that no lease is made, and
// committed, in the name of an account that does not exist. The grant's
// UPDATE locks the lease row until the statement commits: no newer grant can
// come between it and the write, which carries its token onto the entry and
// the account. No row: the lease was held by another (NULL token), the
// funds refused it (read again after the account's row lock), or no such
// account; nothing but a grant with no write under it was committed.
const sqlApplyLoneLeased = `
WITH lease AS (
    SELECT lockmgr_grant_released($8, $9, $10, $11) AS token
    FROM accounts WHERE id = $1 AND balance + $2 >= 0
), account AS (
    UPDATE accounts
    SET balance = balance + $2, fence_token = greatest(fence_token, (SELECT token FROM lease)), updated_at = now()
    WHERE id = $1 AND balance + $2 >= 0 AND (SELECT token FROM lease) IS NOT NULL
    RETURNING id, balance
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, request_hash)
    SELECT id, $3, $4, balance, $5, (SELECT token FROM lease), $6, $7 FROM account
    RETURNING ` + entryColumns + `, request_hash
), keys AS (
    INSERT INTO idempotency_keys (account_id, key, request_hash, entry_id)
    SELECT account_id, idempotency_key, request_hash, id FROM entry WHERE idempotency_key IS NOT NULL
)
SELECT ` + entryColumns + ` FROM entry`

// The batch (batch.go), in the order it sends them: the first round trip
// locks or reads the account and reads the stored outcomes of its keys; the
// second writes.

// Seeding (CreateMany): n new accounts in one statement. The one statement
// that writes more than one account's rows — new rows, visible to nobody
// until commit, so it contends with nothing and locks nothing anyone waits
// for; setup, not a change to anyone's money.
const sqlCreateAccounts = `
INSERT INTO accounts (owner, balance, opening_balance)
SELECT $1, $2, $2 FROM generate_series(1, $3)
RETURNING id`

// The audit (Audit): the accounts of $1 whose balance disagrees with their
// ledger. A read of many accounts in one snapshot; no lock.
const sqlAudit = `
SELECT a.id FROM accounts a
LEFT JOIN (
    SELECT account_id, sum(CASE kind WHEN 'deposit' THEN amount ELSE -amount END) AS delta
    FROM ledger_entries WHERE account_id = ANY($1) GROUP BY account_id
) l ON l.account_id = a.id
WHERE a.id = ANY($1) AND a.balance <> a.opening_balance + coalesce(l.delta, 0)
ORDER BY a.id`

// Bounds this transaction's lock waits and idle time (Options.TxTimeouts):
// set_config(…, true) is SET LOCAL, ended by COMMIT or ROLLBACK, so nothing
// is left on a server connection a pooler hands to someone else next. A NULL
// keeps the session's value. No lock.
const sqlSetTxTimeouts = `
SELECT set_config('lock_timeout', coalesce($1::text, current_setting('lock_timeout')), true),
       set_config('idle_in_transaction_session_timeout',
                  coalesce($2::text, current_setting('idle_in_transaction_session_timeout')), true)`

// FOR UPDATE takes the account's row lock: the pessimistic lock of the row
// strategy. Every other writer of this account queues here until we commit,
// so the balance we read stays true until we write.
const sqlLockAccount = `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`

// No lock, on purpose: the read of unsafe, which anyone may change before its
// write lands, and of the lease strategies, whose lease keeps out other lease
// holders but not the row writers (their writes guard against those).
const sqlReadBalance = `SELECT balance FROM accounts WHERE id = $1`

const sqlGetIdempotencies = `
SELECT key, request_hash, entry_id, error_code, error_message
FROM idempotency_keys
WHERE account_id = $1 AND key = ANY($2)`

const sqlGetEntries = `SELECT ` + entryColumns + ` FROM ledger_entries WHERE id = ANY($1)`

// A batch's writes in one statement: the balance, the ledger entries and
// the idempotency records of the successes (which need the entries' ids).
// The balance must still be the one the batch read ($2: under the row lock,
// or by a lease batch without it); if it is not, the CASE yields NULL,
// which NOT NULL refuses, failing the statement and so the COMMIT queued
// behind it. Rows go in ord order, so their identity ids follow the batch's
// order.
const sqlApplyBatch = `
WITH account AS (
    UPDATE accounts
    SET balance = CASE WHEN balance = $2 THEN balance + $3 END,
        fence_token = greatest(fence_token, $4), updated_at = now()
    WHERE id = $1
    RETURNING id
), entries AS (
    INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, request_hash)
    SELECT account.id, e.kind, e.amount, e.after, e.strategy, e.token, e.key, e.hash
    FROM account, unnest($5::int[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[])
        AS e(ord, kind, amount, after, strategy, token, key, hash)
    ORDER BY e.ord
    RETURNING ` + entryColumns + `, request_hash
), keys AS (
    INSERT INTO idempotency_keys (account_id, key, request_hash, entry_id)
    SELECT account_id, idempotency_key, request_hash, id FROM entries WHERE idempotency_key IS NOT NULL
)
SELECT ` + entryColumns + ` FROM entries`

// The refusals of a batch, stored under their keys so that a retry gets the
// same refusal.
const sqlInsertRefusals = `
INSERT INTO idempotency_keys (account_id, key, request_hash, error_code, error_message)
SELECT $1, r.key, r.hash, r.code, r.message
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS r(key, hash, code, message)`

// The demonstrations (demo.go), a statement per step. They read the balance
// with sqlLockAccount or sqlReadBalance above.

// Reads the first outcome stored for an idempotency key. Under the row lock
// (a row change with a hold) no concurrent request with the same key can be
// between this read and our insert; elsewhere (unsafe, the lease
// demonstrations) the primary key decides.
const sqlGetIdempotency = `
SELECT request_hash, entry_id, error_code, error_message
FROM idempotency_keys
WHERE account_id = $1 AND key = $2`

const sqlGetEntry = `SELECT ` + entryColumns + ` FROM ledger_entries WHERE id = $1`

// Relative update under the row lock held since sqlLockAccount. $3 is the
// writer's fencing token (0 without one): fence_token keeps the highest that wrote.
const sqlAddToBalance = `
UPDATE accounts SET balance = balance + $2, fence_token = greatest(fence_token, $3), updated_at = now()
WHERE id = $1
RETURNING balance`

// The blind write of unsafe and lease-nofence: an absolute balance computed
// from a stale read, the lost update the seed warns about. Takes the row
// lock only from this write to COMMIT.
const sqlSetBalance = `
UPDATE accounts SET balance = $2, fence_token = greatest(fence_token, $3), updated_at = now()
WHERE id = $1
RETURNING balance`

// The lease strategy's write when it goes alone (a hold): the absolute
// balance it computed, only if the balance is still the one it read. The
// lease keeps other lease holders out and the fence (checked just before, in
// this transaction) keeps out stale ones; this condition keeps out writers
// that take no lease at all — row withdrawals and deposits. Equal balances
// mean the computed one is right, whatever happened in between.
const sqlSetBalanceIfUnchanged = `
UPDATE accounts SET balance = $2, fence_token = greatest(fence_token, $4), updated_at = now()
WHERE id = $1 AND balance = $3
RETURNING balance`

// Appends to the ledger. The entry's idempotency key is history, not a
// guard: the key's record (sqlInsertIdempotency, idempotency_keys' primary
// key) goes in the same transaction and refuses a second change with the
// key while it is kept. After its retention the key is new again, and the
// ledger may hold a later entry under it too (migration 00005).
const sqlInsertEntry = `
INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING ` + entryColumns

const sqlInsertIdempotency = `
INSERT INTO idempotency_keys (account_id, key, request_hash, entry_id, error_code, error_message)
VALUES ($1, $2, $3, $4, $5, $6)`

// Pruning (retention.go).

// Deletes idempotency records older than the retention ($1 ms) by the
// database's clock, at most $2 of them: one short statement, committed
// alone. It locks only the rows it deletes, skipping any another node's
// pruner has locked, so two pruners never wait for each other; no change
// ever locks an idempotency record (a change inserts its own, and one with a
// pruned key waits at most for this statement's commit to insert the new
// one). The records are found oldest first through their created_at index.
// created_at is the start of the transaction (or lone statement) that
// wrote the record, at or before its commit, so a record is kept at least
// the retention after that transaction began.
const sqlPruneIdempotencyKeys = `
DELETE FROM idempotency_keys
WHERE (account_id, key) IN (
    SELECT account_id, key FROM idempotency_keys
    WHERE created_at < now() - $1 * interval '1 millisecond'
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)`
