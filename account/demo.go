package account

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// applyDemo runs an unsafe change, or a row change with a hold, alone (see
// route) as read → (hold) → check → write → ledger → idempotency record in
// one transaction, a statement per step so that the hold falls between the
// read and the write, retried when PostgreSQL aborts it for concurrency
// alone. The strategy
// decides only how the balance is read and written: unsafe reads with no
// lock and writes an absolute balance (the row lock taken only by that
// write, until COMMIT); row reads FOR UPDATE and holds the row lock through
// the hold.
func (s *Service) applyDemo(ctx context.Context, kind string, c Change) (Result, error) {
	s.metrics.applied(pathDemo, 1)
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
			start := time.Now()
			err := tx.QueryRow(ctx, readBalance, c.AccountID).Scan(&balance)
			if c.Strategy != StrategyUnsafe {
				s.metrics.lockedRow(pathDemo, start)
			}
			if err != nil {
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
				if err := s.locks.CheckFence(ctx, tx, LeaseResource(c.AccountID), c.FenceToken); err != nil {
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
		s.metrics.retried(err)
	}
	if err != nil {
		return Result{}, wrap(kind, err)
	}
	if refusal != nil {
		return res, refusal
	}
	return res, nil
}

// withdrawLeasedDemo is a lease withdrawal with a hold, or any lease-nofence
// withdrawal: take the account's lease (lease.go), read the balance with no
// database lock, (hold), and write the new absolute balance. With the fence
// (lease), the write lands only if the lease's token is still the newest
// live grant and the balance is still the one read; on a moved balance alone
// it reads again while the lease lasts. Without it (lease-nofence), a holder
// paused past its lease overwrites the newer holder's balance.
func (s *Service) withdrawLeasedDemo(ctx context.Context, c Change) (Result, error) {
	s.metrics.applied(pathDemo, 1)
	lease, err := s.takeLease(ctx, c.AccountID, time.Now().Add(s.leaseWait))
	if err != nil {
		return Result{}, err
	}
	held := s.holdLease(ctx, lease)
	defer held.release()

	resource := lease.Resource
	fenced := c.Strategy == StrategyLease
	hash := requestHash(KindWithdrawal, c)
	hold := c.Hold
	for attempt := 0; ; attempt++ {
		var balance int64
		if err := s.pool.QueryRow(ctx, sqlReadBalance, c.AccountID).Scan(&balance); err != nil {
			return Result{}, wrap(KindWithdrawal, err)
		}
		if err := sleep(ctx, hold); err != nil {
			return Result{}, err
		}
		hold = 0 // the demo pause happens once, between the first read and its write

		var (
			res     Result
			refusal *Error
		)
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if c.IdempotencyKey != "" {
				stored, found, err := replay(ctx, tx, c.AccountID, c.IdempotencyKey, hash)
				if err != nil || found {
					res, refusal = stored.Result, stored.refusal
					return err
				}
			}
			if fenced {
				if err := s.locks.CheckFence(ctx, tx, resource, lease.Token); err != nil {
					return fenceRefusal(err, lease.Token)
				}
			}
			if refusal = refuse(KindWithdrawal, balance, c.Amount); refusal != nil {
				return remember(ctx, tx, c, hash, nil, refusal)
			}
			var after int64
			var err error
			if fenced {
				err = tx.QueryRow(ctx, sqlSetBalanceIfUnchanged, c.AccountID, balance-c.Amount, balance, lease.Token).Scan(&after)
				if errors.Is(err, pgx.ErrNoRows) {
					return errBalanceMoved
				}
			} else {
				// The stale-update bug on display: no fence, no check.
				err = tx.QueryRow(ctx, sqlSetBalance, c.AccountID, balance-c.Amount, lease.Token).Scan(&after)
			}
			if err != nil {
				return err
			}
			res.Entry, err = record(ctx, tx, KindWithdrawal, c, hash, after, lease.Token)
			return err
		})
		switch {
		case err == nil && refusal != nil:
			return res, refusal
		case err == nil:
			return res, nil
		case errors.Is(err, errBalanceMoved), pgerr.Conflict(err), uniqueViolation(err):
			if time.Now().Before(held.deadline()) && attempt < 100 {
				s.metrics.retried(err)
				continue
			}
			return Result{}, errorf(CodeLockTimeout, "account %d kept changing until the lease ran out; retry shortly", c.AccountID)
		default:
			return Result{}, wrap(KindWithdrawal, err)
		}
	}
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
