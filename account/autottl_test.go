package account_test

import (
	"context"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestLearnedLeaseTTL: with a TTL learned from the lease strategy's own
// critical sections, quick work makes the next lease short (300 ms here, not
// the 5 s before anything was learned); a slow section under that short
// lease is kept alive while it works and is not fenced off; and it lengthens
// the following leases to fit (700 ms × 2).
func TestLearnedLeaseTTL(t *testing.T) {
	t.Parallel()
	auto := lockmgr.NewAutoTTL(lockmgr.AutoTTLOptions{Min: 300 * time.Millisecond, Max: 10 * time.Second,
		Initial: 5 * time.Second, Factor: 2, Window: 16, MinSamples: 8})
	nodes, b := cluster(t, 1, account.Options{UnsafeDemo: true, AutoTTL: auto, LeaseWait: 30 * time.Second})
	svc := nodes[0].svc
	a := mustCreate(t, svc, 10_000)
	ctx := context.Background()
	if got := svc.LeaseTTL(); got != 5*time.Second {
		t.Fatalf("before any work: TTL %s, want the initial 5s", got)
	}
	for range 8 {
		if _, err := svc.Withdraw(ctx, account.Change{AccountID: a.ID, Amount: 1, Strategy: account.StrategyLease}); err != nil {
			t.Fatal(err)
		}
	}
	if got := svc.LeaseTTL(); got != 300*time.Millisecond {
		t.Fatalf("after 8 quick withdrawals: TTL %s, want the minimum 300ms", got)
	}

	// A slow critical section (a demo hold of 700ms, over two TTLs) under the
	// short lease.
	resource := account.LeaseResource(a.ID)
	var granted lockmgr.Status
	done := make(chan error, 1)
	go func() {
		_, err := svc.Withdraw(ctx, account.Change{AccountID: a.ID, Amount: 1, Strategy: account.StrategyLease, Hold: 700 * time.Millisecond})
		done <- err
	}()
	wait.Until(t, 10*time.Second, "the slow withdrawal holding the lease", func() bool {
		s, err := b.locks.Get(ctx, resource)
		granted = s
		return err == nil && s.Held && s.Holder == nodes[0].name
	})
	if granted.Remaining > 300*time.Millisecond {
		t.Fatalf("the slow withdrawal's lease has %s left; want a learned lease of at most 300ms", granted.Remaining)
	}
	if err := <-done; err != nil {
		t.Fatalf("a critical section longer than its learned lease was refused: %v; want it kept alive while it works", err)
	}
	if got := svc.LeaseTTL(); got < 1400*time.Millisecond || got > 3*time.Second {
		t.Fatalf("after a 700ms section: TTL %s, want its length × 2 (at least 1.4s)", got)
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 10_000-9 || len(entries) != 9 {
		t.Fatalf("balance %d with %d entries, want %d with 9", balance, len(entries), 10_000-9)
	}
}
