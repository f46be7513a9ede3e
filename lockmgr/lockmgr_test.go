package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type bundle struct {
	pool *pgxpool.Pool
	ctx  context.Context
}

func setup(t *testing.T) (*lockmgr.Manager, bundle) {
	t.Helper()
	pool := pgtest.New(t)
	m := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(m.Close)
	return m, bundle{pool: pool, ctx: context.Background()}
}

// managers returns n Managers on one fresh database, each with a pool of its
// own, as n nodes would have: their callers meet only in PostgreSQL, so
// what keeps them apart is the lease table, not one Manager's queue.
func managers(t *testing.T, n int) ([]*lockmgr.Manager, bundle) {
	t.Helper()
	url := pgtest.URL(t)
	ms := make([]*lockmgr.Manager, n)
	for i := range ms {
		ms[i] = lockmgr.New(pgtest.Pool(t, url, fmt.Sprintf("m%d", i)), lockmgr.Options{})
		t.Cleanup(ms[i].Close)
	}
	return ms, bundle{pool: pgtest.Pool(t, url, "observer"), ctx: context.Background()}
}

// contendedAcquire is Acquire by holder "m<mgr>-…" through managers[mgr],
// first trying once, so that the test can count how often the lock was
// found held by another Manager's caller — proof that the Managers fought
// over it in the database.
func contendedAcquire(ctx context.Context, ms []*lockmgr.Manager, mgr int, resource, holder string, crossHeld *atomic.Int64) (*lockmgr.Lease, error) {
	l, err := ms[mgr].TryAcquire(ctx, resource, holder, 5*time.Second)
	var held *lockmgr.HeldError
	if !errors.As(err, &held) {
		return l, err
	}
	if !strings.HasPrefix(held.Holder, fmt.Sprintf("m%d-", mgr)) {
		crossHeld.Add(1)
	}
	return ms[mgr].Acquire(ctx, resource, holder, 5*time.Second)
}

func mustAcquire(t *testing.T, m *lockmgr.Manager, resource, holder string, ttl time.Duration) *lockmgr.Lease {
	t.Helper()
	l, err := m.TryAcquire(context.Background(), resource, holder, ttl)
	if err != nil {
		t.Fatalf("TryAcquire(%s, %s): %v", resource, holder, err)
	}
	return l
}

// expire makes the database consider the lease over, as if its TTL had run
// out during a pause, without waiting for it.
func expire(t *testing.T, b bundle, resource string) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, `UPDATE leases SET expires_at = clock_timestamp() WHERE resource = $1`, resource); err != nil {
		t.Fatal(err)
	}
}

