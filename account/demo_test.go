package account_test

import (
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
)

// TestUnsafeStrategyDoubleSpends proves the bug the seed describes is real:
// two withdrawals of the whole balance, released together with a hold that
// keeps both between read and write, both succeed.
func TestUnsafeStrategyDoubleSpends(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{UnsafeDemo: true})
	a := mustCreate(t, svc, 5000)
	// A hold long enough for both to read before either writes, even on a loaded machine.
	codes := raceWithdrawals(t, []node{{svc: svc}}, 2, account.Change{AccountID: a.ID, Amount: 5000, Strategy: account.StrategyUnsafe, Hold: time.Second}, nil)
	if codes[""] != 2 {
		t.Fatalf("outcomes %v, want both withdrawals to succeed (the double spend)", codes)
	}
	var balance, withdrawn int64
	if err := b.pool.QueryRow(b.ctx, `SELECT a.balance, (SELECT sum(amount) FROM ledger_entries WHERE account_id = a.id)
		FROM accounts a WHERE id = $1`, a.ID).Scan(&balance, &withdrawn); err != nil {
		t.Fatal(err)
	}
	if balance != 0 || withdrawn != 10_000 {
		t.Fatalf("balance %d, withdrawn %d; want 0 and 10000 (5000 paid out of nothing)", balance, withdrawn)
	}

	// The same race with the row lock: the second waits, then is refused.
	b2 := mustCreate(t, svc, 5000)
	codes = raceWithdrawals(t, []node{{svc: svc}}, 2, account.Change{AccountID: b2.ID, Amount: 5000, Strategy: account.StrategyRow, Hold: 300 * time.Millisecond}, nil)
	if codes[""] != 1 || codes[account.CodeInsufficientFunds] != 1 {
		t.Fatalf("row outcomes %v, want 1 ok and 1 %s", codes, account.CodeInsufficientFunds)
	}
	checkMoney(t, b, b2.ID)
}
