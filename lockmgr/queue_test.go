package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// eventually waits up to 10 s for cond, which a goroutine of the test makes
// true soon.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.Until(t, 10*time.Second, what, cond)
}

// waitForWaiters waits until n Managers are registered in the database as
// waiting for resource: each holds a shared advisory lock on its listening
// session while its callers wait (queries.go, sqlRegisterWaiter).
func waitForWaiters(t *testing.T, b bundle, resource string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d Managers registered as waiting for %s", n, resource), func() bool {
		var waiting int
		err := b.pool.QueryRow(b.ctx, `SELECT count(DISTINCT pid) FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND classid = 1818979687 AND objid::int = hashtext($1)`, resource).Scan(&waiting)
		return err == nil && waiting >= n
	})
}

// TestAcquireIsFairInOneManager: workers sharing one Manager contend on one
// resource and share a budget of cycles; each takes the next cycle as soon as
// it has released the last. Every worker's share must be within 50% of the
// mean. Without a local queue the releasing worker, which is already awake
// and on the CPU, wins the lease again while the others are still waking up.
func TestAcquireIsFairInOneManager(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const workers, cycles = 8, 400
	counts := make([]int, workers)
	var budget atomic.Int64
	budget.Store(cycles)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for budget.Add(-1) >= 0 {
				ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
				l, err := m.Acquire(ctx, "res:fair", fmt.Sprintf("w%d", w), 5*time.Second)
				cancel()
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				counts[w]++
				if err := m.Release(b.ctx, l.Resource, l.ID); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	t.Logf("acquisitions per worker: %v", counts)
	mean := float64(cycles) / workers
	for w, n := range counts {
		if float64(n) < 0.5*mean || float64(n) > 1.5*mean {
			t.Fatalf("worker %d got %d of %d acquisitions (mean %.0f): want every worker within 50%% of the mean; all: %v", w, n, cycles, mean, counts)
		}
	}
}

// TestReacquireQueuesBehindWaiter: a holder that releases and at once asks
// again goes behind the caller already waiting in the same Manager.
func TestReacquireQueuesBehindWaiter(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	for round := range 10 {
		resource := fmt.Sprintf("res:requeue%d", round)
		first := mustAcquire(t, m, resource, "a", 30*time.Second)
		waiter := make(chan *lockmgr.Lease, 1)
		go func() {
			ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
			defer cancel()
			l, err := m.Acquire(ctx, resource, "b", 30*time.Second)
			if err != nil {
				t.Errorf("Acquire b: %v", err)
				waiter <- nil
				return
			}
			if err := m.Release(b.ctx, resource, l.ID); err != nil {
				t.Errorf("Release b: %v", err)
			}
			waiter <- l
		}()
		// b is queued (and, having found the lock held, asleep until a release).
		eventually(t, "b to queue", func() bool { return lockmgr.Registered(m, resource) })
		if err := m.Release(b.ctx, resource, first.ID); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		again, err := m.Acquire(ctx, resource, "a", 30*time.Second)
		cancel()
		if err != nil {
			t.Fatalf("Acquire a again: %v", err)
		}
		lb := <-waiter
		if lb == nil {
			t.FailNow()
		}
		if lb.Token > again.Token {
			t.Fatalf("round %d: a released and re-acquired (token %d) ahead of b, who was waiting (token %d)", round, again.Token, lb.Token)
		}
		if err := m.Release(b.ctx, resource, again.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQueueSurvivesCancelledWaiters: waiters that give up, at the head of the
// local queue or behind it, leave; the rest still get the lease in turn.
func TestQueueSurvivesCancelledWaiters(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	holder := mustAcquire(t, m, "res:cancel", "h", 30*time.Second)
	type result struct {
		name  string
		lease *lockmgr.Lease
		err   error
	}
	results := make(chan result, 4)
	wait := func(ctx context.Context, name string) {
		l, err := m.Acquire(ctx, "res:cancel", name, 30*time.Second)
		if l != nil {
			// Hand on at once, as a worker would when done.
			if err := m.Release(b.ctx, l.Resource, l.ID); err != nil {
				t.Errorf("Release %s: %v", name, err)
			}
		}
		results <- result{name, l, err}
	}
	// Queued in this order; the head gives up, and so does one behind it.
	patient, cancelPatient := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancelPatient()
	impatient, giveUp := context.WithCancel(b.ctx)
	for i, w := range []struct {
		name string
		ctx  context.Context
	}{{"head-gives-up", impatient}, {"patient-1", patient}, {"middle-gives-up", impatient}, {"patient-2", patient}} {
		go wait(w.ctx, w.name)
		eventually(t, w.name+" to queue", func() bool { return lockmgr.Waiting(m, "res:cancel") == i+1 })
	}
	giveUp()
	for range 2 {
		r := <-results
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("%s: %v, want Canceled while the lease is held", r.name, r.err)
		}
	}
	if err := m.Release(b.ctx, "res:cancel", holder.ID); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]int64{}
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("%s: %v", r.name, r.err)
			}
			tokens[r.name] = r.lease.Token
		case <-time.After(10 * time.Second):
			t.Fatalf("the patient waiters were stranded after the release (granted so far: %v)", tokens)
		}
	}
	if tokens["patient-1"] > tokens["patient-2"] {
		t.Fatalf("tokens %v: patient-2 was granted before patient-1, who queued first", tokens)
	}
}
