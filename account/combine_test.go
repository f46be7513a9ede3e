package account

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
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

// TestTakeBatchKeepsOneKeyPerBatch: a second change with a key already in the
// batch waits for the next one, so it replays the first one's outcome.
func TestTakeBatchKeepsOneKeyPerBatch(t *testing.T) {
	var queue []*pending
	for i := range 3 * maxBatch {
		key := ""
		if i%2 == 0 {
			key = "same"
		}
		queue = append(queue, &pending{change: Change{IdempotencyKey: key, Amount: int64(i + 1)}})
	}
	batch, rest := takeBatch(queue)
	if len(batch) != maxBatch || batch[0].change.Amount != 1 || batch[1].change.Amount != 2 || batch[2].change.Amount != 4 {
		t.Fatalf("batch of %d starting %d %d %d; want %d in order, the key once", len(batch), batch[0].change.Amount, batch[1].change.Amount, batch[2].change.Amount, maxBatch)
	}
	seen := 0
	for _, p := range batch {
		if p.change.IdempotencyKey == "same" {
			seen++
		}
	}
	if seen != 1 || len(rest) != len(queue)-maxBatch || rest[0].change.Amount != 3 {
		t.Fatalf("key in the batch %d times, %d left starting %d", seen, len(rest), rest[0].change.Amount)
	}
}

