package account_test

import (
	"strings"
	"testing"

	"github.com/lockbank/lockbank/account"
)

func TestCreateMany(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	ids, err := svc.CreateMany(b.ctx, "bench", 700, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 50 {
		t.Fatalf("%d ids, want 50", len(ids))
	}
	for i, id := range ids {
		if i > 0 && id <= ids[i-1] {
			t.Fatalf("ids %v not ascending", ids)
		}
		a, err := svc.Get(b.ctx, id)
		if err != nil || a.Owner != "bench" || a.Balance != 700 || a.OpeningBalance != 700 {
			t.Fatalf("account %d: %+v, %v", id, a, err)
		}
	}
	// Each is an account like any other: it takes changes of its own.
	if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: ids[3], Amount: 700, Strategy: account.StrategyRow}); err != nil {
		t.Fatal(err)
	}
	if a, _ := svc.Get(b.ctx, ids[4]); a.Balance != 700 {
		t.Fatalf("a withdrawal from account %d changed account %d to %d", ids[3], ids[4], a.Balance)
	}

	for _, tt := range []struct {
		name    string
		owner   string
		balance int64
		n       int
		code    string
	}{
		{"NoAccounts", "bench", 1, 0, account.CodeInvalidRequest},
		{"TooMany", "bench", 1, account.MaxSeed + 1, account.CodeInvalidRequest},
		{"EmptyOwner", "", 1, 1, account.CodeInvalidRequest},
		{"LongOwner", strings.Repeat("x", 101), 1, 1, account.CodeInvalidRequest},
		{"OwnerNotText", "be\x00nch", 1, 1, account.CodeInvalidRequest},
		{"NegativeBalance", "bench", -1, 1, account.CodeInvalidAmount},
		{"BalanceTooLarge", "bench", account.MaxAmount + 1, 1, account.CodeInvalidAmount},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := svc.CreateMany(b.ctx, tt.owner, tt.balance, tt.n)
			if account.ErrorCode(err) != tt.code || ids != nil {
				t.Fatalf("CreateMany(%q, %d, %d) = %v, %v; want %s", tt.owner, tt.balance, tt.n, ids, err, tt.code)
			}
		})
	}
	var count int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM accounts`).Scan(&count); err != nil || count != 50 {
		t.Fatalf("%d accounts after the refusals (%v); want the 50 seeded", count, err)
	}
}
