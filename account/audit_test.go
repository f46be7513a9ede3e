package account_test

import (
	"slices"
	"testing"

	"github.com/lockbank/lockbank/account"
)

// TestAudit: accounts changed only through the Service pass the audit; an
// account whose balance or ledger was changed behind the Service's back is
// reported, and only if it was asked about.
func TestAudit(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	ids, err := svc.CreateMany(b.ctx, "audited", 1000, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: id, Amount: 50}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: id, Amount: 300, Strategy: account.StrategyLease}); err != nil {
			t.Fatal(err)
		}
	}
	if bad, err := svc.Audit(b.ctx, ids); err != nil || len(bad) != 0 {
		t.Fatalf("Audit of accounts changed through the Service: %v, %v; want none", bad, err)
	}

	// A lost update: the balance moves, the ledger does not.
	if _, err := b.pool.Exec(b.ctx, `UPDATE accounts SET balance = balance + 1 WHERE id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	// A ledger entry whose balance change never happened.
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy)
		VALUES ($1, 'withdrawal', 5, 745, 'row')`, ids[3]); err != nil {
		t.Fatal(err)
	}
	bad, err := svc.Audit(b.ctx, ids)
	if err != nil || !slices.Equal(bad, []int64{ids[1], ids[3]}) {
		t.Fatalf("Audit: %v, %v; want %v", bad, err, []int64{ids[1], ids[3]})
	}
	if bad, err := svc.Audit(b.ctx, []int64{ids[0], ids[2], ids[3] + 1000}); err != nil || len(bad) != 0 {
		t.Fatalf("Audit of the sound accounts and a missing one: %v, %v; want none", bad, err)
	}
}
