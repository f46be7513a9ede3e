package account_test

import (
	"math"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
)

func TestDepositAndWithdraw(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 1000)

	dep, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 500})
	if err != nil {
		t.Fatalf("Deposit: %v", err)
	}
	if dep.Entry.Kind != account.KindDeposit || dep.Entry.Amount != 500 || dep.Entry.Balance != 1500 || dep.Replayed {
		t.Fatalf("Deposit = %+v", dep)
	}
	wd, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 1200, Strategy: account.StrategyRow})
	if err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	if wd.Entry.Kind != account.KindWithdrawal || wd.Entry.Balance != 300 || wd.Entry.Strategy != "row" {
		t.Fatalf("Withdraw = %+v", wd)
	}
	_, err = svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 301, Strategy: account.StrategyRow})
	if account.ErrorCode(err) != account.CodeInsufficientFunds {
		t.Fatalf("overdraw = %v, want %s", err, account.CodeInsufficientFunds)
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 300 || len(entries) != 2 {
		t.Fatalf("balance %d with %d entries, want 300 with 2", balance, len(entries))
	}
}

func TestChangeRefusals(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 100)
	demo, _ := setup(t, account.Options{UnsafeDemo: true})
	row := account.StrategyRow
	tests := []struct {
		name   string
		svc    *account.Service
		change account.Change
		code   string
	}{
		{"ZeroAmount", svc, account.Change{AccountID: a.ID, Amount: 0, Strategy: row}, account.CodeInvalidAmount},
		{"NegativeAmount", svc, account.Change{AccountID: a.ID, Amount: -5, Strategy: row}, account.CodeInvalidAmount},
		{"HugeAmount", svc, account.Change{AccountID: a.ID, Amount: account.MaxAmount + 1, Strategy: row}, account.CodeInvalidAmount},
		{"EmptyStrategy", svc, account.Change{AccountID: a.ID, Amount: 1}, account.CodeUnknownStrategy},
		{"UnknownStrategy", svc, account.Change{AccountID: a.ID, Amount: 1, Strategy: "optimistic"}, account.CodeUnknownStrategy},
		{"UnsafeDisabled", svc, account.Change{AccountID: a.ID, Amount: 1, Strategy: account.StrategyUnsafe}, account.CodeUnsafeDisabled},
		{"HoldDisabled", svc, account.Change{AccountID: a.ID, Amount: 1, Strategy: row, Hold: time.Millisecond}, account.CodeUnsafeDisabled},
		{"HoldTooLong", demo, account.Change{AccountID: a.ID, Amount: 1, Strategy: row, Hold: account.MaxHold + time.Millisecond}, account.CodeInvalidRequest},
		{"MissingAccount", svc, account.Change{AccountID: a.ID + 99, Amount: 1, Strategy: row}, account.CodeAccountNotFound},
		{"ZeroAccountID", svc, account.Change{AccountID: 0, Amount: 1, Strategy: row}, account.CodeAccountNotFound},
		{"Overdraw", svc, account.Change{AccountID: a.ID, Amount: 101, Strategy: row}, account.CodeInsufficientFunds},
		{"KeyNotPrintable", svc, account.Change{AccountID: a.ID, Amount: 1, Strategy: row, IdempotencyKey: "a\x00b"}, account.CodeInvalidIdempotencyKey},
		{"KeyTooLong", svc, account.Change{AccountID: a.ID, Amount: 1, Strategy: row, IdempotencyKey: string(make([]byte, 256))}, account.CodeInvalidIdempotencyKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.svc.Withdraw(b.ctx, tt.change)
			if got := account.ErrorCode(err); got != tt.code {
				t.Fatalf("Withdraw(%+v) = %v, want code %s", tt.change, err, tt.code)
			}
		})
	}
	balance, entries := checkMoney(t, b, a.ID)
	if balance != 100 || len(entries) != 0 {
		t.Fatalf("after refusals: balance %d, %d entries; want 100, 0", balance, len(entries))
	}
}

func TestDepositOverflowRefused(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 0)
	// A balance near the int64 limit takes ~9,000 maximal deposits to reach;
	// set it directly as the opening balance instead (the schema allows it).
	const near = math.MaxInt64 - 10
	if _, err := b.pool.Exec(b.ctx, `UPDATE accounts SET balance = $2, opening_balance = $2 WHERE id = $1`, a.ID, int64(near)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 10}); err != nil {
		t.Fatalf("deposit up to the limit: %v", err)
	}
	_, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 1})
	if account.ErrorCode(err) != account.CodeBalanceOverflow {
		t.Fatalf("overflowing deposit = %v, want %s", err, account.CodeBalanceOverflow)
	}
	if balance, _ := checkMoney(t, b, a.ID); balance != math.MaxInt64 {
		t.Fatalf("balance %d, want %d", balance, int64(math.MaxInt64))
	}
}
