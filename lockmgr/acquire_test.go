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

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// queryCounter counts the statements a pool sends: one per round trip.
type queryCounter struct{ n atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestOneRoundTrip: TryAcquire is one statement whether it grants the first
// lease, takes over an expired one or finds the lock held; Release is one.
func TestOneRoundTrip(t *testing.T) {
	t.Parallel()
	var counter queryCounter
	pool := pgtest.Configured(t, pgtest.URL(t), func(c *pgxpool.Config) { c.ConnConfig.Tracer = &counter })
	m := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(m.Close)
	ctx := context.Background()
	roundTrips := func(name string, f func() error) {
		t.Helper()
		before := counter.n.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := counter.n.Load() - before; n != 1 {
			t.Fatalf("%s took %d statements, want 1", name, n)
		}
	}
	var l *lockmgr.Lease
	roundTrips("first grant", func() (err error) {
		l, err = m.TryAcquire(ctx, "res:rt", "a", time.Minute)
		return err
	})
	roundTrips("held", func() error {
		_, err := m.TryAcquire(ctx, "res:rt", "b", time.Minute)
		if !errors.Is(err, lockmgr.ErrHeld) {
			return fmt.Errorf("got %v, want ErrHeld", err)
		}
		return nil
	})
	roundTrips("release", func() error { return m.Release(ctx, "res:rt", l.ID) })
	roundTrips("takeover", func() (err error) {
		_, err = m.TryAcquire(ctx, "res:rt", "b", time.Minute)
		return err
	})
}

// TestHeldPathWritesNothing: asking for a held lock takes no transaction id,
// no fencing token and no row lock, so it costs no WAL flush. A read-only
// session proves it: any write (an INSERT … ON CONFLICT that conflicts, a
// nextval, a FOR UPDATE) fails there, so TryAcquire must still answer ErrHeld.
func TestHeldPathWritesNothing(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	writer := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(writer.Close)
	reader := lockmgr.New(pgtest.Configured(t, url, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}), lockmgr.Options{})
	t.Cleanup(reader.Close)
	ctx := context.Background()

	l := mustAcquire(t, writer, "res:ro", "a", time.Minute)
	pool := pgtest.Configured(t, url, func(*pgxpool.Config) {})
	var lastToken, logCount int64
	if err := pool.QueryRow(ctx, `SELECT last_value, log_cnt FROM fencing_tokens`).Scan(&lastToken, &logCount); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := reader.TryAcquire(ctx, "res:ro", "b", time.Minute)
		var held *lockmgr.HeldError
		if !errors.As(err, &held) || held.Holder != "a" || held.Remaining <= 0 {
			t.Fatalf("TryAcquire of a held lock in a read-only session = %v; want ErrHeld by a with time left", err)
		}
	}
	var lastAfter, logAfter int64
	if err := pool.QueryRow(ctx, `SELECT last_value, log_cnt FROM fencing_tokens`).Scan(&lastAfter, &logAfter); err != nil {
		t.Fatal(err)
	}
	if lastAfter != lastToken || logAfter != logCount {
		t.Fatalf("fencing_tokens moved from (%d, %d) to (%d, %d): the held path consumed tokens", lastToken, logCount, lastAfter, logAfter)
	}
	if s, err := writer.Get(ctx, "res:ro"); err != nil || s.Token != l.Token || !s.Held {
		t.Fatalf("after the held tries: %+v, %v; want a's lease untouched", s, err)
	}
}

