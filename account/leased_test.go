package account

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestOwnLeaseRefusedIsRetried: a lease this node kept from its last batch
// (sticky.go) can be refused by the fence in the next batch's transaction:
// it was released and another node took the account over meanwhile. The
// client sent no fencing token: that refusal is the node's own affair, never
// the client's. The node runs the batch again under a fresh lease, granted
// in its transaction, and applies the withdrawal with a higher token; never
// lease_expired or stale_fencing_token.
func TestOwnLeaseRefusedIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	s := NewService(pool, Options{Locks: locks, Node: "node-a", LeaseWait: time.Minute})
	a, err := s.Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	resource := LeaseResource(a.ID)
	kept, err := locks.TryAcquire(ctx, resource, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The kept lease ends behind the node's back (an operator, a restart of
	// its lease row's history), and node-b takes the account and gives it
	// back: the kept lease is locally fresh and stale in the database.
	if err := locks.Release(ctx, resource, kept.ID); err != nil {
		t.Fatal(err)
	}
	other, err := locks.TryAcquire(ctx, resource, "node-b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, resource, other.ID); err != nil {
		t.Fatal(err)
	}
	s.keep(a.ID, kept)
	res, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 100, Strategy: StrategyLease, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatalf("Withdraw = %v; want it applied under a fresh lease", err)
	}
	if tok := res.Entry.FenceToken; tok == nil || *tok <= other.Token {
		t.Fatalf("entry written with token %v; want a fresh lease's, above node-b's %d", tok, other.Token)
	}
	balance, entries, keys := accountState(t, pool, a.ID)
	if balance != 900 || entries != 1 || keys != 1 {
		t.Fatalf("balance %d, %d entries, %d keys; want 900, 1, 1", balance, entries, keys)
	}
	// The kept lease's refusal ran the batch once more: one retry.
	if n, _ := metricValue(t, s.Collector(), "lockbank_account_retries_total", "reason", "lease_refused"); n != 1 {
		t.Fatalf("lease_refused retries = %v; want 1", n)
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
	if err := s.runBatch(ctx, batch, outs, &leaseTx{lease: stale, ttl: time.Minute}); !errors.Is(err, errLeaseRefused) || !errors.Is(err, lockmgr.ErrStaleToken) {
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