// TestTokensStrictlyIncrease: 50 acquirers on five Managers (five nodes),
// released together through a barrier, take turns on one resource; in the
// order they held the lock, the tokens strictly increase.
func TestTokensStrictlyIncrease(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 5)
	const acquirers = 50
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var order []int64
	var crossHeld atomic.Int64
	for i := range acquirers {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
			defer cancel()
			mgr := i % len(ms)
			l, err := contendedAcquire(ctx, ms, mgr, "res:tokens", fmt.Sprintf("m%d-w%d", mgr, i), &crossHeld)
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			mu.Lock()
			order = append(order, l.Token)
			mu.Unlock()
			if err := ms[mgr].Release(b.ctx, l.Resource, l.ID); err != nil {
				t.Errorf("Release: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	checkGrants(t, order, acquirers)
	if crossHeld.Load() == 0 {
		t.Fatal("no acquirer ever found the lock held by another Manager's: the Managers never contended")
	}
	// The grant history agrees, token by token.
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM lease_grants WHERE resource = 'res:tokens'`).Scan(&n); err != nil || n != acquirers {
		t.Fatalf("lease_grants has %d rows (%v), want %d", n, err, acquirers)
	}
}

// TestMutualExclusion: 20 workers on four Managers × 100 rounds of acquire →
// read-modify-write of a plain counter with a yield in the middle → release.
// Any overlap of two holders loses an increment.
func TestMutualExclusion(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 4)
	const workers, rounds = 20, 100
	var counter atomic.Int64 // atomic only so the race detector stays quiet: Load+Store is not an increment
	var crossHeld atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			mgr := w % len(ms)
			for range rounds {
				ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
				l, err := contendedAcquire(ctx, ms, mgr, "res:counter", fmt.Sprintf("m%d-w%d", mgr, w), &crossHeld)
				cancel()
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				if err := ms[mgr].Release(b.ctx, l.Resource, l.ID); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if got := counter.Load(); got != workers*rounds {
		t.Fatalf("counter = %d, want %d: two holders overlapped", got, workers*rounds)
	}
	if crossHeld.Load() == 0 {
		t.Fatal("no worker ever found the lock held by another Manager's: the Managers never contended")
	}
	t.Logf("%d acquisitions found the lock held by another Manager's worker", crossHeld.Load())
}

func TestExpiryAndTakeover(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	old := mustAcquire(t, m, "res:a", "node-a", time.Second)

	_, err := m.TryAcquire(b.ctx, "res:a", "node-b", time.Second)
	var held *lockmgr.HeldError
	if !errors.As(err, &held) || !errors.Is(err, lockmgr.ErrHeld) || held.Holder != "node-a" || held.Remaining <= 0 {
		t.Fatalf("TryAcquire while held = %v, want ErrHeld by node-a", err)
	}

	// Expiry by the database clock: after the TTL the lease is free to take.
	time.Sleep(time.Until(old.ExpiresAt) + 50*time.Millisecond)
	if s, err := m.Get(b.ctx, "res:a"); err != nil || s.Held {
		t.Fatalf("Get after TTL = %+v, %v; want not held", s, err)
	}
	newer := mustAcquire(t, m, "res:a", "node-b", 5*time.Second)
	if newer.Token <= old.Token || newer.ID == old.ID {
		t.Fatalf("takeover token %d (old %d): must be greater", newer.Token, old.Token)
	}

	// The stale holder can neither renew nor release the newer lease.
	if _, err := m.Renew(b.ctx, "res:a", old.ID, time.Second); !errors.Is(err, lockmgr.ErrLeaseLost) {
		t.Fatalf("stale Renew = %v, want ErrLeaseLost", err)
	}
	if err := m.Release(b.ctx, "res:a", old.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("stale Release = %v, want ErrNotHolder", err)
	}
	s, err := m.Get(b.ctx, "res:a")
	if err != nil || !s.Held || s.Holder != "node-b" || s.Token != newer.Token {
		t.Fatalf("after stale renew/release: %+v, %v; want node-b's lease untouched", s, err)
	}

	// Renewal keeps the token and extends the lease.
	renewed, err := m.Renew(b.ctx, "res:a", newer.ID, 10*time.Second)
	if err != nil || renewed.Token != newer.Token || !renewed.ExpiresAt.After(newer.ExpiresAt) {
		t.Fatalf("Renew = %+v, %v", renewed, err)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	l := mustAcquire(t, m, "res:r", "node-a", time.Minute)
	for i := range 2 {
		if err := m.Release(b.ctx, "res:r", l.ID); err != nil {
			t.Fatalf("Release #%d: %v", i+1, err)
		}
	}
	if _, err := m.Renew(b.ctx, "res:r", l.ID, time.Second); !errors.Is(err, lockmgr.ErrLeaseLost) {
		t.Fatalf("Renew after release = %v, want ErrLeaseLost", err)
	}
	next := mustAcquire(t, m, "res:r", "node-b", time.Minute) // free at once, no TTL to wait out
	if next.Token <= l.Token {
		t.Fatalf("token %d after %d", next.Token, l.Token)
	}
	for _, id := range []string{"not-a-uuid", "00000000-0000-4000-8000-000000000000"} {
		if err := m.Release(b.ctx, "res:r", id); !errors.Is(err, lockmgr.ErrNotHolder) {
			t.Fatalf("Release(%s) = %v, want ErrNotHolder", id, err)
		}
	}
	if err := m.Release(b.ctx, "res:never", l.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("Release on another resource = %v, want ErrNotHolder", err)
	}
}

// TestTokensSurviveCleanup: deleting every lease row does not bring tokens back.
func TestTokensSurviveCleanup(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	first := mustAcquire(t, m, "res:c", "node-a", time.Minute)
	if _, err := b.pool.Exec(b.ctx, `DELETE FROM leases`); err != nil {
		t.Fatal(err)
	}
	second := mustAcquire(t, m, "res:c", "node-b", time.Minute)
	if second.Token <= first.Token {
		t.Fatalf("token after cleanup %d, before %d: tokens must never be reused", second.Token, first.Token)
	}
}

// TestWaiterWokenByRelease: a waiter on another Manager (another node),
// registered in the database as waiting, is woken by the holder's release —
// its notification — long before the 30 s lease would run out.
func TestWaiterWokenByRelease(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 2)
	holder := mustAcquire(t, ms[0], "res:w", "node-a", 30*time.Second)
	got := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		defer cancel()
		if _, err := ms[1].Acquire(ctx, "res:w", "node-b", time.Second); err != nil {
			t.Errorf("Acquire: %v", err)
		}
		got <- time.Now()
	}()
	waitForWaiters(t, b, "res:w", 1)
	released := time.Now()
	if err := ms[0].Release(b.ctx, "res:w", holder.ID); err != nil {
		t.Fatal(err)
	}
	woke := <-got
	// Generous: the benchmark measures the real figure; a waiter that slept
	// until expiry would take 30 s.
	if d := woke.Sub(released); d > 2*time.Second {
		t.Fatalf("waiter took %s after the release", d)
	}
}

func TestWaiterWakesAtExpiryWithoutNotification(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	mustAcquire(t, m, "res:x", "node-a", 600*time.Millisecond) // never released: its holder "crashed"
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	l, err := m.Acquire(ctx, "res:x", "node-b", time.Second)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if waited := time.Since(start); waited < 400*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("waited %s for a 600ms lease to expire", waited)
	}
	if l.Holder != "node-b" {
		t.Fatalf("holder %s", l.Holder)
	}
}

func TestAcquireGivesUpWithContext(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	mustAcquire(t, m, "res:t", "node-a", time.Minute)
	ctx, cancel := context.WithTimeout(b.ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := m.Acquire(ctx, "res:t", "node-b", time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want DeadlineExceeded", err)
	}
}

func TestKeepAlive(t *testing.T) {
	t.Parallel()
	m, b := setup(t)

	t.Run("HoldsThroughTenTTLs", func(t *testing.T) {
		// Not shorter: a renewal must get through within about two thirds of
		// the TTL even on a loaded 2-core CI machine running the race
		// detector beside the other packages' tests.
		const ttl = 1500 * time.Millisecond
		l := mustAcquire(t, m, "res:k1", "node-a", ttl)
		k := m.KeepAlive(b.ctx, l)
		defer k.Stop()
		time.Sleep(10 * ttl)
		if err := k.Err(); err != nil {
			t.Fatalf("keepalive lost the lease: %v", err)
		}
		s, err := m.Get(b.ctx, "res:k1")
		if err != nil || !s.Held || s.Token != l.Token {
			t.Fatalf("after 10 TTLs: %+v, %v; want held with token %d", s, err, l.Token)
		}
		if _, err := m.TryAcquire(b.ctx, "res:k1", "node-b", ttl); !errors.Is(err, lockmgr.ErrHeld) {
			t.Fatalf("TryAcquire by another = %v, want ErrHeld", err)
		}
	})

	t.Run("SignalsLossWhenTaken", func(t *testing.T) {
		l := mustAcquire(t, m, "res:k2", "node-a", 600*time.Millisecond)
		k := m.KeepAlive(b.ctx, l)
		defer k.Stop()
		expire(t, b, "res:k2") // the database judged it over, say during a pause
		mustAcquire(t, m, "res:k2", "node-b", time.Minute)
		select {
		case <-k.Done():
		case <-time.After(2 * time.Second):
			t.Fatal("keepalive did not signal the loss")
		}
		if !errors.Is(k.Err(), lockmgr.ErrLeaseLost) {
			t.Fatalf("Err = %v, want ErrLeaseLost", k.Err())
		}
	})

	t.Run("EndsAtLocalDeadlineWhenRenewalsStall", func(t *testing.T) {
		// A wide safety margin, so that a timer firing late on a loaded
		// machine still fires before the database's expiry.
		m := lockmgr.New(b.pool, lockmgr.Options{SafetyMargin: func(ttl time.Duration) time.Duration { return ttl / 4 }})
		defer m.Close()
		const ttl = 2 * time.Second
		l := mustAcquire(t, m, "res:k3", "node-a", ttl)
		// Another session locks the lease row: every renewal now hangs, as it
		// would behind a dead network.
		blocker, err := b.pool.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Rollback(b.ctx)
		if _, err := blocker.Exec(b.ctx, `SELECT 1 FROM leases WHERE resource = 'res:k3' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		k := m.KeepAlive(b.ctx, l)
		defer k.Stop()
		var gaveUp time.Time
		select {
		case <-k.Done():
			gaveUp = time.Now()
		case <-time.After(5 * time.Second):
			t.Fatal("keepalive did not give up at its deadline")
		}
		// It gave up before the database's expiry (one machine, one clock):
		// the holder stops before anyone else can start.
		var expiresAt time.Time
		if err := b.pool.QueryRow(b.ctx, `SELECT expires_at FROM leases WHERE resource = 'res:k3'`).Scan(&expiresAt); err != nil {
			t.Fatal(err)
		}
		if !gaveUp.Before(expiresAt) || !errors.Is(k.Err(), lockmgr.ErrLeaseLost) {
			t.Fatalf("gave up at %s, the database expires the lease at %s, err %v; want before, and ErrLeaseLost", gaveUp, expiresAt, k.Err())
		}
	})
}

