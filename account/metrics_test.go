package account

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metricValue is a counter's value, or a histogram's sample count and sum,
// of the series of name whose label (if any) has value.
func metricValue(t *testing.T, c prometheus.Collector, name, label, value string) (n, sum float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				ok = ok || (l.GetName() == label && l.GetValue() == value)
			}
			switch {
			case !ok:
			case m.Histogram != nil:
				n += float64(m.GetHistogram().GetSampleCount())
				sum += m.GetHistogram().GetSampleSum()
			default:
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n, sum
}

// TestRowLockWaitObserved: a withdrawal whose account row another
// transaction holds waits for it, and the time its lone statement took —
// at least as long as the row stayed held after it began to wait — is one
// observation on the lone path.
func TestRowLockWaitObserved(t *testing.T) {
	t.Parallel()
	s, pool, _, a := newService(t, 1000)
	blocker, done := changeBehindHeldRow(t, pool, a.ID, func() error {
		_, err := s.Withdraw(context.Background(), Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow})
		return err
	})
	waiting := time.Now()
	// However fast the machine, the row stays held this long after the
	// withdrawal was seen waiting for it.
	held := 50 * time.Millisecond
	time.Sleep(held)
	if err := blocker.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	heldFor := time.Since(waiting)
	n, sum := metricValue(t, s.Collector(), "lockbank_account_row_lock_seconds", "path", "lone")
	if n != 1 {
		t.Fatalf("row lock observations on the lone path = %v, want 1", n)
	}
	if sum < held.Seconds() || sum > heldFor.Seconds()+5 {
		t.Fatalf("row lock wait observed %.3fs; want at least the %.3fs the row was held after the wait began", sum, held.Seconds())
	}
	if n, _ := metricValue(t, s.Collector(), "lockbank_account_row_lock_seconds", "path", "batch"); n != 0 {
		t.Fatalf("row lock observations on the batch path = %v, want 0", n)
	}
}

// TestRetriesCountedByReason: a withdrawal that PostgreSQL aborts in a
// deadlock runs again and is counted as a deadlock retry, exactly once; a
// lease batch whose balance a row writer moved between its read and its
// write is counted as balance_moved, exactly once.
func TestRetriesCountedByReason(t *testing.T) {
	t.Parallel()
	retries := func(s *Service, reason string) float64 {
		n, _ := metricValue(t, s.Collector(), "lockbank_account_retries_total", "reason", reason)
		return n
	}
	t.Run("Deadlock", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		s, pool, _, a := newService(t, 1000)
		// Another transaction stores the withdrawal's idempotency key
		// first, uncommitted: the withdrawal's statement, holding the
		// account's row lock by then, waits to see whether it commits.
		other, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = other.Rollback(context.Background()) })
		// Only the withdrawal's session may find the deadlock (each waiting
		// session checks after its deadlock_timeout, and a starved one may
		// check late): this side's check comes long after.
		if _, err := other.Exec(ctx, `SET LOCAL deadlock_timeout = '1min'`); err != nil {
			t.Skipf("deciding which side finds the deadlock needs a superuser: %v", err)
		}
		if _, err := other.Exec(ctx, `INSERT INTO idempotency_keys (account_id, key, request_hash, error_code, error_message) VALUES ($1, 'k-deadlock', 'x', 'x', 'x')`, a.ID); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, IdempotencyKey: "k-deadlock"})
			done <- err
		}()
		waitForLockWaiter(t, pool)
		// Now the other transaction wants the row: a deadlock, which the
		// withdrawal's session finds (1 s, the default deadlock_timeout),
		// aborting the withdrawal's statement; this one then gets the row.
		if _, err := other.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
			t.Fatalf("the other side of the deadlock was the one aborted: %v", err)
		}
		if err := other.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("the withdrawal after its retry: %v", err)
		}
		if got := retries(s, "deadlock"); got != 1 {
			t.Errorf("deadlock retries = %v, want 1", got)
		}
		for _, r := range []string{"serialization_failure", "unique_violation", "balance_moved", "lease_refused"} {
			if got := retries(s, r); got != 0 {
				t.Errorf("%s retries = %v, want 0", r, got)
			}
		}
	})
	t.Run("ReplayIsNoRetry", func(t *testing.T) {
		t.Parallel()
		s, _, _, a := newService(t, 1000)
		c := Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, IdempotencyKey: "k-replay"}
		for range 2 {
			if _, err := s.Withdraw(context.Background(), c); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := metricValue(t, s.Collector(), "lockbank_account_idempotent_replays_total", "", ""); n != 1 {
			t.Fatalf("replays = %v, want 1", n)
		}
		if n, _ := metricValue(t, s.Collector(), "lockbank_account_retries_total", "", ""); n != 0 {
			t.Errorf("retries = %v, want 0: a replay is no retry", n)
		}
	})
	t.Run("BalanceMoved", func(t *testing.T) {
		t.Parallel()
		tracer := &pauseBefore{match: "INSERT INTO ledger_entries"} // the write's pipeline, after the batch's read
		a, b, _, id := guardedPair(t, Options{LeaseWait: time.Minute}, tracer)
		keepLease(t, a, id)
		tracer.during = func() {
			if _, err := b.Deposit(context.Background(), Change{AccountID: id, Amount: 50}); err != nil {
				t.Errorf("deposit between the read and the write: %v", err)
			}
		}
		if _, err := a.Withdraw(context.Background(), Change{AccountID: id, Amount: 100, Strategy: StrategyLease}); err != nil {
			t.Fatal(err)
		}
		if got := retries(a, "balance_moved"); got != 1 {
			t.Errorf("balance_moved retries = %v, want 1", got)
		}
		if got := retries(a, "deadlock") + retries(a, "lease_refused"); got != 0 {
			t.Errorf("other retries = %v, want 0", got)
		}
	})
}
