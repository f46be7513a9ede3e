package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// slowFirst counts the statements a pool sends and, once armed, holds the
// next one back before sending it, so that the calls started meanwhile
// queue behind a statement in flight — the moment a combiner batches.
type slowFirst struct {
	n     atomic.Int64
	armed atomic.Bool
}

func (s *slowFirst) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	s.n.Add(1)
	if s.armed.CompareAndSwap(true, false) {
		time.Sleep(200 * time.Millisecond)
	}
	return ctx
}

func (s *slowFirst) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// combining returns a Manager with CombineGrants on a fresh database, the
// tracer on its pool, and a plain pool for looking.
func combining(t *testing.T, configure func(*pgxpool.Config)) (*lockmgr.Manager, *slowFirst, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.URL(t)
	tr := &slowFirst{}
	pool := pgtest.Configured(t, url, func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = tr
		c.MaxConns = 40
		configure(c)
	})
	// No listener: its statements would go through the tracer too.
	m := lockmgr.New(pool, lockmgr.Options{CombineGrants: true, NoListen: true})
	t.Cleanup(m.Close)
	return m, tr, pgtest.Configured(t, url, func(*pgxpool.Config) {})
}

// together runs f(i) for i < n in goroutines released at once, with the
// tracer armed, and returns how many statements they sent.
func together(tr *slowFirst, n int, f func(i int)) int64 {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			f(i)
		})
	}
	before := tr.n.Load()
	tr.armed.Store(true)
	close(start)
	wg.Wait()
	tr.armed.Store(false)
	return tr.n.Load() - before
}

// TestCombinedGrantsAndReleases: concurrent grants of different resources
// share statements, each gets a distinct token and a lease the database
// agrees with; their releases share statements too and release every one.
func TestCombinedGrantsAndReleases(t *testing.T) {
	t.Parallel()
	m, tr, look := combining(t, func(*pgxpool.Config) {})
	ctx := context.Background()
	const n = 24
	leases := make([]*lockmgr.Lease, n)
	errs := make([]error, n)
	stmts := together(tr, n, func(i int) {
		leases[i], errs[i] = m.TryAcquire(ctx, fmt.Sprintf("res:c%d", i), fmt.Sprintf("h%d", i), time.Minute)
	})
	tokens := map[int64]bool{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("grant %d: %v", i, errs[i])
		}
		if tokens[l.Token] {
			t.Fatalf("token %d granted twice", l.Token)
		}
		tokens[l.Token] = true
		s, err := lockmgr.New(look, lockmgr.Options{NoListen: true}).Get(ctx, l.Resource)
		if err != nil || !s.Held || s.Token != l.Token || s.Holder != fmt.Sprintf("h%d", i) {
			t.Fatalf("grant %d: %+v, database says %+v (%v)", i, l, s, err)
		}
		if err := pgx.BeginFunc(ctx, look, func(tx pgx.Tx) error {
			return lockmgr.CheckFence(ctx, tx, l.Resource, l.Token)
		}); err != nil {
			t.Fatalf("grant %d: fence refuses its own token: %v", i, err)
		}
	}
	if stmts >= n {
		t.Fatalf("%d grants took %d statements: none shared", n, stmts)
	}
	t.Logf("%d grants in %d statements", n, stmts)

	stmts = together(tr, n, func(i int) { errs[i] = m.Release(ctx, leases[i].Resource, leases[i].ID) })
	for i, err := range errs {
		if err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		if s, err := m.Get(ctx, leases[i].Resource); err != nil || s.Held {
			t.Fatalf("release %d: still %+v (%v)", i, s, err)
		}
	}
	if stmts >= n {
		t.Fatalf("%d releases took %d statements: none shared", n, stmts)
	}
	t.Logf("%d releases in %d statements", n, stmts)
}

