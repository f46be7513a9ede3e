package account

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestPruneJudgesAgeByTheDatabase: a record one minute short of the
// retention stays (and replays); one a minute past it goes, success and
// refusal alike. Ages are set by the database's clock.
func TestPruneJudgesAgeByTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _, a := newService(t, 100)
	for _, c := range []Change{
		{AccountID: a.ID, Amount: 10, IdempotencyKey: "young"},
		{AccountID: a.ID, Amount: 10, IdempotencyKey: "old"},
		{AccountID: a.ID, Amount: 1000, IdempotencyKey: "old-refusal"},
	} {
		c.Strategy = StrategyRow
		if _, err := s.Withdraw(ctx, c); err != nil && ErrorCode(err) != CodeInsufficientFunds {
			t.Fatal(err)
		}
	}
	ageRecords(t, pool, a.ID, retention-time.Minute, "young")
	ageRecords(t, pool, a.ID, retention+time.Minute, "old", "old-refusal")
	if n, err := s.PruneIdempotencyKeys(ctx, retention); err != nil || n != 2 {
		t.Fatalf("PruneIdempotencyKeys = %d, %v; want the 2 records past the retention", n, err)
	}
	if r, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, IdempotencyKey: "young"}); err != nil || !r.Replayed {
		t.Fatalf("retry of the record within the retention: %+v %v; want it replayed", r, err)
	}
	if _, err := s.PruneIdempotencyKeys(ctx, -time.Second); ErrorCode(err) != CodeInvalidRequest {
		t.Fatalf("a negative retention: %v; want %s", err, CodeInvalidRequest)
	}
	if balance, _, keys := accountState(t, pool, a.ID); balance != 80 || keys != 1 {
		t.Fatalf("balance %d with %d records; want 80 with 1", balance, keys)
	}
}

// TestPruneInSmallBatchesSkippingLocked: a backlog larger than one batch is
// deleted by several short statements, and a record someone else has locked
// is passed over at once instead of waited for.
func TestPruneInSmallBatchesSkippingLocked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var counter statementCounter
	pool := pgtest.Configured(t, pgtest.URL(t), func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = &counter })
	s := NewService(pool, Options{})
	a, err := s.Create(ctx, "alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	const backlog = 2*pruneBatch + 17
	if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (account_id, key, request_hash, error_code, error_message, created_at)
		SELECT $1, 'k' || i, 'h', 'insufficient_funds', 'm', now() - interval '2 hours'
		FROM generate_series(1, $2) AS i`, a.ID, backlog); err != nil {
		t.Fatal(err)
	}
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Rollback(ctx) })
	if _, err := holder.Exec(ctx, `SELECT 1 FROM idempotency_keys WHERE account_id = $1 AND key = 'k1' FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}

	bounded, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	before := counter.n.Load()
	n, err := s.PruneIdempotencyKeys(bounded, retention)
	statements := counter.n.Load() - before
	if err != nil || n != backlog-1 {
		t.Fatalf("PruneIdempotencyKeys = %d, %v; want %d (all but the locked record, without waiting for it)", n, err, backlog-1)
	}
	if statements != 3 {
		t.Fatalf("%d statements, want 3 of at most %d rows", statements, pruneBatch)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneIdempotencyKeys(ctx, retention); err != nil || n != 1 {
		t.Fatalf("PruneIdempotencyKeys after the lock ended = %d, %v; want the 1 left", n, err)
	}
}

// TestPrunedStaleTokenIsRefused: a fencing token whose grant was pruned, or
// whose account's lease row was, is refused — as never issued — by fenced
// withdrawals and deposits, and nothing is written or recorded; the newest
// token still writes.
func TestPrunedStaleTokenIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, locks := demoService(t)
	a, err := s.Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	resource := LeaseResource(a.ID)
	stale, err := locks.TryAcquire(ctx, resource, "paused", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, resource, stale.ID); err != nil {
		t.Fatal(err)
	}
	newest, err := locks.TryAcquire(ctx, resource, "newer", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE lease_grants SET granted_at = granted_at - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	// The account's lease row is kept; the stale grant is not (the newest is).
	if p, err := locks.Prune(ctx, retention, LeaseResourcePrefix); err != nil || p != (lockmgr.Pruned{Grants: 1}) {
		t.Fatalf("Prune = %+v, %v; want the stale grant alone", p, err)
	}
	fenced := []struct {
		name  string
		apply func(token int64, key string) (Result, error)
	}{
		{"Withdrawal", func(token int64, key string) (Result, error) {
			return s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, FenceToken: token, IdempotencyKey: key})
		}},
		{"Deposit", func(token int64, key string) (Result, error) {
			return s.Deposit(ctx, Change{AccountID: a.ID, Amount: 10, FenceToken: token, IdempotencyKey: key})
		}},
		{"DemoWithdrawal", func(token int64, key string) (Result, error) {
			return s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, Hold: time.Millisecond, FenceToken: token, IdempotencyKey: key})
		}},
	}
	refused := func(stage string, tokens ...int64) {
		t.Helper()
		for _, f := range fenced {
			for _, token := range tokens {
				if _, err := f.apply(token, fmt.Sprint(stage, f.name, token)); ErrorCode(err) != CodeFencingTokenMismatch {
					t.Errorf("%s: %s with token %d: %v; want %s", stage, f.name, token, err, CodeFencingTokenMismatch)
				}
			}
		}
	}
	refused("grant pruned", stale.Token)
	if r, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, FenceToken: newest.Token}); err != nil || r.Entry.Balance != 990 {
		t.Fatalf("withdrawal with the newest token: %+v %v", r, err)
	}

	// Without the keep, the account's lease row goes too, once it ran out
	// longer ago than the retention.
	if err := locks.Release(ctx, resource, newest.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE leases SET expires_at = expires_at - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	if p, err := locks.Prune(ctx, retention); err != nil || p != (lockmgr.Pruned{Leases: 1, Grants: 1}) {
		t.Fatalf("Prune = %+v, %v; want the lease row and its grant", p, err)
	}
	refused("lease row pruned", stale.Token, newest.Token)
	if balance, entries, keys := accountState(t, pool, a.ID); balance != 990 || entries != 1 || keys != 0 {
		t.Fatalf("balance %d, %d entries, %d records; want 990, 1, 0 (refused tokens write and record nothing)", balance, entries, keys)
	}
}
