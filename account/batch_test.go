package account

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestBatchDecidesEachChangeInOrder applies one hand-made batch holding every
// kind of outcome: each change is judged against the balance the changes
// before it leave, refusals are recorded under their keys, a stale token
// records nothing, stored outcomes replay, and the balance is written once,
// in one transaction with all the entries.
func TestBatchDecidesEachChangeInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, locks, a := newService(t, 100)
	// A stored success (k0) and a stale fencing token.
	if _, err := s.Deposit(ctx, Change{AccountID: a.ID, Amount: 5, IdempotencyKey: "k0"}); err != nil {
		t.Fatal(err)
	}
	stale, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "old", 60_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, LeaseResource(a.ID), stale.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "new", 60_000_000_000); err != nil {
		t.Fatal(err)
	}

	mk := func(kind string, c Change) *pending {
		c.AccountID, c.Strategy = a.ID, StrategyRow
		return &pending{ctx: ctx, kind: kind, change: c, hash: requestHash(kind, c)}
	}
	batch := []*pending{
		mk(KindWithdrawal, Change{Amount: 60, IdempotencyKey: "k1"}), // 105 → 45
		mk(KindWithdrawal, Change{Amount: 60, IdempotencyKey: "k2"}), // refused: 45 < 60, recorded
		mk(KindDeposit, Change{Amount: 30}),                          // 45 → 75
		mk(KindWithdrawal, Change{Amount: 1, FenceToken: stale.Token}),
		mk(KindDeposit, Change{Amount: 5, IdempotencyKey: "k0"}),    // replays the first deposit
		mk(KindDeposit, Change{Amount: 6, IdempotencyKey: "k0"}),    // k0 for another request: but see takeBatch
		mk(KindWithdrawal, Change{Amount: 75}),                      // 75 → 0
		mk(KindWithdrawal, Change{Amount: 1, IdempotencyKey: "k3"}), // refused: 0 < 1, recorded
	}
	batch = append(batch[:5], batch[6:]...) // a batch never holds one key twice (takeBatch)
	outs := s.applyBatch(batch)

	wantCodes := []string{"", CodeInsufficientFunds, "", CodeStaleFencingToken, "", "", CodeInsufficientFunds}
	wantAfter := []int64{45, 0, 75, 0, 105, 0, 0}
	for i, out := range outs {
		code := ""
		var e *Error
		if errors.As(out.err, &e) {
			code = e.Code
		} else if out.err != nil {
			t.Fatalf("change %d: %v", i, out.err)
		}
		if code != wantCodes[i] || (code == "" && out.res.Entry.Balance != wantAfter[i]) {
			t.Errorf("change %d: code %q entry %+v; want code %q, balance after %d", i, code, out.res.Entry, wantCodes[i], wantAfter[i])
		}
	}
	if !outs[4].res.Replayed || outs[0].res.Replayed {
		t.Errorf("replayed flags %v %v; want only the stored k0 replayed", outs[0].res.Replayed, outs[4].res.Replayed)
	}

	// One transaction wrote the balance and the three new entries.
	var balance, fresh, txs int64
	if err := pool.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1`, a.ID).Scan(&balance); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text) FROM ledger_entries WHERE account_id = $1 AND id > $2`,
		a.ID, outs[4].res.Entry.ID).Scan(&fresh, &txs); err != nil {
		t.Fatal(err)
	}
	if balance != 0 || fresh != 3 || txs != 1 {
		t.Fatalf("balance %d, %d new entries in %d transactions; want 0, 3 in 1", balance, fresh, txs)
	}
	// Refusals were recorded under their keys, the fenced change nowhere.
	replayed, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 60, Strategy: StrategyRow, IdempotencyKey: "k2"})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInsufficientFunds || !replayed.Replayed {
		t.Fatalf("retry of k2: %+v %v; want its stored refusal replayed", replayed, err)
	}
	var keys int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE account_id = $1`, a.ID).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if keys != 4 { // k0, k1, k2, k3
		t.Fatalf("%d idempotency records, want 4", keys)
	}
}

// TestBatchStatementFailureCommitsNothing: a statement that fails inside the
// write pipeline makes PostgreSQL skip the COMMIT queued behind it: a certain
// failure (not an unknown outcome), nothing written, and the next change
// goes through.
func TestBatchStatementFailureCommitsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _, a := newService(t, 100)
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse_entries() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'no entries today'; END $$;
		CREATE TRIGGER refuse_entries BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION refuse_entries()`); err != nil {
		t.Fatal(err)
	}
	_, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, IdempotencyKey: "k"})
	if err == nil || errors.Is(err, ErrOutcomeUnknown) || isRefusal(err) {
		t.Fatalf("withdrawal with a failing ledger insert: %v; want a certain failure", err)
	}
	if _, err := pool.Exec(ctx, `DROP TRIGGER refuse_entries ON ledger_entries`); err != nil {
		t.Fatal(err)
	}
	balance, entries, keys := accountState(t, pool, a.ID)
	if balance != 100 || entries != 0 || keys != 0 {
		t.Fatalf("after a failed batch: balance %d, %d entries, %d keys; want 100, 0, 0", balance, entries, keys)
	}
	if r, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow, IdempotencyKey: "k"}); err != nil || r.Replayed || r.Entry.Balance != 90 {
		t.Fatalf("the retry: %+v %v; want it applied now, not replayed", r, err)
	}
}

// TestBatchRefusesAMovedBalance: the batch's write names the balance it read
// under the row lock; were it different, the statement fails (NOT NULL) and
// writes nothing, rather than committing entries that do not add up.
func TestBatchRefusesAMovedBalance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, pool, _, a := newService(t, 100)
	_, err := pool.Exec(ctx, sqlApplyBatch, a.ID, int64(99), int64(-10), int64(0),
		[]int32{0}, []string{KindWithdrawal}, []int64{10}, []int64{89}, []string{"row"}, []*int64{nil}, []*string{nil}, []*string{nil})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23502" || !balanceMoved(err) {
		t.Fatalf("a batch write against a balance that moved: %v; want a not-null violation on balance", err)
	}
	balance, entries, _ := accountState(t, pool, a.ID)
	if balance != 100 || entries != 0 {
		t.Fatalf("balance %d with %d entries; want 100 with 0", balance, entries)
	}
}
