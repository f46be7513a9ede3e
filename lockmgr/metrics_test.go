package lockmgr_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

	for _, w := range []struct {
		name, label, value string
		want               float64
	}{
		{"lockbank_lock_grants_total", "result", "acquired", 1},
		{"lockbank_lock_grants_total", "result", "held", 1},
		{"lockbank_lock_grants_total", "result", "timeout", 1},
		{"lockbank_lock_grants_total", "result", "error", 0},
		{"lockbank_lock_renewals_total", "result", "renewed", 1},
		{"lockbank_lock_renewals_total", "result", "lost", 1},
		{"lockbank_lock_releases_total", "result", "released", 1},
		{"lockbank_lock_releases_total", "result", "not_holder", 1},
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
