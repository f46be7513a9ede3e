package lockmgr_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/lockmgr"
)

// TestAutoTTL: the learned TTL is the initial one until enough is known,
// then the 0.99 quantile of recent critical sections times the factor,
// clamped; slow work lengthens it, and quick work shortens it again once the
// slow sections leave the window.
func TestAutoTTL(t *testing.T) {
	t.Parallel()
	a := lockmgr.NewAutoTTL(lockmgr.AutoTTLOptions{Min: 200 * time.Millisecond, Max: 10 * time.Second,
		Initial: 5 * time.Second, Factor: 4, Window: 32, MinSamples: 8})
	for i := range 7 {
		a.Observe(time.Millisecond)
		if got := a.TTL(); got != 5*time.Second {
			t.Fatalf("after %d samples: TTL %s, want the initial 5s until 8 are known", i+1, got)
		}
	}
	a.Observe(time.Millisecond)
	if got := a.TTL(); got != 200*time.Millisecond {
		t.Fatalf("quick work (1ms × 4 = 4ms): TTL %s, want the minimum 200ms", got)
	}
	// Slow work: a section of 300ms is learned at once.
	a.Observe(300 * time.Millisecond)
	if got := a.TTL(); got != 1200*time.Millisecond {
		t.Fatalf("after a 300ms section: TTL %s, want 300ms × 4 = 1.2s", got)
	}
	for range 3 {
		a.Observe(5 * time.Second)
	}
	if got := a.TTL(); got != 10*time.Second {
		t.Fatalf("after 5s sections: TTL %s, want the maximum 10s", got)
	}
	// The slow sections leave the window of 32 (the TTL is fitted again
	// every 8 samples).
	for range 40 {
		a.Observe(20 * time.Millisecond)
	}
	if got := a.TTL(); got != 200*time.Millisecond {
		t.Fatalf("after 40 quick sections: TTL %s, want 20ms × 4 clamped to 200ms", got)
	}
	for range 32 {
		a.Observe(100 * time.Millisecond)
	}
	if got := a.TTL(); got != 400*time.Millisecond {
		t.Fatalf("after 32 sections of 100ms: TTL %s, want 400ms", got)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(a.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		got[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
	}
	if got["lockbank_lease_learned_ttl_seconds"] != 0.4 || got["lockbank_lease_learned_ttl_samples"] != 32 {
		t.Fatalf("collected %v; want the learned TTL 0.4 s from 32 samples", got)
	}
}