// TestCombinedSameResourceNotShared: requests for one resource never share a
// statement: one holder among them, each asked alone; releasing one lease
// from many goroutines at once succeeds for all (releasing twice is
// harmless), which a shared statement would get wrong.
func TestCombinedSameResourceNotShared(t *testing.T) {
	t.Parallel()
	m, tr, _ := combining(t, func(*pgxpool.Config) {})
	ctx := context.Background()
	const n = 8
	var granted atomic.Int64
	var lease atomic.Pointer[lockmgr.Lease]
	errs := make([]error, n)
	stmts := together(tr, n, func(i int) {
		l, err := m.TryAcquire(ctx, "res:same", fmt.Sprintf("h%d", i), time.Minute)
		switch {
		case err == nil:
			granted.Add(1)
			lease.Store(l)
		case !errors.Is(err, lockmgr.ErrHeld):
			errs[i] = err
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if granted.Load() != 1 {
		t.Fatalf("%d holders of one resource, want 1", granted.Load())
	}
	if stmts < n {
		t.Fatalf("%d requests for one resource took %d statements: some shared one", n, stmts)
	}
	l := lease.Load()
	stmts = together(tr, n, func(i int) { errs[i] = m.Release(ctx, "res:same", l.ID) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("releasing one lease %d times at once: %v", n, err)
	}
	if stmts < n {
		t.Fatalf("%d releases of one lease took %d statements: some shared one", n, stmts)
	}
}

// TestCombinedFailureStaysAlone: a request whose statement fails (its lease
// row kept locked by a fenced writer past lock_timeout) does not fail the
// requests it was batched with, grants or releases: they are asked again
// alone.
func TestCombinedFailureStaysAlone(t *testing.T) {
	t.Parallel()
	m, tr, look := combining(t, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["lock_timeout"] = "300" })
	ctx := context.Background()
	const n = 8
	res := func(i int) string { return fmt.Sprintf("res:f%d", i) }

	// Resource 0: a lease with its row locked by a fenced write in flight.
	fence := func(l *lockmgr.Lease) pgx.Tx {
		tx, err := look.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		if err := lockmgr.CheckFence(ctx, tx, l.Resource, l.Token); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	// Long enough for the fence to find it live on a loaded machine (it
	// failed so at 100 ms), short enough to run out while the fence waits.
	short := mustAcquire(t, m, res(0), "old", time.Second)
	tx := fence(short)
	wait.Until(t, 10*time.Second, "the fenced lease to run out", func() bool {
		s, err := m.Get(ctx, res(0))
		return err == nil && !s.Held
	})
	leases := make([]*lockmgr.Lease, n)
	errs := make([]error, n)
	together(tr, n, func(i int) { leases[i], errs[i] = m.TryAcquire(ctx, res(i), "new", time.Minute) })
	if !errors.Is(errs[0], lockmgr.ErrHeld) {
		t.Fatalf("grant behind the fenced writer: %v, want ErrHeld", errs[0])
	}
	for i := 1; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("grant %d failed with its batch-mate: %v", i, errs[i])
		}
	}
	_ = tx.Rollback(ctx)

	// Releases: resource 0 held again, its row locked by a fenced write.
	leases[0] = mustAcquire(t, m, res(0), "new", time.Minute)
	fence(leases[0])
	together(tr, n, func(i int) { errs[i] = m.Release(ctx, res(i), leases[i].ID) })
	if !errors.Is(errs[0], lockmgr.ErrBusy) {
		t.Fatalf("release behind the fenced writer: %v, want ErrBusy", errs[0])
	}
	for i := 1; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("release %d failed with its batch-mate: %v", i, errs[i])
		}
	}
}

// TestCombinedReleaseOnlyByItsHolder: in a shared release statement, each
// release still ends only its own lease — by lease id and by owner (API
// key). A stale lease id of a resource granted again since, and the right
// lease id under another owner, are refused (ErrNotHolder) and leave the
// leases held, while their batch-mates release theirs.
func TestCombinedReleaseOnlyByItsHolder(t *testing.T) {
	t.Parallel()
	m, tr, _ := combining(t, func(*pgxpool.Config) {})
	ctx := context.Background()
	alice, bob := m.As("alice"), m.As("bob")
	const n = 8
	leases := make([]*lockmgr.Lease, n)
	for i := range n {
		l, err := alice.TryAcquire(ctx, fmt.Sprintf("res:o%d", i), "h", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = l
	}
	stale := leases[0]
	if err := alice.Release(ctx, stale.Resource, stale.ID); err != nil {
		t.Fatal(err)
	}
	newer, err := alice.TryAcquire(ctx, stale.Resource, "h", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lead, err := alice.TryAcquire(ctx, "res:o-lead", "h", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	releasedBefore := count(t, reg, "lockbank_lock_releases_total", "result", "released")
	// A release of its own goes first, held back by the tracer, so that the
	// releases below all queue behind it and share the next statement: had
	// the stale one gone first, it would have run alone (the mutants
	// combined-release-* once survived so).
	leadDone := make(chan error, 1)
	tr.armed.Store(true)
	go func() { leadDone <- alice.Release(ctx, lead.Resource, lead.ID) }()
	wait.Until(t, 5*time.Second, "the first release in flight", func() bool { return !tr.armed.Load() })
	errs := make([]error, n)
	stmts := together(tr, n, func(i int) {
		switch i {
		case 0:
			errs[i] = alice.Release(ctx, stale.Resource, stale.ID)
		case 1:
			errs[i] = bob.Release(ctx, leases[i].Resource, leases[i].ID)
		default:
			errs[i] = alice.Release(ctx, leases[i].Resource, leases[i].ID)
		}
	})
	if err := <-leadDone; err != nil {
		t.Fatal(err)
	}
	if stmts != 1 {
		t.Fatalf("%d releases took %d statements; want them all in one", n, stmts)
	}
	for i, err := range errs {
		if want := i < 2; want != errors.Is(err, lockmgr.ErrNotHolder) || (!want && err != nil) {
			t.Fatalf("release %d: %v; want ErrNotHolder only for the stale lease id (0) and the other owner (1)", i, err)
		}
	}
	for _, l := range []*lockmgr.Lease{newer, leases[1]} {
		if s, err := m.Get(ctx, l.Resource); err != nil || !s.Held || s.Token != l.Token {
			t.Fatalf("%s: %+v (%v); want the lease with token %d still held", l.Resource, s, err, l.Token)
		}
	}
	// Each release of the shared statement is counted as its own, by result.
	if got := count(t, reg, "lockbank_lock_releases_total", "result", "released") - releasedBefore; got != n-1 {
		t.Errorf("released = %v, want %d (the first and %d shared)", got, n-1, n-2)
	}
	if got := count(t, reg, "lockbank_lock_releases_total", "result", "not_holder"); got != 2 {
		t.Errorf("not_holder = %v, want 2", got)
	}
}
