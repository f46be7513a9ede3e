package account_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type bundle struct {
	pool  *pgxpool.Pool
	locks *lockmgr.Manager
	ctx   context.Context
}

// setup returns a Service on a fresh database, with a lock manager for the
// lease strategies unless opts brings one.
func setup(t *testing.T, opts account.Options) (*account.Service, bundle) {
	t.Helper()
	pool := pgtest.New(t)
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	if opts.Locks == nil {
		opts.Locks = locks
	}
	return account.NewService(pool, opts), bundle{pool: pool, locks: locks, ctx: context.Background()}
}

func mustCreate(t *testing.T, svc *account.Service, balance int64) account.Account {
	t.Helper()
	a, err := svc.Create(context.Background(), "alice", balance)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return a
}

// checkMoney asserts invariant 1 for one account: balance = opening + deposits
// - withdrawals according to the ledger, balance >= 0, and each entry's
// balance_after follows from the one before.
func checkMoney(t *testing.T, b bundle, id int64) (balance int64, entries []account.Entry) {
	t.Helper()
	var opening int64
	if err := b.pool.QueryRow(b.ctx, `SELECT balance, opening_balance FROM accounts WHERE id = $1`, id).Scan(&balance, &opening); err != nil {
		t.Fatalf("read account: %v", err)
	}
	svc := account.NewService(b.pool, account.Options{})
	entries, err := svc.Ledger(b.ctx, id, 0, 1_000_000)
	if err != nil {
		t.Fatalf("Ledger: %v", err)
	}
	running := opening
	for _, e := range entries {
		switch e.Kind {
		case account.KindDeposit:
			running += e.Amount
		case account.KindWithdrawal:
			running -= e.Amount
		}
		if e.Balance != running {
			t.Errorf("entry %d: balance_after %d, ledger implies %d", e.ID, e.Balance, running)
		}
	}
	if running != balance {
		t.Errorf("balance %d, but opening %d + ledger = %d", balance, opening, running)
	}
	if balance < 0 {
		t.Errorf("balance %d is negative", balance)
	}
	return balance, entries
}

func TestCreateAndGet(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 5000)
	got, err := svc.Get(b.ctx, a.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Balance != 5000 || got.OpeningBalance != 5000 || got.Owner != "alice" || got.Currency != "INR" || got.FenceToken != 0 {
		t.Fatalf("Get = %+v", got)
	}
	if _, err := svc.Get(b.ctx, a.ID+1000); account.ErrorCode(err) != account.CodeAccountNotFound {
		t.Fatalf("Get(missing) = %v, want %s", err, account.CodeAccountNotFound)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	tests := []struct {
		name    string
		owner   string
		balance int64
		code    string
	}{
		{"EmptyOwner", "", 1, account.CodeInvalidRequest},
		{"LongOwner", string(make([]byte, 101)), 1, account.CodeInvalidRequest},
		{"InvalidUTF8Owner", "\xff", 1, account.CodeInvalidRequest},
		{"NULInOwner", "a\x00b", 1, account.CodeInvalidRequest},
		{"BidiOverrideInOwner", "evil\u202egnp", 1, account.CodeInvalidRequest},
		{"NegativeBalance", "bob", -1, account.CodeInvalidAmount},
		{"HugeBalance", "bob", account.MaxAmount + 1, account.CodeInvalidAmount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := svc.Create(b.ctx, tt.owner, tt.balance)
			if got := account.ErrorCode(err); got != tt.code {
				t.Fatalf("Create(%q, %d) = %v, want code %s", tt.owner, tt.balance, err, tt.code)
			}
		})
	}
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM accounts`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("accounts after bad input = %d (%v), want 0", n, err)
	}
}

func TestLedgerIsAppendOnly(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 100)
	if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 5}); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`UPDATE ledger_entries SET amount = 1 WHERE account_id = $1`,
		`DELETE FROM ledger_entries WHERE account_id = $1`,
	} {
		if _, err := b.pool.Exec(b.ctx, stmt, a.ID); err == nil {
			t.Errorf("%s succeeded; the ledger must be append-only", stmt)
		}
	}
	if _, entries := checkMoney(t, b, a.ID); len(entries) != 1 || entries[0].Amount != 5 {
		t.Fatalf("ledger changed: %+v", entries)
	}
}

func TestLedgerPages(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	a := mustCreate(t, svc, 0)
	for i := range 5 {
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := svc.Ledger(b.ctx, a.ID, 0, 2)
	if err != nil || len(first) != 2 || first[0].Amount != 1 || first[1].Amount != 2 {
		t.Fatalf("first page = %+v, %v", first, err)
	}
	rest, err := svc.Ledger(b.ctx, a.ID, first[1].ID, 10)
	if err != nil || len(rest) != 3 || rest[0].Amount != 3 {
		t.Fatalf("second page = %+v, %v", rest, err)
	}
	if _, err := svc.Ledger(b.ctx, a.ID+1, 0, 10); account.ErrorCode(err) != account.CodeAccountNotFound {
		t.Fatalf("Ledger(missing) = %v", err)
	}
}