// TestTryAcquireConcurrent: 50 goroutines, each with its own Manager (so
// nothing local orders them), hammer one resource with TryAcquire until each
// has held it once. Whoever holds it appends its token; the tokens, in the
// order the lease was held, strictly increase, and no two holders overlap.
// The first round races 50 first grants on a resource with no row yet.
func TestTryAcquireConcurrent(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pool := pgtest.Configured(t, url, func(c *pgxpool.Config) { c.MaxConns = 20 })
	const acquirers = 50
	var (
		mu      sync.Mutex
		order   []int64
		holders atomic.Int32
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range acquirers {
		m := lockmgr.New(pool, lockmgr.Options{})
		t.Cleanup(m.Close)
		wg.Go(func() {
			<-start
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				l, err := m.TryAcquire(context.Background(), "res:race", fmt.Sprintf("w%d", i), 5*time.Second)
				if errors.Is(err, lockmgr.ErrHeld) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Errorf("TryAcquire: %v", err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				mu.Lock()
				order = append(order, l.Token)
				mu.Unlock()
				holders.Add(-1)
				if err := m.Release(context.Background(), l.Resource, l.ID); err != nil {
					t.Errorf("Release: %v", err)
				}
				return
			}
			t.Errorf("w%d never got the lease", i)
		})
	}
	close(start)
	wg.Wait()
	checkGrants(t, order, acquirers)
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM lease_grants WHERE resource = 'res:race'`).Scan(&n); err != nil || n != acquirers {
		t.Fatalf("lease_grants has %d rows (%v), want %d: one per grant", n, err, acquirers)
	}
}

// TestLazyReleaseStaysInItsTransaction: a release commits without waiting
// for its flush, but that setting must end with its transaction — the next
// statement on the same session (a grant, a renewal, a bankd write) commits
// synchronously as before.
func TestLazyReleaseStaysInItsTransaction(t *testing.T) {
	t.Parallel()
	pool := pgtest.Configured(t, pgtest.URL(t), func(c *pgxpool.Config) {
		c.MaxConns = 1 // one session: the release's and the SHOW's
		c.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	})
	m := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(m.Close)
	ctx := context.Background()
	l, err := m.TryAcquire(ctx, "lazy", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, "lazy", l.ID); err != nil {
		t.Fatal(err)
	}
	var setting string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != "on" {
		t.Fatalf("synchronous_commit after a release: %q; want on", setting)
	}
	if _, err := m.TryAcquire(ctx, "lazy", "b", time.Minute); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}

// waitedForLock waits until a session of pool's database has waited for a
// lock for at least d by the database's clock.
func waitedForLock(t *testing.T, pool *pgxpool.Pool, d time.Duration) {
	t.Helper()
	eventually(t, fmt.Sprintf("a session waiting %s for a lock", d), func() bool {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
			  AND clock_timestamp() - query_start >= $1 * interval '1 millisecond'`, d.Milliseconds()).Scan(&n); err != nil {
			t.Error(err)
			return true
		}
		return n > 0
	})
}

// TestTakeoverBehindFencedWriterIsLiveWhenGranted: a takeover whose UPDATE
// waits for a fenced writer's lock on the lease row (CheckFence's FOR SHARE)
// is stamped when it is granted, after the wait. The lease it returns is live
// for its whole TTL by the database's clock — never born expired, however
// long the wait — and the holder's own deadline still comes before the
// database's expiry.
func TestTakeoverBehindFencedWriterIsLiveWhenGranted(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const ttl = 200 * time.Millisecond
	old := mustAcquire(t, m, "res:born", "node-a", time.Minute)
	expire(t, b, "res:born")
	writer, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Rollback(context.Background()) })
	// The fence refuses the expired lease, but like every fence check it
	// locks the lease row until its transaction ends.
	if err := lockmgr.CheckFence(b.ctx, writer, "res:born", old.Token); !errors.Is(err, lockmgr.ErrLeaseExpired) {
		t.Fatalf("CheckFence of the expired lease = %v, want ErrLeaseExpired", err)
	}

	type grant struct {
		lease *lockmgr.Lease
		dbNow time.Time // the database's clock just after the grant returned
		err   error
	}
	granted := make(chan grant, 1)
	go func() {
		var g grant
		g.lease, g.err = m.TryAcquire(b.ctx, "res:born", "node-b", ttl)
		if g.err == nil {
			g.err = b.pool.QueryRow(b.ctx, `SELECT clock_timestamp()`).Scan(&g.dbNow)
		}
		granted <- g
	}()
	waitedForLock(t, b.pool, 2*ttl) // the takeover waits behind the writer for longer than its TTL
	if err := writer.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	g := <-granted
	if g.err != nil {
		t.Fatalf("TryAcquire behind the fenced writer: %v", g.err)
	}
	l := g.lease
	if l.Token <= old.Token {
		t.Fatalf("token %d after %d", l.Token, old.Token)
	}
	if got := l.ExpiresAt.Sub(l.AcquiredAt); got != ttl {
		t.Errorf("expires_at - acquired_at = %s, want the TTL %s", got, ttl)
	}
	if !l.ExpiresAt.After(g.dbNow) {
		t.Errorf("granted with expires_at %s, but the database's clock already read %s on return: born expired",
			l.ExpiresAt.Format(time.StampMicro), g.dbNow.Format(time.StampMicro))
	}
	if !l.Deadline().Before(l.ExpiresAt) {
		t.Errorf("the holder's deadline %s is not before the database's expiry %s",
			l.Deadline().Format(time.StampMicro), l.ExpiresAt.Format(time.StampMicro))
	}
}
