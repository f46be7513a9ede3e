package account

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/lockmgr"
)

// Strategy is how a withdrawal keeps (or fails to keep) other writers out
// between reading the balance and writing the new one.
type Strategy string

const (
	// StrategyRow locks the account row (SELECT … FOR UPDATE) for the whole
	// read-check-write: the classic pessimistic lock.
	StrategyRow Strategy = "row"
	// StrategyUnsafe reads with no lock and writes back an absolute balance:
	// two concurrent withdrawals can both succeed. Demo mode only.
	StrategyUnsafe Strategy = "unsafe"
	// StrategyLease takes the account's lease (lockmgr) instead of a row
	// lock, reads with no lock, and writes the new balance only if its
	// fencing token is still the newest live grant and the balance is still
	// what it read.
	StrategyLease Strategy = "lease"
	// StrategyLeaseNoFence is StrategyLease with a plain absolute write: a
	// holder paused past its lease overwrites the newer holder's balance.
	// Demo mode only.
	StrategyLeaseNoFence Strategy = "lease-nofence"
)

// Change is one deposit or withdrawal.
type Change struct {
	AccountID int64
	// Amount in minor units, 1–MaxAmount.
	Amount int64
	// Strategy is required for withdrawals and ignored for deposits, which
	// always take the row lock.
	Strategy Strategy
	// Hold is a demo-mode pause between reading the balance and writing it,
	// to widen the race window; 0–MaxHold, and only 0 outside demo mode.
	Hold time.Duration
	// IdempotencyKey, when set (1–255 printable ASCII characters), makes the
	// change happen at most once: a retry with the same key and the same
	// request gets the first outcome again.
	IdempotencyKey string
	// FenceToken, when set, is the writer's fencing token for the account's
	// lease (LeaseResource): the change is applied only if it is the newest
	// grant and still live, checked in the same transaction as the write.
	// Not with the lease strategies, which fence with their own lease.
	FenceToken int64
}

// Result is the outcome of a Change.
type Result struct {
	Entry Entry
	// Replayed is true when the outcome (Entry, or the returned *Error) was
	// stored by an earlier request with the same idempotency key.
	Replayed bool
}

// Deposit adds c.Amount to the account under its row lock.
// Errors: CodeInvalidAmount, CodeInvalidRequest, CodeInvalidIdempotencyKey,
// CodeUnsafeDisabled, CodeAccountNotFound, CodeBalanceOverflow,
// CodeIdempotencyKeyReused, and the database failures (errors.go).
func (s *Service) Deposit(ctx context.Context, c Change) (Result, error) {
	c.Strategy = StrategyRow
	if err := s.validate(c); err != nil {
		return Result{}, err
	}
	return s.route(ctx, KindDeposit, c)
}

// Withdraw takes c.Amount out of the account with c.Strategy.
// Errors: CodeInvalidAmount, CodeInvalidRequest, CodeInvalidIdempotencyKey,
// CodeUnknownStrategy, CodeUnsafeDisabled, CodeAccountNotFound,
// CodeInsufficientFunds, CodeIdempotencyKeyReused, the fence's
// CodeStaleFencingToken, CodeLeaseExpired, CodeFencingTokenMismatch (for the
// caller's Fencing-Token, or for the lease of a demonstration with a hold;
// never for the lease the lease strategy takes itself), CodeLockTimeout when
// the lease strategies wait too long for a usable lease, and the database
// failures (errors.go).
func (s *Service) Withdraw(ctx context.Context, c Change) (Result, error) {
	if err := s.validate(c); err != nil {
		return Result{}, err
	}
	if c.Strategy == StrategyLease || c.Strategy == StrategyLeaseNoFence {
		return s.withdrawLeased(ctx, c)
	}
	return s.route(ctx, KindWithdrawal, c)
}

// route sends a row-strategy change through the account's queue, where it
// shares a transaction with the changes queued beside it (combine.go). The
// demonstrations go alone: a hold inside a shared transaction would stall
// every change queued behind it, and unsafe must race, not queue.
func (s *Service) route(ctx context.Context, kind string, c Change) (Result, error) {
	if c.Strategy != StrategyRow || c.Hold > 0 {
		return s.apply(ctx, kind, c)
	}
	return s.submit(&pending{ctx: ctx, kind: kind, change: c, hash: requestHash(kind, c)})
}

