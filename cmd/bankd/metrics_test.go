package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/internal/pgtest"
)

// scrape GETs url and returns the body of a 200 answer.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %.200s", url, resp.StatusCode, body)
	}
	return string(body)
}

// TestMetricsEndpoint: /metrics is on the API's listener by default, with
// the HTTP requests counted by route pattern, the pool, the lock manager, the
// accounts and the Go runtime and process; --metrics-addr moves it to a
// listener of its own, and the API's then answers 404; --metrics=false
// (only for measuring their cost) serves none.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.URL(t)
	t.Run("OnTheAPIListener", func(t *testing.T) {
		b := startBankd(t, map[string]string{"DATABASE_URL": dbURL})
		createAccount(t, b.api, "alice", 10)
		body := scrape(t, b.url+"/metrics")
		for _, want := range []string{
			`lockbank_http_requests_total{method="POST",route="/v1/accounts",status="201"} 1`,
			"# HELP lockbank_db_pool_max_connections ",
			"# TYPE lockbank_lock_grants_total counter",
			"# TYPE lockbank_account_batch_transactions_total counter",
			"# TYPE go_goroutines gauge",
			"# TYPE process_cpu_seconds_total counter",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
	t.Run("OnItsOwnListener", func(t *testing.T) {
		metricsAddr := freeAddr(t)
		b := startBankd(t, map[string]string{"DATABASE_URL": dbURL, "BANKD_METRICS_ADDR": metricsAddr})
		if body := scrape(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(body, "lockbank_lock_waiters 0") {
			t.Errorf("--metrics-addr /metrics lacks the lock waiters gauge:\n%.500s", body)
		}
		resp, err := http.Get(b.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("the API address answers /metrics with %d; want 404", resp.StatusCode)
		}
	})
	t.Run("Off", func(t *testing.T) {
		b := startBankd(t, map[string]string{"DATABASE_URL": dbURL, "BANKD_METRICS": "false"})
		createAccount(t, b.api, "alice", 10)
		resp, err := http.Get(b.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("with metrics off, /metrics answers %d; want 404", resp.StatusCode)
		}
	})
}
