package account

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// retention is the idempotency retention of these tests; records are made
// older than it by moving their created_at back, never by waiting.
const retention = time.Hour

// ageRecords moves the idempotency records of keys on account id back by
// age, as if they had been written that long ago.
func ageRecords(t *testing.T, pool *pgxpool.Pool, id int64, age time.Duration, keys ...string) {
	t.Helper()
	tag, err := pool.Exec(context.Background(), `UPDATE idempotency_keys SET created_at = created_at - $3 * interval '1 millisecond'
		WHERE account_id = $1 AND key = ANY($2)`, id, keys, age.Milliseconds())
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != int64(len(keys)) {
		t.Fatalf("aged %d records, want %d", tag.RowsAffected(), len(keys))
	}
}

// checkLedger asserts invariant 1 for account id (balance = opening +
// deposits - withdrawals, never negative) and returns its balance and how
// many entries carry key.
func checkLedger(t *testing.T, pool *pgxpool.Pool, id int64, key string) (balance, keyed int64) {
	t.Helper()
	var implied int64
	if err := pool.QueryRow(context.Background(), `
		SELECT a.balance, a.opening_balance + coalesce(sum(CASE e.kind WHEN 'deposit' THEN e.amount ELSE -e.amount END), 0),
		       count(*) FILTER (WHERE e.idempotency_key = $2)
		FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
		WHERE a.id = $1 GROUP BY a.id`, id, key).Scan(&balance, &implied, &keyed); err != nil {
		t.Fatal(err)
	}
	if balance != implied || balance < 0 {
		t.Fatalf("account %d: balance %d, the ledger implies %d", id, balance, implied)
	}
	return balance, keyed
}

// demoService is a Service in demo mode (holds, unsafe, lease-nofence) with
// a lock manager, on a fresh database.
func demoService(t *testing.T) (*Service, *pgxpool.Pool, *lockmgr.Manager) {
	t.Helper()
	pool := pgtest.New(t)
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	return NewService(pool, Options{UnsafeDemo: true, Locks: locks, LeaseWait: time.Minute}), pool, locks
}

// TestKeyIsNewAgainAfterRetention: on every path a change can take, a retry
// within the retention replays the first outcome; once the record is older
// than the retention and pruned, the same request under the same key is a
// new change (a second ledger entry under the key), whose retries replay it
// in turn. A record within the retention stays.
func TestKeyIsNewAgainAfterRetention(t *testing.T) {
	t.Parallel()
	s, pool, _ := demoService(t)
	ctx := context.Background()
	withdraw := func(strategy Strategy, hold time.Duration) func(Change) (Result, error) {
		return func(c Change) (Result, error) {
			c.Strategy, c.Hold = strategy, hold
			return s.Withdraw(ctx, c)
		}
	}
	paths := []struct {
		name  string
		apply func(Change) (Result, error)
	}{
		{"LoneStatement", func(c Change) (Result, error) { return s.Deposit(ctx, c) }},
		{"Batch", func(c Change) (Result, error) {
			// Two changes of one account: one transaction, sqlApplyBatch.
			c.Strategy = StrategyRow
			other := Change{AccountID: c.AccountID, Amount: 1, Strategy: StrategyRow}
			outs := s.applyBatch([]*pending{
				{ctx: ctx, kind: KindWithdrawal, change: c, hash: requestHash(KindWithdrawal, c)},
				{ctx: ctx, kind: KindDeposit, change: other, hash: requestHash(KindDeposit, other)},
			})
			if outs[0].err == nil && outs[1].err != nil {
				return Result{}, fmt.Errorf("the other change of the batch: %w", outs[1].err)
			}
			return outs[0].res, outs[0].err
		}},
		{"LeaseBatch", withdraw(StrategyLease, 0)},
		{"DemoApply", withdraw(StrategyUnsafe, time.Millisecond)},
		{"LeaseAlone", withdraw(StrategyLease, time.Millisecond)},
		{"LeaseNoFence", withdraw(StrategyLeaseNoFence, time.Millisecond)},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			a, err := s.Create(ctx, "alice", 1000)
			if err != nil {
				t.Fatal(err)
			}
			c := Change{AccountID: a.ID, Amount: 10, IdempotencyKey: "k"}
			first, err := p.apply(c)
			if err != nil || first.Replayed {
				t.Fatalf("first: %+v %v", first, err)
			}
			if r, err := p.apply(c); err != nil || !r.Replayed || r.Entry.ID != first.Entry.ID {
				t.Fatalf("retry within the retention: %+v %v; want entry %d replayed", r, err, first.Entry.ID)
			}
			different := c
			different.Amount = 11
			if _, err := p.apply(different); ErrorCode(err) != CodeIdempotencyKeyReused {
				t.Fatalf("another request under the key within the retention: %v; want %s", err, CodeIdempotencyKeyReused)
			}
			fresh := Change{AccountID: a.ID, Amount: 10, IdempotencyKey: "fresh"}
			if _, err := p.apply(fresh); err != nil {
				t.Fatal(err)
			}
			ageRecords(t, pool, a.ID, retention+time.Minute, "k")
			if n, err := s.PruneIdempotencyKeys(ctx, retention); err != nil || n != 1 {
				t.Fatalf("PruneIdempotencyKeys = %d, %v; want the one old record", n, err)
			}

			again, err := p.apply(c)
			if err != nil || again.Replayed || again.Entry.ID == first.Entry.ID {
				t.Fatalf("the key after its retention: %+v %v; want a new change", again, err)
			}
			if r, err := p.apply(c); err != nil || !r.Replayed || r.Entry.ID != again.Entry.ID {
				t.Fatalf("retry of the new change: %+v %v; want entry %d replayed", r, err, again.Entry.ID)
			}
			if r, err := p.apply(fresh); err != nil || !r.Replayed {
				t.Fatalf("retry of a key within the retention: %+v %v; want it replayed", r, err)
			}
			if _, keyed := checkLedger(t, pool, a.ID, "k"); keyed != 2 {
				t.Fatalf("%d ledger entries under the key, want 2 (before and after its retention)", keyed)
			}
		})
	}
}

