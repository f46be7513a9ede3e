package account

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestOwnLeaseRefusedIsRetried: the lease a node takes for its lease
// withdrawals can be refused by the fence in the batch's own transaction —
// it ran out while the batch was held up (here behind a lock on
// idempotency_keys, as a slow statement or a pause would hold it), or
// another node took over meanwhile. The client sent no fencing token: that
// refusal is the node's own affair, never the client's. The node takes a
// fresh lease and applies the withdrawal, or, when --lease-wait is spent,
// answers lock_timeout; never lease_expired or stale_fencing_token.
func TestOwnLeaseRefusedIsRetried(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		leaseWait time.Duration
		holdUp    time.Duration // at least this long, and until the lease ran out
		takeover  bool          // another node takes the lease over while the batch is held up
		wantCode  string        // "" when the withdrawal is applied
	}{
		{"ExpiredLeaseRetried", time.Minute, 0, false, ""},
		{"SupersededLeaseRetried", time.Minute, 0, true, ""},
		{"LeaseWaitSpent", 300 * time.Millisecond, 600 * time.Millisecond, false, CodeLockTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := pgtest.New(t)
			locks := lockmgr.New(pool, lockmgr.Options{})
			t.Cleanup(locks.Close)
			s := NewService(pool, Options{Locks: locks, Node: "node-a", LeaseTTL: lockmgr.MinTTL, LeaseWait: tt.leaseWait})
			a, err := s.Create(ctx, "alice", 1000)
			if err != nil {
				t.Fatal(err)
			}
			resource := LeaseResource(a.ID)

			// Reading the batch's stored outcomes (it has an Idempotency-Key)
			// comes after the lease's grant and before its fence check.
			blocker, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = blocker.Rollback(context.Background()) })
			if _, err := blocker.Exec(ctx, `LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			type result struct {
				res Result
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 100, Strategy: StrategyLease, IdempotencyKey: "k1"})
				done <- result{res, err}
			}()
			waitForLockWaiter(t, pool)
			var first int64 // the token of the lease the held-up batch took
			wait.Until(t, 10*time.Second, "the held-up batch's lease to run out", func() bool {
				var expired bool
				err := pool.QueryRow(ctx, `SELECT token, expires_at <= clock_timestamp() FROM leases WHERE resource = $1`, resource).Scan(&first, &expired)
				if err != nil {
					t.Fatal(err)
				}
				return expired && time.Since(start) >= tt.holdUp
			})
			if tt.takeover {
				l, err := locks.TryAcquire(ctx, resource, "node-b", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if err := locks.Release(ctx, resource, l.ID); err != nil {
					t.Fatal(err)
				}
			}
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			r := <-done

			balance, entries, keys := accountState(t, pool, a.ID)
			if tt.wantCode != "" {
				if ErrorCode(r.err) != tt.wantCode {
					t.Fatalf("Withdraw = %v; want %s", r.err, tt.wantCode)
				}
				if balance != 1000 || entries != 0 || keys != 0 {
					t.Fatalf("after %s: balance %d, %d entries, %d keys; want 1000, 0, 0", tt.wantCode, balance, entries, keys)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Withdraw = %v; want it applied under a fresh lease", r.err)
			}
			if tok := r.res.Entry.FenceToken; tok == nil || *tok <= first {
				t.Fatalf("entry written with token %v; want a fresh lease's, above the refused %d", tok, first)
			}
			if balance != 900 || entries != 1 || keys != 1 {
				t.Fatalf("balance %d, %d entries, %d keys; want 900, 1, 1", balance, entries, keys)
			}
			// Each refusal took a fresh lease: the batch's grants, less the
			// first, are its retries (node-b's takeover is no grant of ours).
			var grants int64
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM lease_grants WHERE resource = $1 AND holder = 'node-a'`, resource).Scan(&grants); err != nil {
				t.Fatal(err)
			}
			if n, _ := metricValue(t, s.Collector(), "lockbank_account_retries_total", "reason", "lease_refused"); n < 1 || n != float64(grants-1) {
				t.Fatalf("lease_refused retries = %v; want the %d grants after the first, at least 1", n, grants-1)
			}
		})
	}
}

// TestLeaseBatchFencedAsOne: a lease batch whose lease was superseded is
// refused by the fence as a whole — nothing is written or recorded, and no
// withdrawal hears of it: the refusal (errLeaseRefused) is for the node,
// which runs the batch again under a fresh lease (TestOwnLeaseRefusedIsRetried).
func TestLeaseBatchFencedAsOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, locks, a := newService(t, 100)
	stale, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "paused", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, LeaseResource(a.ID), stale.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "newer", time.Minute); err != nil {
		t.Fatal(err)
	}
	var batch []*pending
	for i := range 3 {
		c := Change{AccountID: a.ID, Amount: 10, Strategy: StrategyLease, IdempotencyKey: fmt.Sprint("k", i)}
		batch = append(batch, &pending{ctx: ctx, kind: KindWithdrawal, change: c, hash: requestHash(KindWithdrawal, c)})
	}
	outs := make([]outcome, len(batch))
	if err := s.runBatch(ctx, batch, outs, stale); !errors.Is(err, errLeaseRefused) || !errors.Is(err, lockmgr.ErrStaleToken) {
		t.Fatalf("a batch under a superseded lease: %v; want errLeaseRefused for a stale token", err)
	}
	for i, out := range outs {
		if out != (outcome{}) {
			t.Errorf("withdrawal %d under a superseded lease: %+v; want no outcome (the batch runs again under a fresh lease)", i, out)
		}
	}
	balance, entries, keys := accountState(t, pool, a.ID)
	if balance != 100 || entries != 0 || keys != 0 {
		t.Fatalf("after a fenced batch: balance %d, %d entries, %d keys; want 100, 0, 0", balance, entries, keys)
	}
}