// TestChangesOfOneAccountShareCommits: 64 clients released together on one
// account must be combined — fewer transactions than entries — while every
// change keeps its own entry and the money adds up.
func TestChangesOfOneAccountShareCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _, a := newService(t, 1_000_000)
	const clients, each = 64, 10
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for range clients {
		wg.Go(func() {
			<-start
			for range each {
				if _, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 3, Strategy: StrategyRow}); err != nil {
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var balance, entries, txs int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT balance FROM accounts WHERE id = $1), count(*), count(DISTINCT xmin::text)
		FROM ledger_entries WHERE account_id = $1`, a.ID).Scan(&balance, &entries, &txs); err != nil {
		t.Fatal(err)
	}
	if balance != 1_000_000-3*clients*each || entries != clients*each {
		t.Fatalf("balance %d with %d entries; want %d with %d", balance, entries, 1_000_000-3*clients*each, clients*each)
	}
	if txs >= entries {
		t.Fatalf("%d entries in %d transactions: no change shared a commit", entries, txs)
	}
	t.Logf("%d entries in %d transactions", entries, txs)
	// The worker removes the queue just after delivering the last outcome.
	wait.Until(t, 5*time.Second, "the worker to remove its queue", func() bool {
		s.combine.mu.Lock()
		defer s.combine.mu.Unlock()
		return len(s.combine.queues) == 0
	})
}

// TestQueuedChangeGivenUpChangesNothing: a change still waiting in the queue
// when its client gives up is answered with the context's error and never
// applied; the change ahead of it, already in a transaction, completes.
func TestQueuedChangeGivenUpChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, _, a := newService(t, 100)
	// Another session holds the row: the first batch waits on it.
	blocker, first := changeBehindHeldRow(t, pool, a.ID, func() error {
		_, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 10, Strategy: StrategyRow})
		return err
	})

	gaveUp, cancel := context.WithCancel(ctx)
	second := make(chan error, 1)
	go func() {
		_, err := s.Withdraw(gaveUp, Change{AccountID: a.ID, Amount: 20, Strategy: StrategyRow})
		second <- err
	}()
	wait.Until(t, 5*time.Second, "the second change to queue", func() bool {
		s.combine.mu.Lock()
		defer s.combine.mu.Unlock()
		return len(s.combine.queues[queueKey{a.ID, StrategyRow}]) == 1
	})
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("the given-up change: %v; want context.Canceled", err)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatalf("the change ahead: %v", err)
	}
	balance, entries, _ := accountState(t, pool, a.ID)
	if balance != 90 || entries != 1 {
		t.Fatalf("balance %d with %d entries; want 90 with 1 (the given-up change never applied)", balance, entries)
	}
}

// changeBehindHeldRow locks account id's row in a transaction of its own
// (blocker) and starts change, which must wait for that row; it returns once
// a session waits for the lock, with the channel change's error will come on.
func changeBehindHeldRow(t *testing.T, pool *pgxpool.Pool, id int64, change func() error) (blocker pgx.Tx, done <-chan error) {
	t.Helper()
	ctx := context.Background()
	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so that a failure below cannot leave the change
	// blocked behind the row for ever.
	t.Cleanup(func() { _ = blocker.Rollback(context.Background()) })
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() { result <- change() }()
	waitForLockWaiter(t, pool)
	return blocker, result
}

// waitForLockWaiter waits until some session of the database waits for a lock.
func waitForLockWaiter(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	wait.Until(t, 10*time.Second, "a session waiting for the row lock", func() bool {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n > 0
	})
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

// TestSessionEndedWhileWaiting: a change whose session is terminated while
// it waits for the row lock changes nothing. In a batch's transaction that is
// certain — COMMIT was never sent — and it is reported as unavailable. A lone
// change's statement commits itself, and a lost session cannot tell whether
// it got that far: its outcome is reported unknown, never as done or not done.
func TestSessionEndedWhileWaiting(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		unknown bool
		change  func(*Service, int64) error
	}{
		{"Batch", false, func(s *Service, id int64) error {
			c := Change{AccountID: id, Amount: 10, Strategy: StrategyRow}
			outs := make([]outcome, 1)
			return s.runBatch(context.Background(), []*pending{{ctx: context.Background(), kind: KindWithdrawal, change: c, hash: requestHash(KindWithdrawal, c)}}, outs, nil)
		}},
		{"Lone", true, func(s *Service, id int64) error {
			_, err := s.Withdraw(context.Background(), Change{AccountID: id, Amount: 10, Strategy: StrategyRow})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, pool, _, a := newService(t, 100)
			blocker, done := changeBehindHeldRow(t, pool, a.ID, func() error { return tt.change(s, a.ID) })
			defer blocker.Rollback(ctx)
			if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if tt.unknown && !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("lone withdrawal whose session was ended: %v; want outcome unknown", err)
			}
			if !tt.unknown && (!IsUnavailable(err) || errors.Is(err, ErrOutcomeUnknown)) {
				t.Fatalf("batch whose session was ended: %v; want unavailable, certainly not committed", err)
			}
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if balance, entries, _ := accountState(t, pool, a.ID); balance != 100 || entries != 0 {
				t.Fatalf("balance %d with %d entries; want 100 with none", balance, entries)
			}
		})
	}
}

// TestLeaseBatchFencedAsOne: a lease batch whose lease was superseded is
// refused by the fence as a whole — nothing is written or recorded, and no
// withdrawal hears of it: the refusal (errLeaseRefused) is for the node,
// which runs the batch again under a fresh lease (TestOwnLeaseRefusedIsRetried).
func TestLeaseBatchFencedAsOne(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, pool, locks, a := newService(t, 100)
	stale, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "paused", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, LeaseResource(a.ID), stale.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := locks.TryAcquire(ctx, LeaseResource(a.ID), "newer", time.Minute); err != nil {
		t.Fatal(err)
	}
	var batch []*pending
	for i := range 3 {
		c := Change{AccountID: a.ID, Amount: 10, Strategy: StrategyLease, IdempotencyKey: fmt.Sprint("k", i)}
		batch = append(batch, &pending{ctx: ctx, kind: KindWithdrawal, change: c, hash: requestHash(KindWithdrawal, c)})
	}
	outs := make([]outcome, len(batch))
	if err := s.runBatch(ctx, batch, outs, stale); !errors.Is(err, errLeaseRefused) || !errors.Is(err, lockmgr.ErrStaleToken) {
		t.Fatalf("a batch under a superseded lease: %v; want errLeaseRefused for a stale token", err)
	}
	for i, out := range outs {
		if out != (outcome{}) {
			t.Errorf("withdrawal %d under a superseded lease: %+v; want no outcome (the batch runs again under a fresh lease)", i, out)
		}
	}
	balance, entries, keys := accountState(t, pool, a.ID)
	if balance != 100 || entries != 0 || keys != 0 {
		t.Fatalf("after a fenced batch: balance %d, %d entries, %d keys; want 100, 0, 0", balance, entries, keys)
	}
}

// TestOneAccountPerTransaction is invariant 8 under the combining: many
// clients on a few accounts, row and lease, deposits and withdrawals — every
// change lands on its own account (its entry names it, and each account's
// balance is its opening plus exactly the changes sent to it), and no
// transaction's ledger entries span two accounts.
func TestOneAccountPerTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	s := NewService(pool, Options{Locks: locks, LeaseWait: time.Minute})
	const opening = 1_000_000
	var ids []int64
	for range 3 {
		a, err := s.Create(ctx, "alice", opening)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	var mu sync.Mutex
	sent := map[int64]int64{} // account → the net change sent to it
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 48 {
		wg.Go(func() {
			<-start
			for j := range 10 {
				// Amounts differ per account, so a change applied to the
				// wrong one shows in the balances.
				id := ids[(i+j)%len(ids)]
				c := Change{AccountID: id, Amount: 7 + id%int64(len(ids)), Strategy: []Strategy{StrategyRow, StrategyLease}[i%2]}
				var (
					res Result
					err error
				)
				delta := -c.Amount
				if j%3 == 0 {
					c.Strategy, delta = "", c.Amount
					res, err = s.Deposit(ctx, c)
				} else {
					res, err = s.Withdraw(ctx, c)
				}
				if err != nil {
					t.Error(err)
					continue
				}
				if res.Entry.AccountID != id {
					t.Errorf("a change to account %d was written to account %d", id, res.Entry.AccountID)
				}
				mu.Lock()
				sent[id] += delta
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, id := range ids {
		if balance, _, _ := accountState(t, pool, id); balance != opening+sent[id] {
			t.Errorf("account %d: balance %d, want %d (opening + the changes sent to it)", id, balance, opening+sent[id])
		}
	}
	var entries, txs, spanning int64
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT xmin::text),
		(SELECT count(*) FROM (SELECT xmin::text FROM ledger_entries GROUP BY 1 HAVING count(DISTINCT account_id) > 1) x)
		FROM ledger_entries`).Scan(&entries, &txs, &spanning); err != nil {
		t.Fatal(err)
	}
	if entries != 480 || spanning != 0 {
		t.Fatalf("%d entries in %d transactions, %d of them spanning accounts; want 480 entries and none spanning", entries, txs, spanning)
	}
	t.Logf("480 entries in %d transactions, each on one account", txs)
}