func (s *Service) validate(c Change) error {
	switch {
	case c.AccountID <= 0:
		return notFound(c.AccountID)
	case c.Amount < 1 || c.Amount > MaxAmount:
		return errorf(CodeInvalidAmount, "amount must be an integer from 1 to %d (minor units)", int64(MaxAmount))
	case !s.knows(c.Strategy):
		return errorf(CodeUnknownStrategy, "strategy %q is not one of: %s", c.Strategy, s.strategyNames())
	case (c.Strategy == StrategyUnsafe || c.Strategy == StrategyLeaseNoFence) && !s.unsafeDemo:
		return errorf(CodeUnsafeDisabled, "the %s strategy is only available when bankd runs with --unsafe-demo", c.Strategy)
	case c.FenceToken < 0:
		return errorf(CodeInvalidRequest, "a fencing token is a positive integer")
	case c.FenceToken != 0 && (c.Strategy == StrategyLease || c.Strategy == StrategyLeaseNoFence):
		return errorf(CodeInvalidRequest, "the %s strategy fences with its own lease; send Fencing-Token with the row strategy or deposits", c.Strategy)
	case c.Hold < 0 || c.Hold > MaxHold:
		return errorf(CodeInvalidRequest, "hold_ms must be from 0 to %d", MaxHold.Milliseconds())
	case c.Hold > 0 && !s.unsafeDemo:
		return errorf(CodeUnsafeDisabled, "hold_ms is only available when bankd runs with --unsafe-demo")
	}
	return ValidateIdempotencyKey(c.IdempotencyKey)
}

// knows reports whether strategy is one this Service offers (the lease
// strategies need a lock manager).
func (s *Service) knows(strategy Strategy) bool {
	switch strategy {
	case StrategyRow, StrategyUnsafe:
		return true
	case StrategyLease, StrategyLeaseNoFence:
		return s.locks != nil
	}
	return false
}

func (s *Service) strategyNames() string {
	if s.locks == nil {
		return "row, unsafe"
	}
	return "row, lease, unsafe, lease-nofence"
}

// ValidateIdempotencyKey accepts "" (no key) or 1–255 printable ASCII characters.
// Errors: CodeInvalidIdempotencyKey.
func ValidateIdempotencyKey(key string) error {
	if len(key) > 255 {
		return errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be at most 255 characters")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

// apply runs one change alone — the demonstrations: unsafe, and row changes
// with a hold — as read → (hold) → check → write → ledger → idempotency
// record in one transaction, a statement per step so that the hold falls
// between the read and the write, retried when PostgreSQL aborts it for
// concurrency alone. The strategy decides only how the balance is read and
// written. Every other row change goes through the account's queue
// (combine.go).
func (s *Service) apply(ctx context.Context, kind string, c Change) (Result, error) {
	hash := requestHash(kind, c)
	var (
		res     Result
		refusal *Error // a business outcome: committed (with its idempotency record), then returned
	)
	const attempts = 5
	var err error
	for attempt := range attempts {
		res, refusal = Result{}, nil
		err = s.inTx(ctx, func(tx pgx.Tx) error {
			var balance int64
			readBalance := sqlLockAccount
			if c.Strategy == StrategyUnsafe {
				readBalance = sqlReadBalance
			}
			if err := tx.QueryRow(ctx, readBalance, c.AccountID).Scan(&balance); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return notFound(c.AccountID)
				}
				return err
			}
			if c.IdempotencyKey != "" {
				stored, found, err := replay(ctx, tx, c.AccountID, c.IdempotencyKey, hash)
				if err != nil || found {
					res, refusal = stored.Result, stored.refusal
					return err
				}
			}
			if err := sleep(ctx, c.Hold); err != nil {
				return err
			}
			// A stale writer learns nothing and records nothing.
			if c.FenceToken != 0 {
				if err := lockmgr.CheckFence(ctx, tx, LeaseResource(c.AccountID), c.FenceToken); err != nil {
					return fenceRefusal(err, c.FenceToken)
				}
			}
			if refusal = refuse(kind, balance, c.Amount); refusal != nil {
				return remember(ctx, tx, c, hash, nil, refusal)
			}
			delta := c.Amount
			if kind == KindWithdrawal {
				delta = -c.Amount
			}
			var after int64
			var err error
			if c.Strategy == StrategyUnsafe {
				// The bug on display: an absolute value computed from a stale read.
				err = tx.QueryRow(ctx, sqlSetBalance, c.AccountID, balance+delta, c.FenceToken).Scan(&after)
			} else {
				err = tx.QueryRow(ctx, sqlAddToBalance, c.AccountID, delta, c.FenceToken).Scan(&after)
			}
			if err != nil {
				return err
			}
			res.Entry, err = record(ctx, tx, kind, c, hash, after, c.FenceToken)
			return err
		})
		// A unique violation means a concurrent request with our idempotency
		// key committed first (possible without the row lock); the next
		// attempt replays its outcome.
		if err == nil || attempt == attempts-1 || !(pgerr.Conflict(err) || uniqueViolation(err)) {
			break
		}
	}
	if err != nil {
		return Result{}, wrap(kind, err)
	}
	if refusal != nil {
		return res, refusal
	}
	return res, nil
}

