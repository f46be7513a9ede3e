package web_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/migrations"
)

// TestDatabaseRefusingConnections: a database that takes no new sessions —
// every slot taken (53300 too_many_connections), or shutting down
// (57P03 cannot_connect_now, as when starting up) — leaves bankd nothing to
// run a request on. Every call, read or change, answers 503
// database_unavailable, and nothing changes. The test runs a PostgreSQL of
// its own, since it fills up and stops the server.
func TestDatabaseRefusingConnections(t *testing.T) {
	if _, err := pglocal.FindBinDir(); err != nil {
		t.Skip("needs the PostgreSQL server binaries:", err)
	}
	t.Parallel()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "web-refusing-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the server may run as the postgres OS user
		t.Fatal(err)
	}
	srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(dir, "data"),
		Settings: []string{"max_connections=8", "superuser_reserved_connections=0", "fsync=off"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	url := srv.URL("postgres")

	// An account and a lock, made while the server still takes sessions.
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(admin)
	if _, err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a, err := account.NewService(admin, account.Options{}).Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	adminLocks := lockmgr.New(admin, lockmgr.Options{})
	printer, err := adminLocks.TryAcquire(ctx, "printer:1", "node-a", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	adminLocks.Close()
	admin.Close()

	pool, err := pgxpool.New(ctx, url) // bankd's, with no session yet
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b := serve(t, account.Options{LeaseWait: time.Second}, pool, nil)
	requests := []request{
		{"GET", "/readyz", nil, ``},
		{"GET", accountPath(a.ID, ""), nil, ``},
		{"GET", accountPath(a.ID, "/ledger"), nil, ``},
		{"POST", "/v1/accounts", nil, `{"owner":"bob","balance":1}`},
		{"POST", accountPath(a.ID, "/deposits"), nil, `{"amount":1}`},
		{"POST", accountPath(a.ID, "/withdrawals"), nil, `{"amount":1}`},
		{"POST", accountPath(a.ID, "/withdrawals"), nil, `{"amount":1,"strategy":"lease"}`},
		{"GET", "/v1/locks", nil, ``},
		{"GET", "/v1/locks/printer:1", nil, ``},
		{"POST", "/v1/locks/printer:2", nil, `{"holder":"node-b","ttl_ms":1000}`},
		renewRequest("printer:1", printer.ID),
		releaseRequest("printer:1", printer.ID),
	}
	everyCallUnavailable := func(why string) {
		t.Helper()
		for _, req := range requests {
			wantProblem(t, why+": "+req.method+" "+req.path, b.do(t, req), 503, "database_unavailable")
		}
	}

	// Take every session the server has.
	var sessions []*pgx.Conn
	t.Cleanup(func() {
		for _, c := range sessions {
			c.Close(context.Background())
		}
	})
	for {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			if sqlstate(err) != "53300" {
				t.Fatalf("connection %d: %v; want 53300 too_many_connections", len(sessions)+1, err)
			}
			break
		}
		sessions = append(sessions, c)
		if len(sessions) > 20 {
			t.Fatal("the server took 20 sessions with max_connections=8")
		}
	}
	everyCallUnavailable("max_connections reached")

	// Keep one session, so that a smart shutdown waits and refuses new ones.
	for _, c := range sessions[1:] {
		c.Close(ctx)
	}
	sessions = sessions[:1]
	if err := srv.BeginSmartShutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			c.Close(ctx) // the postmaster has not seen the request yet
		} else if sqlstate(err) == "57P03" {
			break
		} else {
			t.Fatalf("connect during a smart shutdown: %v; want 57P03 cannot_connect_now", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server kept taking sessions after a smart shutdown")
		}
	}
	everyCallUnavailable("shutting down")

	var balance, entries, leases int64
	if err := sessions[0].QueryRow(ctx, `SELECT balance, (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM leases)
		FROM accounts WHERE id = $1`, a.ID).Scan(&balance, &entries, &leases); err != nil {
		t.Fatal(err)
	}
	if balance != 1000 || entries != 0 || leases != 1 {
		t.Fatalf("balance %d, %d entries, %d leases; want 1000, 0, 1: nothing changed", balance, entries, leases)
	}
}

// sqlstate is the SQLSTATE of err, or "".
func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
