package poolmetrics_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/poolmetrics"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestReadsThePoolAtEveryScrape: a connection held shows as acquired, one
// given back as idle, and each acquire is counted.
func TestReadsThePoolAtEveryScrape(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(poolmetrics.New(pool))
	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Release) // a held connection would keep the pool, and the test, from closing
	held := `
# HELP lockbank_db_pool_acquired_connections Connections of the pool in use.
# TYPE lockbank_db_pool_acquired_connections gauge
lockbank_db_pool_acquired_connections 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(held), "lockbank_db_pool_acquired_connections"); err != nil {
		t.Fatal(err)
	}
	before := pool.Stat().AcquireCount()
	conn.Release()
	given := `
# HELP lockbank_db_pool_acquired_connections Connections of the pool in use.
# TYPE lockbank_db_pool_acquired_connections gauge
lockbank_db_pool_acquired_connections 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(given), "lockbank_db_pool_acquired_connections"); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		switch f.GetName() {
		case "lockbank_db_pool_acquires_total":
			if got := f.GetMetric()[0].GetCounter().GetValue(); got != float64(before) {
				t.Errorf("acquires = %v, want %d", got, before)
			}
		case "lockbank_db_pool_idle_connections":
			if got := f.GetMetric()[0].GetGauge().GetValue(); got < 1 {
				t.Errorf("idle = %v, want at least the connection given back", got)
			}
		case "lockbank_db_pool_max_connections":
			if got := f.GetMetric()[0].GetGauge().GetValue(); got != float64(pool.Config().MaxConns) {
				t.Errorf("max = %v, want %d", got, pool.Config().MaxConns)
			}
		}
	}
}
