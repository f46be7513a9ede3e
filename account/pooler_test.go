package account

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgbouncer"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestTxTimeoutsBehindPgBouncer: behind a pooler in transaction mode, where
// no setting can be given at connect, the Service bounds its own
// transactions' lock waits (TxTimeouts, SET LOCAL): a change behind a held
// row lock is answered lock_timeout quickly, and afterwards no server
// connection keeps the setting.
func TestTxTimeoutsBehindPgBouncer(t *testing.T) {
	t.Parallel()
	if _, err := pgbouncer.Binary(); err != nil {
		t.Skipf("no PgBouncer to test behind: %v", err)
	}
	direct := pgtest.URL(t)
	b, err := pgbouncer.Start(context.Background(), pgbouncer.Options{Backend: direct, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	dcfg, err := pgconn.ParseConfig(direct)
	if err != nil {
		t.Fatal(err)
	}
	pooled := pgtest.Pool(t, b.URL(dcfg.Database), "bankd pooled")
	locks := lockmgr.New(pooled, lockmgr.Options{NoListen: true})
	t.Cleanup(locks.Close)
	s := NewService(pooled, Options{Locks: locks, TxTimeouts: TxTimeouts{Lock: 300 * time.Millisecond, IdleInTransaction: 5 * time.Second}})
	ctx := context.Background()
	a, err := s.Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}

	blocker, err := pgtest.Pool(t, direct, "blocker").Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(context.Background())
	if _, err := blocker.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}
	// A fencing token sends the change down the batch path: its own
	// transaction, whose FOR UPDATE waits for the blocker.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = s.Withdraw(wctx, Change{AccountID: a.ID, Amount: 1, Strategy: StrategyRow, FenceToken: 1})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeLockTimeout {
		t.Fatalf("withdrawal behind a held row: %v after %s; want %s after about 300ms", err, time.Since(start), CodeLockTimeout)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("lock_timeout answered after %s; want about 300ms", d)
	}
	_ = blocker.Rollback(ctx)
	// And one that commits (refused by the fence, which records nothing,
	// but its transaction ends in COMMIT): a setting that outlived its
	// transaction would now be on a server connection.
	if _, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: 1, Strategy: StrategyRow, FenceToken: 1}); err == nil {
		t.Fatal("a withdrawal with a fencing token never issued was accepted")
	}

	// Both server connections, held at once: neither kept the setting.
	for range 2 {
		tx, err := pooled.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		var lockTimeout string
		if err := tx.QueryRow(ctx, "SHOW lock_timeout").Scan(&lockTimeout); err != nil {
			t.Fatal(err)
		}
		if lockTimeout != "0" {
			t.Fatalf("a server connection kept lock_timeout = %s after the Service's transaction: it leaked", lockTimeout)
		}
	}
}