// newService returns a Service with a lock manager on a fresh database, and
// an account opened with balance.
func newService(t *testing.T, balance int64) (*Service, *pgxpool.Pool, *lockmgr.Manager, Account) {
	t.Helper()
	pool := pgtest.New(t)
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	s := NewService(pool, Options{Locks: locks, LeaseWait: time.Minute})
	a, err := s.Create(context.Background(), "alice", balance)
	if err != nil {
		t.Fatal(err)
	}
	return s, pool, locks, a
}

// accountState reads account id's balance and how many ledger entries and
// idempotency records it has.
func accountState(t *testing.T, pool *pgxpool.Pool, id int64) (balance, entries, keys int64) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT (SELECT balance FROM accounts WHERE id = $1),
		(SELECT count(*) FROM ledger_entries WHERE account_id = $1), (SELECT count(*) FROM idempotency_keys WHERE account_id = $1)`,
		id).Scan(&balance, &entries, &keys); err != nil {
		t.Fatal(err)
	}
	return balance, entries, keys
}

// statementCounter counts the round trips a pool makes: single statements
// and pipelines (pgx.Batch).
type statementCounter struct{ n, batches atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	c.batches.Add(1)
	return ctx
}

func (c *statementCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (c *statementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TestLoneChangeIsOneStatement: a change on an account nobody else is
// changing is one statement, keyed or not; what that statement cannot
// decide — a refusal, a stored outcome, a missing account — falls back to
// the batch path and is answered as before.
func TestLoneChangeIsOneStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	var counter statementCounter
	cfg.ConnConfig.Tracer = &counter
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := NewService(pool, Options{})
	a, err := s.Create(ctx, "alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	// run makes change c and reports its round trips, and whether the batch
	// path (pipelines) decided it.
	run := func(c Change, deposit bool) (r Result, err error, trips int64, batchPath bool) {
		trips, batches := counter.n.Load(), counter.batches.Load()
		c.AccountID, c.Strategy = a.ID, StrategyRow
		if deposit {
			r, err = s.Deposit(ctx, c)
		} else {
			r, err = s.Withdraw(ctx, c)
		}
		return r, err, counter.n.Load() - trips, counter.batches.Load() > batches
	}
	if r, err, n, batched := run(Change{Amount: 30}, false); err != nil || n != 1 || batched || r.Entry.Balance != 70 {
		t.Fatalf("lone withdrawal: %+v %v in %d round trips (batch path %v); want balance 70 in 1 statement", r.Entry, err, n, batched)
	}
	if r, err, n, batched := run(Change{Amount: 5, IdempotencyKey: "k"}, true); err != nil || n != 1 || batched || r.Entry.Balance != 75 {
		t.Fatalf("lone keyed deposit: %+v %v in %d round trips (batch path %v); want balance 75 in 1 statement", r.Entry, err, n, batched)
	}
	if r, err, _, batched := run(Change{Amount: 5, IdempotencyKey: "k"}, true); err != nil || !r.Replayed || r.Entry.Balance != 75 || !batched {
		t.Fatalf("retried deposit: %+v %v (batch path %v); want the stored entry replayed by the batch path", r, err, batched)
	}
	var e *Error
	if _, err, _, batched := run(Change{Amount: 76}, false); !errors.As(err, &e) || e.Code != CodeInsufficientFunds ||
		e.Message != "balance 75 is less than the amount 76" || !batched {
		t.Fatalf("overdraft: %v (batch path %v); want %s from the batch path", err, batched, CodeInsufficientFunds)
	}
	if _, err := s.Withdraw(ctx, Change{AccountID: a.ID + 1, Amount: 1, Strategy: StrategyRow}); !errors.As(err, &e) || e.Code != CodeAccountNotFound {
		t.Fatalf("missing account: %v; want %s", err, CodeAccountNotFound)
	}
	if balance, entries, keys := accountState(t, pool, a.ID); balance != 75 || entries != 2 || keys != 1 {
		t.Fatalf("balance %d, %d entries, %d keys; want 75, 2, 1", balance, entries, keys)
	}
}
