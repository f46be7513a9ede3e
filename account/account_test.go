package account_test

import (
	"context"
	"math"
	"os"
	"sync"
	"testing"
	"time"

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

// raceWithdrawals releases n goroutines at once through a barrier, each doing
// c on the nodes in turn, then runs released (if any) while they are under
// way, and counts outcomes by error code ("" for success).
func raceWithdrawals(t *testing.T, nodes []node, n int, c account.Change, released func()) map[string]int {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := nodes[i%len(nodes)].svc.Withdraw(context.Background(), c)
			code := account.ErrorCode(err)
			if err != nil && code == "" {
				t.Errorf("Withdraw: unexpected error %v", err)
				code = "internal"
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	close(start)
	if released != nil {
		released()
	}
	wg.Wait()
	return codes
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

func TestIdempotency(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{UnsafeDemo: true})

	t.Run("ReplaysSuccess", func(t *testing.T) {
		a := mustCreate(t, svc, 1000)
		c := account.Change{AccountID: a.ID, Amount: 400, Strategy: account.StrategyRow, IdempotencyKey: "k1"}
		first, err := svc.Withdraw(b.ctx, c)
		if err != nil || first.Replayed {
			t.Fatalf("first = %+v, %v", first, err)
		}
		again, err := svc.Withdraw(b.ctx, c)
		if err != nil || !again.Replayed || again.Entry != first.Entry {
			t.Fatalf("retry = %+v, %v; want replay of %+v", again, err, first.Entry)
		}
		if balance, entries := checkMoney(t, b, a.ID); balance != 600 || len(entries) != 1 || entries[0].IdempotencyKey != "k1" {
			t.Fatalf("balance %d, entries %+v", balance, entries)
		}
	})
	t.Run("ReplaysRefusal", func(t *testing.T) {
		a := mustCreate(t, svc, 100)
		c := account.Change{AccountID: a.ID, Amount: 400, Strategy: account.StrategyRow, IdempotencyKey: "k2"}
		_, err1 := svc.Withdraw(b.ctx, c)
		if account.ErrorCode(err1) != account.CodeInsufficientFunds {
			t.Fatalf("first = %v", err1)
		}
		// Money arrives, but the retry still gets the first outcome: the key is spent.
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 1000}); err != nil {
			t.Fatal(err)
		}
		res, err2 := svc.Withdraw(b.ctx, c)
		if !res.Replayed || err2 == nil || err2.Error() != err1.Error() {
			t.Fatalf("retry = %+v, %v; want replayed %v", res, err2, err1)
		}
		if balance, _ := checkMoney(t, b, a.ID); balance != 1100 {
			t.Fatalf("balance %d, want 1100", balance)
		}
	})
	t.Run("KeyReusedForDifferentRequest", func(t *testing.T) {
		a := mustCreate(t, svc, 1000)
		if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, IdempotencyKey: "k3"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []account.Change{
			{AccountID: a.ID, Amount: 11, Strategy: account.StrategyRow, IdempotencyKey: "k3"},
			{AccountID: a.ID, Amount: 10, Strategy: account.StrategyUnsafe, IdempotencyKey: "k3"},
		} {
			if _, err := svc.Withdraw(b.ctx, c); account.ErrorCode(err) != account.CodeIdempotencyKeyReused {
				t.Fatalf("Withdraw(%+v) = %v, want %s", c, err, account.CodeIdempotencyKeyReused)
			}
		}
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 10, IdempotencyKey: "k3"}); account.ErrorCode(err) != account.CodeIdempotencyKeyReused {
			t.Fatalf("Deposit with a withdrawal's key = %v, want %s", err, account.CodeIdempotencyKeyReused)
		}
		if balance, entries := checkMoney(t, b, a.ID); balance != 990 || len(entries) != 1 {
			t.Fatalf("balance %d with %d entries, want 990 with 1", balance, len(entries))
		}
	})
	t.Run("SameKeyOnAnotherAccountIsIndependent", func(t *testing.T) {
		a1, a2 := mustCreate(t, svc, 100), mustCreate(t, svc, 100)
		for _, id := range []int64{a1.ID, a2.ID} {
			if res, err := svc.Withdraw(b.ctx, account.Change{AccountID: id, Amount: 10, Strategy: account.StrategyRow, IdempotencyKey: "shared"}); err != nil || res.Replayed {
				t.Fatalf("account %d: %+v, %v", id, res, err)
			}
		}
	})
	for _, strategy := range []account.Strategy{account.StrategyRow, account.StrategyUnsafe} {
		t.Run("ConcurrentSameKey/"+string(strategy), func(t *testing.T) {
			a := mustCreate(t, svc, 1000)
			const n = 20
			start := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			var fresh, replayed int
			for range n {
				wg.Go(func() {
					<-start
					res, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 100, Strategy: strategy, IdempotencyKey: "same", Hold: 50 * time.Millisecond})
					if err != nil {
						t.Errorf("Withdraw: %v", err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if res.Replayed {
						replayed++
					} else {
						fresh++
					}
				})
			}
			close(start)
			wg.Wait()
			if fresh != 1 || replayed != n-1 {
				t.Fatalf("fresh %d, replayed %d; want 1 and %d", fresh, replayed, n-1)
			}
			if balance, entries := checkMoney(t, b, a.ID); balance != 900 || len(entries) != 1 {
				t.Fatalf("balance %d with %d entries, want 900 with 1", balance, len(entries))
			}
		})
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
