package main

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/pgbouncer"
	"github.com/lockbank/lockbank/internal/pgtest"
)

// TestPoolerWithoutDirectConnection: bankd with --pooler and only the
// pooler's URL (no default_query_exec_mode in it, no --listen-database-url)
// starts — migrating under goose's lock table, since a session advisory lock
// cannot live behind the pooler — says at start that waiters wake at expiry
// and that single statements get the server's default timeouts, and serves
// concurrent row and lease withdrawals with no error (pgx's default prepared
// statements would collide on the pooler's server connections).
func TestPoolerWithoutDirectConnection(t *testing.T) {
	t.Parallel()
	if _, err := pgbouncer.Binary(); err != nil {
		t.Skipf("no PgBouncer to run behind: %v", err)
	}
	direct := pgtest.URL(t)
	// An empty database, so that bankd really migrates it through the pooler.
	conn, err := pgx.Connect(context.Background(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `DROP SCHEMA public CASCADE; CREATE SCHEMA public`); err != nil {
		t.Fatal(err)
	}
	b, err := pgbouncer.Start(context.Background(), pgbouncer.Options{Backend: direct, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	cfg, err := pgconn.ParseConfig(direct)
	if err != nil {
		t.Fatal(err)
	}
	pooled := strings.Replace(b.URL(cfg.Database), "&default_query_exec_mode=exec", "", 1)
	node := startBankd(t, map[string]string{"DATABASE_URL": pooled}, "--pooler")
	for _, want := range []string{"no direct connection for LISTEN", "single statements get the server's defaults"} {
		if !strings.Contains(node.logs.String(), want) {
			t.Fatalf("bankd's start log lacks %q:\n%s", want, node.logs)
		}
	}
	var lockTable bool
	if err := conn.QueryRow(context.Background(), `SELECT to_regclass('goose_lock') IS NOT NULL`).Scan(&lockTable); err != nil || !lockTable {
		t.Fatalf("goose_lock exists: %v (%v); want the migrations serialised by goose's lock table", lockTable, err)
	}

	acct := createAccount(t, node.api, "alice", 10_000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	start := make(chan struct{})
	for i := range 40 {
		wg.Go(func() {
			<-start
			strategy := "row"
			if i%2 == 1 {
				strategy = "lease"
			}
			o := withdraw(node.api, acct.ID, client.Withdrawal{Amount: 100, Strategy: strategy})
			mu.Lock()
			statuses[o.status]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if statuses[201] != 40 {
		t.Fatalf("statuses %v behind the pooler; want 40×201", statuses)
	}
	if got := getAccount(t, node.api, acct.ID); got.Balance != 6000 || len(ledger(t, node.api, acct.ID)) != 40 {
		t.Fatalf("balance %d, want 6000 with 40 entries", got.Balance)
	}
}
