package lockmgr_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/migrations"
)

// TestTokensSurvivePostgresCrash: PostgreSQL stops the way a crash stops it
// (immediate shutdown: no checkpoint, recovery on the next start). The lease
// granted before the crash is still there afterwards, and the next grant's
// token is above every token handed out before.
func TestTokensSurvivePostgresCrash(t *testing.T) {
	if _, err := pglocal.FindBinDir(); err != nil {
		t.Skip("needs the PostgreSQL server binaries:", err)
	}
	t.Parallel()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "lockmgr-crash-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the server may run as the postgres OS user
		t.Fatal(err)
	}
	start := func() (*pglocal.Server, *pgxpool.Pool, *lockmgr.Manager) {
		t.Helper()
		srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(dir, "data")})
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pgxpool.New(ctx, srv.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		return srv, pool, lockmgr.New(pool, lockmgr.Options{})
	}

	srv, pool, m := start()
	db := stdlib.OpenDBFromPool(pool)
	if _, err := migrations.Up(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var last int64
	for range 5 { // several grants, so the sequence has handed out values since its last WAL record
		l, err := m.TryAcquire(ctx, "res:crash", "before", 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		last = l.Token
		if err := m.Release(ctx, l.Resource, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	held, err := m.TryAcquire(ctx, "res:held", "before", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	pool.Close()
	if err := srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}

	srv, pool, m = start()
	t.Cleanup(func() { m.Close(); pool.Close(); _ = srv.Stop(context.Background()) })
	if s, err := m.Get(ctx, "res:held"); err != nil || !s.Held || s.Token != held.Token {
		t.Fatalf("after the crash: %+v, %v; want the live lease (token %d) kept", s, err, held.Token)
	}
	next, err := m.TryAcquire(ctx, "res:crash", "after", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next.Token <= last || next.Token <= held.Token {
		t.Fatalf("token %d after the crash; before it %d and %d were handed out: tokens must never go back", next.Token, last, held.Token)
	}
}
