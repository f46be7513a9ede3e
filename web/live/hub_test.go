package live

import (
	"context"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
)

// TestSlowReaderDropped: a subscriber that does not take its events is
// dropped once its buffer is full, and the hub goes on delivering to the
// others, in order, without waiting for it.
func TestSlowReaderDropped(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	l := New(pool, Options{Buffer: 3, Poll: 10 * time.Millisecond})
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	slow, _, err := l.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	fast, _, err := l.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	// One event at a time, each taken by the fast reader before the next.
	for want := int64(1); want <= 10; want++ {
		if _, err := pool.Exec(context.Background(), `INSERT INTO live_events (kind) VALUES ('test')`); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-fast.ch:
			if e.ID != want {
				t.Fatalf("fast reader got event %d, want %d", e.ID, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("fast reader: no event %d within 10 s", want)
		}
	}
	select {
	case <-slow.dropped:
	default:
		t.Fatal("the slow reader, 10 events behind with a buffer of 3, was not dropped")
	}
	select {
	case <-fast.dropped:
		t.Fatal("the fast reader was dropped")
	default:
	}
}

// TestWaitsForAMissingID: an id drawn by a transaction that commits after
// a higher one is delivered before it, not skipped: a stream's ids only
// rise, so Last-Event-ID is a complete resume point.
func TestWaitsForAMissingID(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	l := New(pool, Options{Poll: 10 * time.Millisecond, GapWait: time.Minute})
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	sub, _, err := l.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	early, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Rollback(ctx)
	if _, err := early.Exec(ctx, `INSERT INTO live_events (kind) VALUES ('early')`); err != nil { // draws id 1
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO live_events (kind) VALUES ('late')`); err != nil { // id 2, committed first
		t.Fatal(err)
	}
	polls := l.polls.Load()
	wait.Until(t, 5*time.Second, "three polls of the hub after id 2 committed", func() bool { return l.polls.Load() >= polls+3 })
	if err := early.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"early", "late"} {
		select {
		case e := <-sub.ch:
			if e.Kind != want {
				t.Fatalf("got %s (id %d) before the early id: want %s", e.Kind, e.ID, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s event within 10 s", want)
		}
	}
}

// TestPrunesOldEvents: the hub deletes events older than the retention, in
// batches, and keeps the newer ones (invariant 12: nothing grows forever).
func TestPrunesOldEvents(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO live_events (kind, at) SELECT 'old', now() - interval '2 hours' FROM generate_series(1, 25000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO live_events (kind) SELECT 'new' FROM generate_series(1, 10)`); err != nil {
		t.Fatal(err)
	}
	l := New(pool, Options{Retention: time.Hour, Poll: 10 * time.Millisecond})
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	count := func(kind string) int {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM live_events WHERE kind = $1`, kind).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait.Until(t, 20*time.Second, "the 25000 old events pruned", func() bool { return count("old") == 0 })
	if n := count("new"); n != 10 {
		t.Fatalf("%d of the 10 new events left after pruning", n)
	}
}