// refuse is the business rule of a change: no overdraft, no overflow.
func refuse(kind string, balance, amount int64) *Error {
	switch {
	case kind == KindWithdrawal && balance < amount:
		return errorf(CodeInsufficientFunds, "balance %d is less than the amount %d", balance, amount)
	case kind == KindDeposit && balance > math.MaxInt64-amount:
		return errorf(CodeBalanceOverflow, "a deposit of %d would overflow the balance", amount)
	}
	return nil
}

// record appends the ledger entry of a change whose balance update is done
// (after is the new balance) and stores its outcome under its idempotency
// key, in the change's transaction.
func record(ctx context.Context, tx pgx.Tx, kind string, c Change, hash string, after, token int64) (Entry, error) {
	var fence *int64
	if token != 0 {
		fence = &token
	}
	rows, _ := tx.Query(ctx, sqlInsertEntry, c.AccountID, kind, c.Amount, after, string(c.Strategy),
		fence, nullable(c.IdempotencyKey), nullable(hashIfKeyed(c, hash)))
	entry, err := pgx.CollectExactlyOneRow(rows, scanEntry)
	if err != nil {
		return Entry{}, err
	}
	return entry, remember(ctx, tx, c, hash, &entry.ID, nil)
}

type storedOutcome struct {
	Result
	refusal *Error
}

// replay looks up the first outcome stored for key. found is false when the
// key is new; a key stored for a different request is CodeIdempotencyKeyReused.
func replay(ctx context.Context, tx pgx.Tx, accountID int64, key, hash string) (storedOutcome, bool, error) {
	var (
		storedHash    string
		entryID       *int64
		code, message *string
	)
	err := tx.QueryRow(ctx, sqlGetIdempotency, accountID, key).Scan(&storedHash, &entryID, &code, &message)
	if errors.Is(err, pgx.ErrNoRows) {
		return storedOutcome{}, false, nil
	}
	if err != nil {
		return storedOutcome{}, false, err
	}
	if storedHash != hash {
		return storedOutcome{}, true, errorf(CodeIdempotencyKeyReused,
			"Idempotency-Key %q was already used for a different request on this account", key)
	}
	out := storedOutcome{Result: Result{Replayed: true}}
	if entryID == nil {
		out.refusal = &Error{Code: *code, Message: *message}
		return out, true, nil
	}
	rows, _ := tx.Query(ctx, sqlGetEntry, *entryID)
	out.Entry, err = pgx.CollectExactlyOneRow(rows, scanEntry)
	return out, true, err
}

// remember stores the outcome of a keyed change in the change's transaction,
// so the outcome and the change commit or vanish together.
func remember(ctx context.Context, tx pgx.Tx, c Change, hash string, entryID *int64, refusal *Error) error {
	if c.IdempotencyKey == "" {
		return nil
	}
	var code, message *string
	if refusal != nil {
		code, message = &refusal.Code, &refusal.Message
	}
	_, err := tx.Exec(ctx, sqlInsertIdempotency, c.AccountID, c.IdempotencyKey, hash, entryID, code, message)
	return err
}

// requestHash identifies what a request asked for, so a key reused for a
// different request is caught. Strategy, hold and fencing token are part of
// the request.
func requestHash(kind string, c Change) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "v1|%s|%d|%s|%d|%d", kind, c.Amount, c.Strategy, c.Hold.Milliseconds(), c.FenceToken))
	return hex.EncodeToString(sum[:])
}

func hashIfKeyed(c Change, hash string) string {
	if c.IdempotencyKey == "" {
		return ""
	}
	return hash
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
