package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// eavesdrop LISTENs on lockmgr's channel on a connection of its own and
// returns the payloads heard.
func eavesdrop(t *testing.T, url string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN lockmgr_release"); err != nil {
		t.Fatal(err)
	}
	heard := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			heard <- n.Payload
		}
	}()
	t.Cleanup(func() { cancel(); <-done; conn.Close(context.Background()) })
	return heard
}

// TestReleaseNotifiesOnlyWaiters: a release that nobody waits for sends no
// notification (NOTIFY serialises every notifying commit in the database,
// so unneeded ones cost throughput); one that someone waits for does, and
// wakes the waiter in another Manager long before the lease would run out.
func TestReleaseNotifiesOnlyWaiters(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	heard := eavesdrop(t, url)
	a := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(a.Close)
	waiterSide := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(waiterSide.Close)
	ctx := context.Background()

	l := mustAcquire(t, a, "res:quiet", "a", 30*time.Second)
	if err := a.Release(ctx, l.Resource, l.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-heard:
		t.Fatalf("a release with no waiter notified %q", p)
	case <-time.After(300 * time.Millisecond):
	}

	l = mustAcquire(t, a, "res:quiet", "a", 30*time.Second)
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		wl, err := waiterSide.Acquire(wctx, "res:quiet", "b", time.Second)
		if err == nil && wl.Token <= l.Token {
			err = fmt.Errorf("token %d after %d", wl.Token, l.Token)
		}
		got <- err
	}()
	// The waiter found the lock held and registered: it sleeps until the 30 s
	// lease runs out unless told of the release.
	eventually(t, "the waiter to register", func() bool { return lockmgr.Registered(waiterSide, "res:quiet") })
	released := time.Now()
	if err := a.Release(ctx, l.Resource, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if d := time.Since(released); d > 2*time.Second {
		t.Fatalf("the waiter in the other Manager took %s after the release", d)
	}
	select {
	case p := <-heard:
		if p == "" {
			t.Fatal("empty payload")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the release someone waited for sent no notification")
	}
}

// TestHandoffAcrossManagersNeverStalls: two Managers on pools of their own
// (two sessions each, as two processes would have) take turns on one
// resource with a 30 s lease, many times. A waiter that starts waiting just
// as the other releases must still hear of that release (or see it): one
// missed wake-up costs the full lease and fails the test.
func TestHandoffAcrossManagersNeverStalls(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	const rounds = 150
	start := make(chan struct{})
	var wg sync.WaitGroup
	for side := range 2 {
		m := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
		t.Cleanup(m.Close)
		wg.Go(func() {
			<-start
			for round := range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				l, err := m.Acquire(ctx, "res:pingpong", fmt.Sprintf("side%d", side), 30*time.Second)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("side %d, round %d: waited 10 s for a lease released every few ms: a wake-up was missed", side, round)
					return
				}
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				if err := m.Release(context.Background(), l.Resource, l.ID); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
}

// TestWaiterSurvivesListenerLoss: the listener's session dies while a waiter
// sleeps (and with it the advisory lock that made releases notify). The
// release that follows is not announced; the listener reconnects, takes its
// locks again and wakes its waiters to look, so the waiter still gets the
// lease long before the 30 s lease would run out.
func TestWaiterSurvivesListenerLoss(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	holderSide := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(holderSide.Close)
	waiterSide := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(waiterSide.Close)
	admin := pgtest.Configured(t, url, func(*pgxpool.Config) {})
	ctx := context.Background()

	l := mustAcquire(t, holderSide, "res:lost", "a", 30*time.Second)
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := waiterSide.Acquire(wctx, "res:lost", "b", time.Second)
		got <- err
	}()
	// The waiter's listener is the only session that LISTENs or holds an
	// advisory lock; find it once it has registered, and end it.
	wait.Until(t, 10*time.Second, "the waiter's listener to register (and be terminated)", func() bool {
		var killed bool
		err := admin.QueryRow(ctx, `
			SELECT count(pg_terminate_backend(a.pid)) > 0
			FROM pg_stat_activity a JOIN pg_locks k ON k.pid = a.pid AND k.locktype = 'advisory'
			WHERE a.datname = current_database()`).Scan(&killed)
		return err == nil && killed
	})
	released := time.Now()
	if err := holderSide.Release(ctx, l.Resource, l.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if d := time.Since(released); d > 5*time.Second {
		t.Fatalf("the waiter took %s after the release: it slept out the lease", d)
	}
}
