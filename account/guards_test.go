package account

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// Each guard of the write paths, met by the interleaving it guards against,
// made certain: the node under test pauses just before the guarded statement
// while another node commits a change to the same account.

// pauseBefore is a pgx tracer that runs during, once, just before the first
// statement whose SQL contains match is sent.
type pauseBefore struct {
	match  string
	during func()
	once   sync.Once
}

func (p *pauseBefore) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, p.match) {
		p.once.Do(p.during)
	}
	return ctx
}

func (p *pauseBefore) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart pauses before a pipeline that holds a matching statement.
func (p *pauseBefore) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	for _, q := range d.Batch.QueuedQueries {
		if strings.Contains(q.SQL, p.match) {
			p.once.Do(p.during)
			break
		}
	}
	return ctx
}

func (p *pauseBefore) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (p *pauseBefore) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// guardedPair returns a Service (node-a) whose pool runs tracer, another
// (node-b) on its own pool, and an account of 1000 opened through node-b.
func guardedPair(t *testing.T, opts Options, tracer pgx.QueryTracer) (a, b *Service, pool *pgxpool.Pool, id int64) {
	t.Helper()
	url := pgtest.URL(t)
	poolA := pgtest.Configured(t, url, func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = tracer })
	poolB := pgtest.Pool(t, url, "node-b")
	newNode := func(pool *pgxpool.Pool, name string) *Service {
		locks := lockmgr.New(pool, lockmgr.Options{})
		t.Cleanup(locks.Close)
		o := opts
		o.Locks, o.Node = locks, name
		return NewService(pool, o)
	}
	a, b = newNode(poolA, "node-a"), newNode(poolB, "node-b")
	acct, err := b.Create(context.Background(), "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, poolB, acct.ID
}

