package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/poolmetrics"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

// BenchmarkScrape is one GET /metrics of bankd's registry, as run wires it
// (the live leases gauge's query included), to set beside the CPU bankd
// spends in a second under load (BENCHMARKS.md).
func BenchmarkScrape(b *testing.B) {
	pool := pgtest.New(b)
	locks := lockmgr.New(pool, lockmgr.Options{})
	b.Cleanup(locks.Close)
	accounts := account.NewService(pool, account.Options{Locks: locks})
	reg := newRegistry(locks.Collector(), accounts.Collector(), web.NewMetrics(), poolmetrics.New(pool))
	h := metricsHandler(reg)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET /metrics: %d", w.Code)
		}
	}
}
