package lockmgr_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// count sums the series of name whose label (if any) has value.
func count(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				ok = ok || (l.GetName() == label && l.GetValue() == value)
			}
			if ok {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// TestCollectorCountsEachResult: each call lands in its result's series,
// exactly once, on a registry of the caller's own.
func TestCollectorCountsEachResult(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	ctx := b.ctx
	l, err := m.TryAcquire(ctx, "metrics", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.TryAcquire(ctx, "metrics", "b", time.Minute); !errors.Is(err, lockmgr.ErrHeld) {
		t.Fatalf("second TryAcquire: %v, want ErrHeld", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	_, err = m.Acquire(waitCtx, "metrics", "c", time.Minute)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a held lock: %v, want its deadline", err)
	}
	if _, err := m.Renew(ctx, "metrics", l.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if err := m.CheckFence(ctx, tx, "metrics", l.Token); err != nil {
		t.Fatalf("fence of the live lease: %v", err)
	}
	if err := m.CheckFence(ctx, tx, "metrics", l.Token+1000); !errors.Is(err, lockmgr.ErrTokenMismatch) {
		t.Fatalf("fence of a token never issued: %v", err)
	}
	_ = tx.Rollback(ctx)
	if err := m.Release(ctx, "metrics", l.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, "metrics", "00000000-0000-4000-8000-000000000000"); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("release by a stranger: %v", err)
	}
	if _, err := m.Renew(ctx, "metrics", l.ID, time.Minute); !errors.Is(err, lockmgr.ErrLeaseLost) {
		t.Fatalf("renewal of a released lease: %v", err)
	}
	// Releasing twice is harmless, and the second finds the lease over.
	if err := m.Release(ctx, "metrics", l.ID); err != nil {
		t.Fatalf("second release: %v", err)
	}
	ranOut := mustAcquire(t, m, "metrics:ran-out", "d", time.Minute)
	expire(t, b, ranOut.Resource)
	if err := m.Release(ctx, ranOut.Resource, ranOut.ID); err != nil {
		t.Fatalf("release of a lease that ran out: %v", err)
	}

	for _, w := range []struct {
		name, label, value string
		want               float64
	}{
		{"lockbank_lock_grants_total", "result", "acquired", 2},
		{"lockbank_lock_grants_total", "result", "held", 1},
		{"lockbank_lock_grants_total", "result", "timeout", 1},
		{"lockbank_lock_grants_total", "result", "error", 0},
		{"lockbank_lock_renewals_total", "result", "renewed", 1},
		{"lockbank_lock_renewals_total", "result", "lost", 1},
		{"lockbank_lock_releases_total", "result", "released", 1},
		{"lockbank_lock_releases_total", "result", "not_holder", 1},
		{"lockbank_lock_releases_total", "result", "already_expired", 2},
		{"lockbank_lock_fence_checks_total", "result", "ok", 1},
		{"lockbank_lock_fence_checks_total", "result", "mismatch", 1},
		{"lockbank_lock_takeovers_total", "", "", 0},
		{"lockbank_lock_waiters", "", "", 0},
	} {
		if got := count(t, reg, w.name, w.label, w.value); got != w.want {
			t.Errorf("%s{%s=%q} = %v, want %v", w.name, w.label, w.value, got, w.want)
		}
	}
}

// TestLiveLeasesGauge: the gauge counts the leases live by the database's
// clock at the scrape — granted and neither released nor run out — whoever
// granted them.
func TestLiveLeasesGauge(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 2)
	reg := prometheus.NewRegistry()
	reg.MustRegister(ms[0].Collector())
	live := func() float64 { return count(t, reg, "lockbank_lock_live_leases", "", "") }
	if got := live(); got != 0 {
		t.Fatalf("live leases of a fresh database = %v, want 0", got)
	}
	a := mustAcquire(t, ms[0], "live:a", "a", time.Minute)
	mustAcquire(t, ms[1], "live:b", "b", time.Minute) // another node's
	mustAcquire(t, ms[0], "live:c", "c", time.Minute)
	if got := live(); got != 3 {
		t.Fatalf("live leases after 3 grants = %v, want 3", got)
	}
	if err := ms[0].Release(b.ctx, a.Resource, a.ID); err != nil {
		t.Fatal(err)
	}
	expire(t, b, "live:c")
	if got := live(); got != 1 {
		t.Fatalf("live leases after a release and an expiry = %v, want 1", got)
	}
}

// TestListenerReconnectCounted: when the listener's session is terminated
// while a caller waits, the listener connects again (one reconnect), wakes
// the waiting head once (cause listener, not notify), and the release that
// follows, by another node, wakes it once more (cause notify). (A release
// through the waiter's own Manager wakes it at once and may wake it again
// when its own notification arrives: two wake-ups.)
func TestListenerReconnectCounted(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 2)
	m, other := ms[0], ms[1]
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	wakes := func(cause string) float64 { return count(t, reg, "lockbank_lock_wakeups_total", "cause", cause) }
	held := mustAcquire(t, other, "reconnect", "holder", time.Minute)
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		_, err := m.Acquire(ctx, "reconnect", "waiter", time.Minute)
		got <- err
	}()
	wait.Until(t, 10*time.Second, "the waiter registered and the listener's first connection", func() bool {
		return lockmgr.Registered(m, "reconnect") && lockmgr.ListenerConnects(m) == 1
	})
	notify, listener := wakes("notify"), wakes("listener")

	// The listener's session is the one holding lockmgr's advisory lock.
	var terminated int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = 1818979687 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&terminated); err != nil {
		t.Fatal(err)
	}
	if terminated != 1 {
		t.Fatalf("terminated %d listener sessions, want 1", terminated)
	}
	wait.Until(t, 10*time.Second, "the listener to connect again", func() bool { return lockmgr.ListenerConnects(m) == 2 })
	if got := count(t, reg, "lockbank_lock_listener_reconnects_total", "", ""); got != 1 {
		t.Errorf("reconnects = %v, want 1", got)
	}
	if d := wakes("listener") - listener; d != 1 {
		t.Errorf("listener wake-ups after the reconnect moved by %v, want 1", d)
	}
	if d := wakes("notify") - notify; d != 0 {
		t.Errorf("notify wake-ups moved by %v with no release, want 0", d)
	}

	if err := other.Release(b.ctx, held.Resource, held.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if d := wakes("notify") - notify; d != 1 {
		t.Errorf("notify wake-ups after one release moved by %v, want 1", d)
	}
	if got := wakes("expiry"); got != 0 {
		t.Errorf("expiry wake-ups = %v, want 0: no lease ran out", got)
	}
}
