package lockmgr_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgbouncer"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// Behind PgBouncer in transaction mode: each transaction of a client may run
// on another server connection. The pooler here has 2 server connections
// for many clients, so that they really do.

// bounced returns the direct URL of a fresh database and its URL through a
// private PgBouncer (exec mode: nothing prepared on the server).
func bounced(t *testing.T) (direct, pooled string) {
	t.Helper()
	if _, err := pgbouncer.Binary(); err != nil {
		t.Skipf("no PgBouncer to test behind: %v", err)
	}
	direct = pgtest.URL(t)
	// The test server runs with synchronous_commit off; on for this
	// database's sessions, so that a release's transaction-local off would
	// show if it outlived its transaction. Before the pooler opens any.
	conn, err := pgx.Connect(context.Background(), direct)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(context.Background(), "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$")
	conn.Close(context.Background())
	if err != nil {
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
	return direct, b.URL(cfg.Database)
}

func pooledManager(t *testing.T, pooled, direct, name string, opts lockmgr.Options) *lockmgr.Manager {
	t.Helper()
	pool := pgtest.Pool(t, pooled, name)
	if direct != "" {
		c, err := pgx.ParseConfig(direct)
		if err != nil {
			t.Fatal(err)
		}
		opts.Listen = c
	}
	m := lockmgr.New(pool, opts)
	t.Cleanup(m.Close)
	return m
}

// TestBehindPgBouncer: three Managers whose pools go through the pooler grant,
// fence and release one resource among many callers with no error (pgx's
// default mode would fail with "prepared statement … already exists"),
// tokens strictly increase, and nothing a Manager set is left on the
// server connections (a release's synchronous_commit is transaction-local).
func TestBehindPgBouncer(t *testing.T) {
	t.Parallel()
	direct, pooled := bounced(t)
	ms := make([]*lockmgr.Manager, 3)
	for i := range ms {
		ms[i] = pooledManager(t, pooled, direct, fmt.Sprintf("m%d", i), lockmgr.Options{})
	}
	pool := pgtest.Pool(t, pooled, "observer")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const callers, rounds = 6, 15
	var (
		mu     sync.Mutex
		tokens []int64
		errs   []error
		wg     sync.WaitGroup
		start  = make(chan struct{})
	)
	for c := range callers {
		wg.Go(func() {
			<-start
			m := ms[c%len(ms)]
			for range rounds {
				l, err := m.Acquire(ctx, "bounced", fmt.Sprintf("c%d", c), 10*time.Second)
				if err == nil {
					err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
						return m.CheckFence(ctx, tx, "bounced", l.Token)
					})
					mu.Lock()
					tokens = append(tokens, l.Token)
					mu.Unlock()
					if rerr := m.Release(ctx, "bounced", l.ID); err == nil {
						err = rerr
					}
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d callers failed behind the pooler, first: %v", len(errs), errs[0])
	}
	if len(tokens) != callers*rounds {
		t.Fatalf("%d grants, want %d", len(tokens), callers*rounds)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("grant %d has token %d after %d: tokens must strictly increase", i, tokens[i], tokens[i-1])
		}
	}
	// Both server connections are asked: two transactions held open
	// together each hold one.
	for range 2 {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		var sync string
		if err := tx.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if sync != "on" {
			t.Fatalf("a server connection kept synchronous_commit = %s after lockmgr's releases: a setting leaked out of its transaction", sync)
		}
	}
}

// TestBehindPgBouncerWakesThroughDirectListen: with the pool behind the
// pooler and LISTEN on a direct connection, a waiter in one Manager is woken
// by a release in another long before the lease would run out.
func TestBehindPgBouncerWakesThroughDirectListen(t *testing.T) {
	t.Parallel()
	direct, pooled := bounced(t)
	holder := pooledManager(t, pooled, direct, "holder", lockmgr.Options{})
	waiter := pooledManager(t, pooled, direct, "waiter", lockmgr.Options{})
	ctx := context.Background()
	l, err := holder.TryAcquire(ctx, "wake", "holder", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		l, err := waiter.Acquire(wctx, "wake", "waiter", time.Minute)
		if err == nil {
			err = waiter.Release(ctx, "wake", l.ID)
		}
		got <- err
	}()
	wait.Until(t, 10*time.Second, "the waiter registered", func() bool { return lockmgr.Registered(waiter, "wake") })
	released := time.Now()
	if err := holder.Release(ctx, "wake", l.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter was not woken by the release (lease of a minute): %v", err)
	}
	if d := time.Since(released); d > 5*time.Second {
		t.Fatalf("the waiter took %s after the release", d)
	}
}

// TestBehindPgBouncerWithoutListen: with no direct connection (NoListen) the
// Manager says so in its log, and a waiter still gets the lease — at its
// expiry, not at another process's release, which it cannot hear.
func TestBehindPgBouncerWithoutListen(t *testing.T) {
	t.Parallel()
	_, pooled := bounced(t)
	var logged bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logged.Write(p)
	}), nil))
	holder := pooledManager(t, pooled, "", "holder", lockmgr.Options{NoListen: true})
	waiter := pooledManager(t, pooled, "", "waiter", lockmgr.Options{NoListen: true, Logger: logger})
	logMu.Lock()
	line := logged.String()
	logMu.Unlock()
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "no direct connection for LISTEN") {
		t.Fatalf("New with NoListen logged %q; want a warning that waiters wake at expiry", line)
	}
	ctx := context.Background()
	const ttl = 1500 * time.Millisecond
	l, err := holder.TryAcquire(ctx, "deaf", "holder", ttl)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := waiter.Acquire(wctx, "deaf", "waiter", time.Second)
		got <- err
	}()
	wait.Until(t, 10*time.Second, "the waiter in line", func() bool { return lockmgr.Waiting(waiter, "deaf") == 1 })
	if err := holder.Release(ctx, "deaf", l.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter never got the lease: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
