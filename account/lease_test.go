package account_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/wait"
)

// TestLeaseStrategyUnderContention: 200 lease withdrawals of 100 from an
// account of 10000 over three nodes, released while another holder has the
// account's lease, so that every node's lock manager queues for it in the
// database: exactly 100 succeed, the money adds up, every entry carries its
// lease's token, tokens never go down in ledger order, and more than one
// node held the lease.
func TestLeaseStrategyUnderContention(t *testing.T) {
	t.Parallel()
	nodes, b := cluster(t, 3, account.Options{LeaseWait: 60 * time.Second})
	a := mustCreate(t, nodes[0].svc, 10_000)
	release := holdLease(t, b, a.ID)
	codes := raceWithdrawals(t, nodes, 200, account.Change{AccountID: a.ID, Amount: 100, Strategy: account.StrategyLease}, func() {
		waitForLeaseWaiters(t, b, account.LeaseResource(a.ID), nodes)
		release()
	})
	if codes[""] != 100 || codes[account.CodeInsufficientFunds] != 100 {
		t.Fatalf("outcomes %v, want 100 ok and 100 %s", codes, account.CodeInsufficientFunds)
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 0 || len(entries) != 100 {
		t.Fatalf("balance %d with %d entries, want 0 with 100", balance, len(entries))
	}
	// Withdrawals queued behind one another share a lease (and its token);
	// across leases the tokens only grow.
	var last int64
	leases := 0
	for _, e := range entries {
		if e.FenceToken == nil || *e.FenceToken < last {
			t.Fatalf("entry %d fence token %v after %d: lease writes must carry non-decreasing tokens", e.ID, e.FenceToken, last)
		}
		if *e.FenceToken > last {
			leases++
		}
		last = *e.FenceToken
	}
	holders := map[string]bool{}
	for _, h := range leaseHolders(t, b, a.ID) {
		holders[h] = true
	}
	if len(holders) < 2 {
		t.Fatalf("the entries' leases were held by %v: want more than one node", holders)
	}
	t.Logf("100 withdrawals under %d leases held by %d nodes", leases, len(holders))
}

// TestMixedStrategiesKeepTheMoney: row withdrawals and deposits take no
// lease; the lease strategy's unchanged-balance condition must keep them from
// being overwritten.
func TestMixedStrategiesKeepTheMoney(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{LeaseWait: 60 * time.Second})
	a := mustCreate(t, svc, 5000)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 120 {
		wg.Go(func() {
			<-start
			var err error
			switch i % 3 {
			case 0:
				_, err = svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 70})
			case 1:
				_, err = svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 90, Strategy: account.StrategyRow})
			case 2:
				_, err = svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 110, Strategy: account.StrategyLease})
			}
			if err != nil && account.ErrorCode(err) != account.CodeInsufficientFunds {
				t.Errorf("change %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	_, entries := checkMoney(t, b, a.ID)
	if len(entries) < 80 {
		t.Fatalf("only %d of 120 changes landed", len(entries))
	}
}

// TestPausedLeaseHolder is the seed's paused node inside one process: node-a
// takes the lease and pauses (hold) past its TTL; node-b takes over and
// withdraws; node-a's late write is rejected by the fence and changes
// nothing. Without the fence, the same pause overwrites node-b's work.
func TestPausedLeaseHolder(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		strategy  account.Strategy
		wantCode  string // node-a's late outcome
		corrupted bool
	}{
		{account.StrategyLease, account.CodeStaleFencingToken, false},
		{account.StrategyLeaseNoFence, "", true},
	} {
		t.Run(string(tt.strategy), func(t *testing.T) {
			t.Parallel()
			nodeA, b := setup(t, account.Options{UnsafeDemo: true, Node: "node-a", LeaseTTL: 500 * time.Millisecond})
			nodeB := account.NewService(b.pool, account.Options{UnsafeDemo: true, Locks: b.locks, Node: "node-b", LeaseTTL: 5 * time.Second, LeaseWait: 5 * time.Second})
			a := mustCreate(t, nodeA, 5000)

			late := make(chan error, 1)
			go func() {
				_, err := nodeA.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 1000, Strategy: tt.strategy, Hold: 1500 * time.Millisecond})
				late <- err
			}()
			wait.Until(t, 10*time.Second, `node-a to hold the lease and be "paused" in its hold`, func() bool {
				s, err := b.locks.Get(b.ctx, account.LeaseResource(a.ID))
				return err == nil && s.Held && s.Holder == "node-a"
			})
			res, err := nodeB.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 1000, Strategy: tt.strategy})
			if err != nil {
				t.Fatalf("node-b: %v", err)
			}
			errA := <-late
			if got := account.ErrorCode(errA); got != tt.wantCode || (tt.wantCode == "" && errA != nil) {
				t.Fatalf("node-a's late write: %v, want code %q", errA, tt.wantCode)
			}

			var balance, opening, withdrawn int64
			if err := b.pool.QueryRow(b.ctx, `SELECT balance, opening_balance,
				(SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account_id = $1) FROM accounts WHERE id = $1`, a.ID).Scan(&balance, &opening, &withdrawn); err != nil {
				t.Fatal(err)
			}
			if tt.corrupted {
				// The stale update: both withdrawals are in the ledger, but the
				// balance shows only one of them.
				if withdrawn != 2000 || balance != 4000 {
					t.Fatalf("balance %d, withdrawn %d: want the lost update (4000 with 2000 withdrawn)", balance, withdrawn)
				}
				return
			}
			if balance != 4000 || withdrawn != 1000 || *res.Entry.FenceToken == 0 {
				t.Fatalf("balance %d, withdrawn %d: want only node-b's withdrawal", balance, withdrawn)
			}
			checkMoney(t, b, a.ID)
		})
	}
}

