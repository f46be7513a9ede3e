package account

// Every statement of the package, with the lock it takes and why. All of them
// touch one account's rows (invariant 8: one account per transaction).

const accountColumns = `id, owner, balance, opening_balance, currency, fence_token, created_at, updated_at`

const entryColumns = `id, account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, created_at`

// No lock: a new row is visible to nobody until commit.
const sqlCreateAccount = `
INSERT INTO accounts (owner, balance, opening_balance)
VALUES ($1, $2, $2)
RETURNING ` + accountColumns

// No lock: a plain snapshot read.
const sqlGetAccount = `SELECT ` + accountColumns + ` FROM accounts WHERE id = $1`

const sqlAccountExists = `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)`

const sqlLedger = `
SELECT ` + entryColumns + `
FROM ledger_entries
WHERE account_id = $1 AND id > $2
ORDER BY id
LIMIT $3`

const sqlGetEntry = `SELECT ` + entryColumns + ` FROM ledger_entries WHERE id = $1`

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

// FOR UPDATE takes the account's row lock: the pessimistic lock of the row
// strategy. Every other writer of this account queues here until we commit,
// so the balance we read stays true until we write.
const sqlLockAccount = `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`

// No lock, on purpose: the unsafe strategy's read, which anyone may change
// before its write lands.
const sqlReadBalance = `SELECT balance FROM accounts WHERE id = $1`

// Relative update under the row lock held since sqlLockAccount. $3 is the
// writer's fencing token (0 without one): fence_token keeps the highest that wrote.
const sqlAddToBalance = `
UPDATE accounts SET balance = balance + $2, fence_token = greatest(fence_token, $3), updated_at = now()
WHERE id = $1
RETURNING balance`

// The unsafe strategy's blind write of an absolute balance computed from a
// stale read: the lost update the seed warns about. Takes the row lock only
// for the instant of the write.
const sqlSetBalance = `
UPDATE accounts SET balance = $2, fence_token = greatest(fence_token, $3), updated_at = now()
WHERE id = $1
RETURNING balance`

// The lease strategy's write: the absolute balance it computed, only if the
// balance is still the one it read. The lease keeps other lease holders out
// and the fence (checked just before, in this transaction) keeps out stale
// ones; this condition keeps out writers that take no lease at all — row
// withdrawals and deposits. Equal balances mean the computed one is right,
// whatever happened in between.
const sqlSetBalanceIfUnchanged = `
UPDATE accounts SET balance = $2, fence_token = greatest(fence_token, $4), updated_at = now()
WHERE id = $1 AND balance = $3
RETURNING balance`

// Appends to the ledger; UNIQUE (account_id, idempotency_key) backs the
// idempotency record as a second line of defence.
const sqlInsertEntry = `
INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token, idempotency_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING ` + entryColumns

// Reads the first outcome stored for an idempotency key. Under the row lock
// (row strategy, deposits) no concurrent request with the same key can be
// between this read and our insert; elsewhere the primary key decides.
const sqlGetIdempotency = `
SELECT request_hash, entry_id, error_code, error_message
FROM idempotency_keys
WHERE account_id = $1 AND key = $2`

const sqlInsertIdempotency = `
INSERT INTO idempotency_keys (account_id, key, request_hash, entry_id, error_code, error_message)
VALUES ($1, $2, $3, $4, $5, $6)`

// The batch forms of the statements above (see combine.go), for the changes
// of one account applied in one transaction under its row lock.

const sqlGetIdempotencies = `
SELECT key, request_hash, entry_id, error_code, error_message
FROM idempotency_keys
WHERE account_id = $1 AND key = ANY($2)`

const sqlGetEntries = `SELECT ` + entryColumns + ` FROM ledger_entries WHERE id = ANY($1)`

// A batch's writes in one statement: the balance, the ledger entries and
// the idempotency records of the successes (which need the entries' ids).
// The balance must still be the one read under the row lock ($2); if it is
// not, the CASE yields NULL, which NOT NULL refuses, failing the statement
// and so the COMMIT queued behind it. Rows go in ord order, so their identity
// ids follow the batch's order.
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

// A lone row change in one autocommitted statement (applyLone). The UPDATE
// takes the account's row lock — the row strategy's pessimistic lock — and,
// after any wait for it, re-checks its WHERE against the newest balance, so
// the funds check and the write happen under the lock. No row: refused or
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