func TestFence(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	check := func(resource string, token int64) error {
		t.Helper()
		var fenceErr error
		err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			fenceErr = lockmgr.CheckFence(b.ctx, tx, resource, token)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return fenceErr
	}
	a1 := mustAcquire(t, m, "account:1", "node-a", time.Minute)
	other := mustAcquire(t, m, "account:2", "node-a", time.Minute)
	if err := check("account:1", a1.Token); err != nil {
		t.Fatalf("live newest token: %v", err)
	}
	expire(t, b, "account:1")
	if err := check("account:1", a1.Token); !errors.Is(err, lockmgr.ErrLeaseExpired) {
		t.Fatalf("expired token: %v, want ErrLeaseExpired", err)
	}
	a2 := mustAcquire(t, m, "account:1", "node-b", time.Minute)
	tests := []struct {
		name     string
		resource string
		token    int64
		want     error
	}{
		{"Newest", "account:1", a2.Token, nil},
		{"Stale", "account:1", a1.Token, lockmgr.ErrStaleToken},
		{"AnotherResourcesToken", "account:1", other.Token, lockmgr.ErrTokenMismatch},
		{"FutureToken", "account:1", a2.Token + 1000, lockmgr.ErrTokenMismatch},
		{"NeverLocked", "account:3", a2.Token, lockmgr.ErrTokenMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(tt.resource, tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("CheckFence(%s, %d) = %v, want %v", tt.resource, tt.token, err, tt.want)
			}
		})
	}
	if err := m.Release(b.ctx, "account:1", a2.ID); err != nil {
		t.Fatal(err)
	}
	if err := check("account:1", a2.Token); !errors.Is(err, lockmgr.ErrLeaseExpired) {
		t.Fatalf("released token: %v, want ErrLeaseExpired", err)
	}
}