func TestFencingTokenOnRowWrites(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 1000)
	other := mustCreate(t, svc, 1000)
	resource := account.LeaseResource(a.ID)
	first, err := b.locks.TryAcquire(b.ctx, resource, "client-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 10, FenceToken: first.Token}); err != nil {
		t.Fatalf("deposit with the live token: %v", err)
	}
	if got, _ := svc.Get(b.ctx, a.ID); got.FenceToken != first.Token {
		t.Fatalf("accounts.fence_token = %d, want %d", got.FenceToken, first.Token)
	}
	otherLease, err := b.locks.TryAcquire(b.ctx, account.LeaseResource(other.ID), "client-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.locks.Release(b.ctx, resource, first.ID); err != nil {
		t.Fatal(err)
	}
	expired := account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: first.Token}
	if _, err := svc.Withdraw(b.ctx, expired); account.ErrorCode(err) != account.CodeLeaseExpired {
		t.Fatalf("released token: %v, want %s", err, account.CodeLeaseExpired)
	}
	second, err := b.locks.TryAcquire(b.ctx, resource, "client-2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change account.Change
		code   string
	}{
		{"StaleToken", account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: first.Token}, account.CodeStaleFencingToken},
		{"OtherAccountsToken", account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: otherLease.Token}, account.CodeFencingTokenMismatch},
		{"NeverIssued", account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: second.Token + 99}, account.CodeFencingTokenMismatch},
		{"WithLeaseStrategy", account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyLease, FenceToken: second.Token}, account.CodeInvalidRequest},
		{"NegativeToken", account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: -1}, account.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := svc.Withdraw(b.ctx, tt.change); account.ErrorCode(err) != tt.code {
				t.Fatalf("Withdraw = %v, want %s", err, tt.code)
			}
		})
	}
	if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, FenceToken: second.Token}); err != nil {
		t.Fatalf("withdraw with the newest token: %v", err)
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 1000 || len(entries) != 2 || *entries[1].FenceToken != second.Token {
		t.Fatalf("balance %d, entries %+v", balance, entries)
	}
}

func TestLeaseWaitTimesOut(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{LeaseWait: 200 * time.Millisecond})
	a := mustCreate(t, svc, 1000)
	if _, err := b.locks.TryAcquire(b.ctx, account.LeaseResource(a.ID), "someone-else", time.Minute); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := svc.Withdraw(ctx, account.Change{AccountID: a.ID, Amount: 1, Strategy: account.StrategyLease}); account.ErrorCode(err) != account.CodeLockTimeout {
		t.Fatalf("Withdraw = %v, want %s", err, account.CodeLockTimeout)
	}
	if balance, _ := checkMoney(t, b, a.ID); balance != 1000 {
		t.Fatalf("balance %d", balance)
	}
}

func TestLeaseStrategiesNeedALockManager(t *testing.T) {
	t.Parallel()
	_, b := setup(t, account.Options{})
	svc := account.NewService(b.pool, account.Options{UnsafeDemo: true})
	a := mustCreate(t, svc, 100)
	for _, s := range []account.Strategy{account.StrategyLease, account.StrategyLeaseNoFence} {
		if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 1, Strategy: s}); account.ErrorCode(err) != account.CodeUnknownStrategy {
			t.Fatalf("%s without a lock manager: %v", s, err)
		}
	}
	withLocks := account.NewService(b.pool, account.Options{Locks: b.locks})
	if _, err := withLocks.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 1, Strategy: account.StrategyLeaseNoFence}); account.ErrorCode(err) != account.CodeUnsafeDisabled {
		t.Fatalf("lease-nofence outside demo mode: %v", err)
	}
	if _, err := withLocks.Withdraw(b.ctx, account.Change{AccountID: 999, Amount: 1, Strategy: account.StrategyLease}); account.ErrorCode(err) != account.CodeAccountNotFound {
		t.Fatalf("lease on a missing account: %v", err)
	}
	var leases int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM leases`).Scan(&leases); err != nil || leases != 0 {
		t.Fatalf("%d lease rows (%v) after refused requests, want 0", leases, err)
	}
}
