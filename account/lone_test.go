package account

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
)

// TestLoneChangeIsOneStatement: a change on an account nobody else is
// changing is one statement, keyed or not; what that statement cannot
// decide — a refusal, a stored outcome, a missing account — falls back to
// the batch path and is answered as before.
func TestLoneChangeIsOneStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var counter statementCounter
	pool := pgtest.Configured(t, pgtest.URL(t), func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = &counter })
	s := NewService(pool, Options{})
	a, err := s.Create(ctx, "alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	// run makes change c and reports its round trips, and whether the batch
	// path (pipelines) decided it.
	run := func(c Change, deposit bool) (r Result, err error, trips int64, batchPath bool) {
		trips, batches := counter.n.Load(), counter.batches.Load()
		c.AccountID, c.Strategy = a.ID, StrategyRow
		if deposit {
			r, err = s.Deposit(ctx, c)
		} else {
			r, err = s.Withdraw(ctx, c)
		}
		return r, err, counter.n.Load() - trips, counter.batches.Load() > batches
	}
	if r, err, n, batched := run(Change{Amount: 30}, false); err != nil || n != 1 || batched || r.Entry.Balance != 70 {
		t.Fatalf("lone withdrawal: %+v %v in %d round trips (batch path %v); want balance 70 in 1 statement", r.Entry, err, n, batched)
	}
	if r, err, n, batched := run(Change{Amount: 5, IdempotencyKey: "k"}, true); err != nil || n != 1 || batched || r.Entry.Balance != 75 {
		t.Fatalf("lone keyed deposit: %+v %v in %d round trips (batch path %v); want balance 75 in 1 statement", r.Entry, err, n, batched)
	}
	if r, err, _, batched := run(Change{Amount: 5, IdempotencyKey: "k"}, true); err != nil || !r.Replayed || r.Entry.Balance != 75 || !batched {
		t.Fatalf("retried deposit: %+v %v (batch path %v); want the stored entry replayed by the batch path", r, err, batched)
	}
	var e *Error
	if _, err, _, batched := run(Change{Amount: 76}, false); !errors.As(err, &e) || e.Code != CodeInsufficientFunds ||
		e.Message != "balance 75 is less than the amount 76" || !batched {
		t.Fatalf("overdraft: %v (batch path %v); want %s from the batch path", err, batched, CodeInsufficientFunds)
	}
	if _, err := s.Withdraw(ctx, Change{AccountID: a.ID + 1, Amount: 1, Strategy: StrategyRow}); !errors.As(err, &e) || e.Code != CodeAccountNotFound {
		t.Fatalf("missing account: %v; want %s", err, CodeAccountNotFound)
	}
	if balance, entries, keys := accountState(t, pool, a.ID); balance != 75 || entries != 2 || keys != 1 {
		t.Fatalf("balance %d, %d entries, %d keys; want 75, 2, 1", balance, entries, keys)
	}
}
