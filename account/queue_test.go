package account

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

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