// keepLease gives s a kept lease of account id (as a batch with more work
// behind it would leave), so that s's next lease withdrawal on it is a lease
// batch — read, then a write guarded by the balance read — not the lone
// pipeline, whose single statement checks the funds where it writes.
func keepLease(t *testing.T, s *Service, id int64) {
	t.Helper()
	lease, err := s.locks.TryAcquire(context.Background(), LeaseResource(id), s.node, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s.sticky.idle = time.Minute
	s.keep(id, lease)
}

// checkLedgerChain asserts invariant 1 on account id: each entry's balance
// follows from the one before, from the opening balance to the balance.
func checkLedgerChain(t *testing.T, pool *pgxpool.Pool, id int64) {
	t.Helper()
	var broken []string
	var last int64 = -1
	rows, _ := pool.Query(context.Background(), `
		SELECT e.id, e.balance_after,
		       a.opening_balance + sum(CASE e.kind WHEN 'deposit' THEN e.amount ELSE -e.amount END) OVER (ORDER BY e.id)
		FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
		WHERE e.account_id = $1 ORDER BY e.id`, id)
	for rows.Next() {
		var entryID, after, implied int64
		if err := rows.Scan(&entryID, &after, &implied); err != nil {
			t.Fatal(err)
		}
		if after != implied {
			broken = append(broken, fmt.Sprintf("entry %d says %d, the ledger implies %d", entryID, after, implied))
		}
		last = implied
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var balance int64
	if err := pool.QueryRow(context.Background(), `SELECT balance FROM accounts WHERE id = $1`, id).Scan(&balance); err != nil {
		t.Fatal(err)
	}
	if last >= 0 && balance != last {
		broken = append(broken, fmt.Sprintf("the balance is %d, the ledger implies %d", balance, last))
	}
	if len(broken) > 0 {
		t.Fatalf("the money does not add up: %s", strings.Join(broken, "; "))
	}
}

// TestLeaseBatchGuardsAgainstRowWriters: a lease batch reads the balance
// without a row lock; a row deposit (which takes no lease) commits between
// that read and the batch's write. The write's balance guard must refuse the
// stale balance so that the batch reads again, instead of writing entries
// computed from the old one.
func TestLeaseBatchGuardsAgainstRowWriters(t *testing.T) {
	t.Parallel()
	tracer := &pauseBefore{match: "INSERT INTO ledger_entries"} // the write's pipeline, after the batch's read
	a, b, pool, id := guardedPair(t, Options{LeaseWait: time.Minute}, tracer)
	keepLease(t, a, id)
	tracer.during = func() {
		if _, err := b.Deposit(context.Background(), Change{AccountID: id, Amount: 50}); err != nil {
			t.Errorf("deposit between the read and the write: %v", err)
		}
	}
	res, err := a.Withdraw(context.Background(), Change{AccountID: id, Amount: 100, Strategy: StrategyLease})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entry.Balance != 950 {
		t.Fatalf("the withdrawal's entry says the balance became %d; want 950 (1000 + 50 deposited meanwhile - 100)", res.Entry.Balance)
	}
	checkLedgerChain(t, pool, id)
}

// TestLeaseWriteGuardsAgainstRowWriters: the same for a lease withdrawal that
// goes alone (a demo hold): its absolute write must land only if the balance
// is still the one it read.
func TestLeaseWriteGuardsAgainstRowWriters(t *testing.T) {
	t.Parallel()
	tracer := &pauseBefore{match: "AND balance = $3"} // the lease strategy's absolute write
	a, b, pool, id := guardedPair(t, Options{LeaseWait: time.Minute, UnsafeDemo: true}, tracer)
	tracer.during = func() {
		if _, err := b.Deposit(context.Background(), Change{AccountID: id, Amount: 50}); err != nil {
			t.Errorf("deposit between the read and the write: %v", err)
		}
	}
	res, err := a.Withdraw(context.Background(), Change{AccountID: id, Amount: 100, Strategy: StrategyLease, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entry.Balance != 950 {
		t.Fatalf("the withdrawal's entry says the balance became %d; want 950 (1000 + 50 deposited meanwhile - 100)", res.Entry.Balance)
	}
	checkLedgerChain(t, pool, id)
}

// TestSameKeyNeverTwiceInABatch: twenty withdrawals with one new
// Idempotency-Key on two nodes queue behind a change that waits for the row,
// so each node's next batch is drawn from a queue full of that key. It
// must take the key once and replay it for the rest: one withdrawal, 19
// replays, one entry.
func TestSameKeyNeverTwiceInABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	observer := pgtest.Pool(t, url, "observer")
	var nodes []*Service
	for i := range 2 {
		nodes = append(nodes, NewService(pgtest.Pool(t, url, fmt.Sprint("node-", i)), Options{}))
	}
	acct, err := nodes[0].Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := observer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, acct.ID); err != nil {
		t.Fatal(err)
	}
	queued := func(s *Service) int {
		s.combine.mu.Lock()
		defer s.combine.mu.Unlock()
		q, busy := s.combine.queues[queueKey{acct.ID, StrategyRow}]
		if !busy {
			return -1
		}
		return len(q)
	}

	// A plug on each node: a deposit that waits for the held row.
	var wg sync.WaitGroup
	for i, s := range nodes {
		wg.Go(func() {
			if _, err := s.Deposit(ctx, Change{AccountID: acct.ID, Amount: 1, IdempotencyKey: fmt.Sprint("plug-", i)}); err != nil {
				t.Errorf("plug: %v", err)
			}
		})
	}
	for _, s := range nodes {
		wait.Until(t, 10*time.Second, "the plug to be applying", func() bool { return queued(s) == 0 })
	}
	const clients = 20
	start := make(chan struct{})
	results := make(chan Result, clients)
	for i := range clients {
		wg.Go(func() {
			<-start
			res, err := nodes[i%2].Withdraw(ctx, Change{AccountID: acct.ID, Amount: 100, Strategy: StrategyRow, IdempotencyKey: "same"})
			if err != nil {
				t.Errorf("Withdraw: %v", err)
				return
			}
			results <- res
		})
	}
	close(start)
	for _, s := range nodes {
		wait.Until(t, 10*time.Second, "ten changes queued on each node", func() bool { return queued(s) == clients/2 })
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	fresh, replayed := 0, 0
	for res := range results {
		if res.Replayed {
			replayed++
		} else {
			fresh++
		}
	}
	balance, entries, _ := accountState(t, observer, acct.ID)
	if fresh != 1 || replayed != clients-1 || balance != 902 || entries != 3 {
		t.Fatalf("%d applied, %d replayed, balance %d, %d entries; want 1, %d, 902 (1000 + 2 plugs - 100), 3", fresh, replayed, balance, entries, clients-1)
	}
}
