package account_test

import (
	"sync"
	"testing"

	"github.com/lockbank/lockbank/account"
)

// TestRowStrategyUnderContention: 200 withdrawals of 100 from an account of
// 10000, spread over three nodes, released together while another session
// holds the account's row, so that every node queues on PostgreSQL's row
// lock before any of them writes: exactly 100 succeed, and the money adds up.
func TestRowStrategyUnderContention(t *testing.T) {
	t.Parallel()
	nodes, b := cluster(t, 3, account.Options{})
	a := mustCreate(t, nodes[0].svc, 10_000)
	release := holdRow(t, b, a.ID)
	codes := raceWithdrawals(t, nodes, 200, account.Change{AccountID: a.ID, Amount: 100, Strategy: account.StrategyRow}, func() {
		waitForLockWaits(t, b, nodes)
		release()
	})
	if codes[""] != 100 || codes[account.CodeInsufficientFunds] != 100 {
		t.Fatalf("outcomes %v, want 100 ok and 100 %s", codes, account.CodeInsufficientFunds)
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 0 || len(entries) != 100 {
		t.Fatalf("balance %d with %d entries, want 0 with 100", balance, len(entries))
	}
}

// TestMixedDepositsAndWithdrawalsKeepTheMoney: deposits and withdrawals on
// one account from three nodes, released while the row is held so that all
// of them contend in PostgreSQL: every entry follows from the one before, and
// the balance is the ledger's.
func TestMixedDepositsAndWithdrawalsKeepTheMoney(t *testing.T) {
	t.Parallel()
	nodes, b := cluster(t, 3, account.Options{})
	a := mustCreate(t, nodes[0].svc, 1000)
	release := holdRow(t, b, a.ID)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 150 {
		wg.Go(func() {
			<-start
			svc := nodes[i%len(nodes)].svc
			var err error
			if i%2 == 0 {
				_, err = svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: int64(1 + i)})
			} else {
				_, err = svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: int64(10 * i), Strategy: account.StrategyRow})
			}
			if err != nil && account.ErrorCode(err) != account.CodeInsufficientFunds {
				t.Errorf("change %d: %v", i, err)
			}
		})
	}
	close(start)
	waitForLockWaits(t, b, nodes)
	release()
	wg.Wait()
	if _, entries := checkMoney(t, b, a.ID); len(entries) < 75 {
		t.Fatalf("only %d of 150 changes landed; every deposit should have", len(entries))
	}
}