// TestPruningNeverBreaksExactlyOnce: many clients send one request under one
// key at once, while pruners delete older records of the same account the
// whole time: exactly one applies, every other replays it, and so does a
// retry after the pruners are done (the record is within its retention).
func TestPruningNeverBreaksExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _ := demoService(t)
	for _, strategy := range []Strategy{StrategyRow, StrategyUnsafe, StrategyLease} {
		t.Run(string(strategy), func(t *testing.T) {
			a, err := s.Create(ctx, "alice", 1000)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (account_id, key, request_hash, error_code, error_message, created_at)
				SELECT $1, 'old' || i, 'h', 'insufficient_funds', 'm', now() - interval '2 hours'
				FROM generate_series(1, 5000) AS i`, a.ID); err != nil {
				t.Fatal(err)
			}
			c := Change{AccountID: a.ID, Amount: 100, Strategy: strategy, IdempotencyKey: "same"}
			if strategy == StrategyUnsafe {
				c.Hold = 20 * time.Millisecond // without a row lock: the record's primary key alone decides
			}
			const clients, pruners = 20, 2
			start := make(chan struct{})
			var (
				wg, clientsWG   sync.WaitGroup
				fresh, replayed atomic.Int64
				pruned          atomic.Int64
				clientsDone     = make(chan struct{})
			)
			for range clients {
				clientsWG.Go(func() {
					<-start
					r, err := s.Withdraw(ctx, c)
					switch {
					case err != nil:
						t.Errorf("Withdraw: %v", err)
					case r.Replayed:
						replayed.Add(1)
					default:
						fresh.Add(1)
					}
				})
			}
			for range pruners {
				wg.Go(func() {
					<-start
					for {
						n, err := s.PruneIdempotencyKeys(ctx, retention)
						if err != nil {
							t.Errorf("PruneIdempotencyKeys: %v", err)
							return
						}
						pruned.Add(n)
						select {
						case <-clientsDone:
							return
						default:
						}
					}
				})
			}
			close(start)
			clientsWG.Wait()
			close(clientsDone)
			wg.Wait()
			if fresh.Load() != 1 || replayed.Load() != clients-1 {
				t.Fatalf("%d applied, %d replayed; want 1 and %d", fresh.Load(), replayed.Load(), clients-1)
			}
			if pruned.Load() != 5000 {
				t.Fatalf("the pruners deleted %d old records, want 5000", pruned.Load())
			}
			if n, err := s.PruneIdempotencyKeys(ctx, retention); err != nil || n != 0 {
				t.Fatalf("a last prune deleted %d (%v); want nothing within the retention", n, err)
			}
			if r, err := s.Withdraw(ctx, c); err != nil || !r.Replayed {
				t.Fatalf("a retry after the pruning: %+v %v; want it replayed", r, err)
			}
			if balance, keyed := checkLedger(t, pool, a.ID, "same"); balance != 900 || keyed != 1 {
				t.Fatalf("balance %d with %d entries under the key; want 900 with 1", balance, keyed)
			}
		})
	}
}
