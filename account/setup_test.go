package account

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

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
