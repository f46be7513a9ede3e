package account

import (
	"context"
	"math"
	"time"
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
	// BatchSize is how many changes shared this change's transaction (1
	// alone); 0 when it was refused before reaching one. For logs.
	BatchSize int
}

// Deposit adds c.Amount to the account under its row lock.
// Errors: CodeInvalidAmount, CodeInvalidRequest, CodeInvalidIdempotencyKey,
// CodeUnsafeDisabled, CodeAccountNotFound, CodeBalanceOverflow,
// CodeIdempotencyKeyReused, and the database failures (package comment).
func (s *Service) Deposit(ctx context.Context, c Change) (res Result, err error) {
	c.Strategy = StrategyRow
	start := time.Now()
	defer func() { s.metrics.answered(KindDeposit, c.Strategy, start, res, err) }()
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
// failures (package comment).
func (s *Service) Withdraw(ctx context.Context, c Change) (res Result, err error) {
	start := time.Now()
	defer func() { s.metrics.answered(KindWithdrawal, strategyLabel(c.Strategy), start, res, err) }()
	if err := s.validate(c); err != nil {
		return Result{}, err
	}
	return s.route(ctx, KindWithdrawal, c)
}

// route sends a valid change down its path (the table in the package
// comment). Row changes and plain lease withdrawals go through the
// account's queue (queue.go), where they share a transaction — and a row
// lock or a lease — with the changes queued beside them. The demonstrations
// go alone (demo.go): a hold inside a shared transaction would stall every
// change queued behind it, and unsafe and lease-nofence must race, not
// queue. Deposits always take the row strategy, so only a withdrawal can
// reach a lease path.
func (s *Service) route(ctx context.Context, kind string, c Change) (Result, error) {
	switch {
	case c.Strategy == StrategyLeaseNoFence, c.Strategy == StrategyLease && c.Hold > 0:
		return s.withdrawLeasedDemo(ctx, c)
	case c.Strategy == StrategyUnsafe, c.Hold > 0:
		return s.applyDemo(ctx, kind, c)
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

// strategyLabel is strategy as a metric label: an unknown one (refused with
// CodeUnknownStrategy) is "unknown", so a client cannot mint label values.
func strategyLabel(strategy Strategy) Strategy {
	switch strategy {
	case StrategyRow, StrategyUnsafe, StrategyLease, StrategyLeaseNoFence:
		return strategy
	}
	return "unknown"
}