// TestFenceHoldsOffTakeover: between a writer's fence check and its commit,
// no newer grant can be made, even when the lease runs out meanwhile.
func TestFenceHoldsOffTakeover(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	l := mustAcquire(t, m, "res:f", "node-a", time.Second)
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if err := lockmgr.CheckFence(b.ctx, tx, "res:f", l.Token); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(l.ExpiresAt) + 100*time.Millisecond) // the lease runs out while the writer is still in its transaction
	granted := make(chan *lockmgr.Lease, 1)
	go func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		nl, err := m.Acquire(ctx, "res:f", "node-b", time.Minute)
		if err != nil {
			t.Errorf("Acquire: %v", err)
		}
		granted <- nl
	}()
	select {
	case <-granted:
		t.Fatal("a takeover was granted while the fenced writer had not committed")
	case <-time.After(500 * time.Millisecond):
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	if nl := <-granted; nl == nil || nl.Token <= l.Token {
		t.Fatalf("takeover after commit: %+v", nl)
	}
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	tests := []struct {
		name, resource, holder string
		ttl                    time.Duration
	}{
		{"EmptyResource", "", "h", time.Second},
		{"ResourceWithSpace", "a b", "h", time.Second},
		{"LongResource", string(make([]byte, 201)), "h", time.Second},
		{"EmptyHolder", "r", "", time.Second},
		{"NULInHolder", "r", "node\x00a", time.Second},
		{"InvalidUTF8Holder", "r", "node\xff", time.Second},
		{"LineSeparatorInHolder", "r", "node\u2028a", time.Second},
		{"TTLTooShort", "r", "h", 99 * time.Millisecond},
		{"TTLTooLong", "r", "h", 11 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.TryAcquire(b.ctx, tt.resource, tt.holder, tt.ttl); !errors.Is(err, lockmgr.ErrInvalid) {
				t.Fatalf("TryAcquire = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := m.Get(b.ctx, "res:none"); !errors.Is(err, lockmgr.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
}

// TestTakeoverBlockedByFenceIsHeld: with lock_timeout set (as bankd sets
// it), a takeover that gives up waiting for a fenced writer's lock on the
// lease row reports the lock as held, not an internal error.
func TestTakeoverBlockedByFenceIsHeld(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	l := mustAcquire(t, m, "res:fl", "node-a", 200*time.Millisecond)
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(b.ctx)
	if err := lockmgr.CheckFence(b.ctx, tx, "res:fl", l.Token); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(l.ExpiresAt) + 50*time.Millisecond)

	cfg := b.pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = "200"
	impatient, err := pgxpool.NewWithConfig(b.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer impatient.Close()
	m2 := lockmgr.New(impatient, lockmgr.Options{})
	defer m2.Close()
	if _, err := m2.TryAcquire(b.ctx, "res:fl", "node-b", time.Second); !errors.Is(err, lockmgr.ErrHeld) {
		t.Fatalf("TryAcquire behind a fenced writer = %v, want ErrHeld", err)
	}
}

// checkGrants asserts that want grants were made, in order of strictly
// increasing tokens (invariant 4).
func checkGrants(t *testing.T, order []int64, want int) {
	t.Helper()
	if len(order) != want {
		t.Fatalf("%d grants, want %d", len(order), want)
	}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("grant %d got token %d after %d: tokens must strictly increase (%v)", i, order[i], order[i-1], order)
		}
	}
}

// TestDeadlineComesFirst: the holder's local deadline, after which it must
// stop acting as holder, is always before the database's expiry of the same
// grant or renewal — by TryAcquire, Acquire and Renew alike. (The test's
// clock and the database's are the same machine's.)
func TestDeadlineComesFirst(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const ttl = time.Second
	check := func(how string, l *lockmgr.Lease) {
		t.Helper()
		if !l.Deadline().Before(l.ExpiresAt) {
			t.Errorf("%s: local deadline %s is not before the database's expiry %s", how, l.Deadline().Format(time.StampMicro), l.ExpiresAt.Format(time.StampMicro))
		}
		if l.ExpiresAt.Sub(l.Deadline()) > ttl/2 {
			t.Errorf("%s: local deadline %s is more than half the TTL before the expiry %s", how, l.Deadline().Format(time.StampMicro), l.ExpiresAt.Format(time.StampMicro))
		}
	}
	l := mustAcquire(t, m, "res:deadline", "node-a", ttl)
	check("TryAcquire", l)
	renewed, err := m.Renew(b.ctx, l.Resource, l.ID, ttl)
	if err != nil {
		t.Fatal(err)
	}
	check("Renew", renewed)
	if err := m.Release(b.ctx, l.Resource, l.ID); err != nil {
		t.Fatal(err)
	}
	acquired, err := m.Acquire(b.ctx, "res:deadline", "node-b", ttl)
	if err != nil {
		t.Fatal(err)
	}
	check("Acquire", acquired)
}

// TestDatabaseFailuresAreNamed: the calls name the database's failures in
// lockmgr's vocabulary and change nothing — ErrBusy when a fenced write
// keeps the lease's row locked past lock_timeout (a takeover then reports
// the lock held), ErrUnavailable from a database that takes no writes (a
// standby, a demoted primary).
func TestDatabaseFailuresAreNamed(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	m := lockmgr.New(pgtest.Configured(t, url, func(*pgxpool.Config) {}), lockmgr.Options{})
	t.Cleanup(m.Close)
	impatient := lockmgr.New(pgtest.Configured(t, url, func(c *pgxpool.Config) { c.ConnConfig.RuntimeParams["lock_timeout"] = "100" }), lockmgr.Options{})
	t.Cleanup(impatient.Close)
	readOnly := lockmgr.New(pgtest.Configured(t, url, func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	}), lockmgr.Options{})
	t.Cleanup(readOnly.Close)
	ctx := context.Background()
	l := mustAcquire(t, m, "res:db", "node-a", time.Minute)
	expired := mustAcquire(t, m, "res:db-expired", "node-a", time.Minute)
	if err := m.Release(ctx, expired.Resource, expired.ID); err != nil {
		t.Fatal(err)
	}

	writer, err := pgtest.Configured(t, url, func(*pgxpool.Config) {}).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Rollback(context.Background()) })
	if err := lockmgr.CheckFence(ctx, writer, "res:db", l.Token); err != nil {
		t.Fatal(err)
	}
	if err := lockmgr.CheckFence(ctx, writer, "res:db-expired", expired.Token); !errors.Is(err, lockmgr.ErrLeaseExpired) {
		t.Fatal(err)
	}
	if _, err := impatient.Renew(ctx, "res:db", l.ID, time.Minute); !errors.Is(err, lockmgr.ErrBusy) {
		t.Errorf("Renew behind a fenced write = %v, want ErrBusy", err)
	}
	if err := impatient.Release(ctx, "res:db", l.ID); !errors.Is(err, lockmgr.ErrBusy) {
		t.Errorf("Release behind a fenced write = %v, want ErrBusy", err)
	}
	if _, err := impatient.TryAcquire(ctx, "res:db-expired", "node-b", time.Minute); !errors.Is(err, lockmgr.ErrHeld) {
		t.Errorf("TryAcquire behind a fenced write = %v, want ErrHeld", err)
	}
	if err := writer.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := readOnly.TryAcquire(ctx, "res:db-new", "node-b", time.Minute); !errors.Is(err, lockmgr.ErrUnavailable) {
		t.Errorf("TryAcquire on a read-only database = %v, want ErrUnavailable", err)
	}
	if _, err := readOnly.TryAcquire(ctx, "res:db-expired", "node-b", time.Minute); !errors.Is(err, lockmgr.ErrUnavailable) {
		t.Errorf("takeover on a read-only database = %v, want ErrUnavailable", err)
	}
	if _, err := readOnly.Renew(ctx, "res:db", l.ID, time.Minute); !errors.Is(err, lockmgr.ErrUnavailable) {
		t.Errorf("Renew on a read-only database = %v, want ErrUnavailable", err)
	}
	if err := readOnly.Release(ctx, "res:db", l.ID); !errors.Is(err, lockmgr.ErrUnavailable) {
		t.Errorf("Release on a read-only database = %v, want ErrUnavailable", err)
	}
	if s, err := readOnly.Get(ctx, "res:db"); err != nil || !s.Held || !s.ExpiresAt.Equal(l.ExpiresAt) || s.Token != l.Token {
		t.Fatalf("res:db after the failed calls: %+v, %v; want it as granted", s, err)
	}
	if _, err := m.Get(ctx, "res:db-new"); !errors.Is(err, lockmgr.ErrNotFound) {
		t.Fatalf("res:db-new: %v; want never granted", err)
	}
}
