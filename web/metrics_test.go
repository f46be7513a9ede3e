package web_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

// lines decodes every JSON log line.
func (b *lockedBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// observed serves the real handler with every collector registered on a
// registry of the test's own and JSON logs into a buffer, as bankd does.
func observed(t *testing.T) (bundle, *prometheus.Registry, *lockedBuffer) {
	t.Helper()
	pool := pgtest.New(t)
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	locks := lockmgr.New(pool, lockmgr.Options{Logger: logger})
	t.Cleanup(locks.Close)
	accounts := account.NewService(pool, account.Options{Locks: locks})
	httpMetrics := web.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(locks.Collector(), accounts.Collector(), httpMetrics)
	srv := httptest.NewServer(web.NewServer(logger, "node-t", accounts, locks, nil, pool.Ping, httpMetrics))
	t.Cleanup(srv.Close)
	return bundle{pool: pool, url: srv.URL}, reg, logs
}

// metricValue sums, over the series of name whose labels include labels, a
// counter's or gauge's value or a histogram's sample count; 0 when none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
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
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// TestMetricsCountAKnownSequence drives 3 withdrawals that succeed, 1
// refused for insufficient funds, a lease that runs out and is taken over,
// and 1 withdrawal with the stale token of the lease taken over, and checks
// that each counter moved by exactly that.
func TestMetricsCountAKnownSequence(t *testing.T) {
	t.Parallel()
	b, reg, logs := observed(t)
	id := strconv.FormatInt(b.createAccount(t, 100), 10)
	withdraw := func(body string, header map[string]string) response {
		return b.do(t, request{"POST", "/v1/accounts/" + id + "/withdrawals", header, body})
	}
	for range 3 {
		if r := withdraw(`{"amount":10}`, nil); r.status != http.StatusCreated {
			t.Fatalf("withdrawal: %d %s", r.status, r.body)
		}
	}
	if r := withdraw(`{"amount":1000}`, nil); r.status != http.StatusConflict || r.json(t)["code"] != "insufficient_funds" {
		t.Fatalf("overdraft: %d %s", r.status, r.body)
	}
	staleToken, firstLeaseID := leaseOf(t, b.lock(t, "account:"+id, `{"holder":"paused","ttl_ms":200}`))
	// Waits in Acquire until the first lease runs out, then takes it over.
	newToken, secondLeaseID := leaseOf(t, b.lock(t, "account:"+id, `{"holder":"next","ttl_ms":60000,"wait_ms":10000}`))
	r := withdraw(`{"amount":1}`, map[string]string{"Fencing-Token": strconv.FormatInt(staleToken, 10), "X-Request-Id": "req-stale-1"})
	if r.status != http.StatusConflict || r.json(t)["code"] != "stale_fencing_token" {
		t.Fatalf("stale token: %d %s", r.status, r.body)
	}

	type want struct {
		name   string
		labels map[string]string
		value  float64
	}
	changes := "lockbank_account_changes_total"
	for _, w := range []want{
		{changes, map[string]string{"kind": "withdrawal", "strategy": "row", "outcome": "ok"}, 3},
		{changes, map[string]string{"kind": "withdrawal", "strategy": "row", "outcome": "insufficient_funds"}, 1},
		{changes, map[string]string{"kind": "withdrawal", "strategy": "row", "outcome": "stale_fencing_token"}, 1},
		{changes, nil, 5},
		{"lockbank_account_change_duration_seconds", nil, 5},
		{"lockbank_account_batch_transactions_total", map[string]string{"path": "lone"}, 3},
		// The lone statement leaves a refusal and a fenced change to a batch of one.
		{"lockbank_account_batch_transactions_total", map[string]string{"path": "batch"}, 2},
		{"lockbank_account_batch_size", nil, 5},
		{"lockbank_account_outcome_unknown_total", nil, 0},
		{"lockbank_account_idempotent_replays_total", nil, 0},
		{"lockbank_lock_grants_total", map[string]string{"result": "acquired"}, 2},
		{"lockbank_lock_grants_total", nil, 2},
		{"lockbank_lock_acquire_wait_seconds", nil, 1},
		{"lockbank_lock_takeovers_total", nil, 1},
		{"lockbank_lock_fence_checks_total", map[string]string{"result": "stale"}, 1},
		{"lockbank_lock_fence_checks_total", nil, 1},
		{"lockbank_lock_releases_total", nil, 0},
		{"lockbank_lock_waiters", nil, 0},
		{"lockbank_http_requests_total", map[string]string{"route": "/v1/accounts/{id}/withdrawals", "method": "POST", "status": "201"}, 3},
		{"lockbank_http_requests_total", map[string]string{"route": "/v1/accounts/{id}/withdrawals", "method": "POST", "status": "409"}, 2},
		{"lockbank_http_requests_total", map[string]string{"route": "/v1/locks/{resource}", "method": "POST", "status": "201"}, 2},
		{"lockbank_http_requests_total", nil, 8}, // and the account's creation
		{"lockbank_http_request_duration_seconds", nil, 8},
		{"lockbank_http_requests_in_flight", nil, 0},
	} {
		if got := metricValue(t, reg, w.name, w.labels); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	// The wait ended at the first lease's expiry (more than once only if
	// the local clock woke before the database's). Nothing was released, so
	// no wake-up is a notify; the listener's first connection may wake the
	// head once (cause listener), or merge with the head's own wake.
	wakeups := "lockbank_lock_wakeups_total"
	// On a loaded machine the listener may connect only after the lease ran
	// out: its wake-up is then the one that finds the lease free.
	expiry := metricValue(t, reg, wakeups, map[string]string{"cause": "expiry"})
	if listener := metricValue(t, reg, wakeups, map[string]string{"cause": "listener"}); expiry+listener < 1 {
		t.Errorf("wake-ups at expiry = %v and by the listener's connection = %v, want at least 1 of them", expiry, listener)
	}
	if got := metricValue(t, reg, wakeups, map[string]string{"cause": "notify"}); got != 0 {
		t.Errorf("notify wake-ups = %v with no release, want 0", got)
	}
	if got := metricValue(t, reg, wakeups, map[string]string{"cause": "listener"}); got > 1 {
		t.Errorf("listener wake-ups = %v, want at most 1 (one connection)", got)
	}
	if got := metricValue(t, reg, "lockbank_lock_listener_reconnects_total", nil); got != 0 {
		t.Errorf("listener reconnects = %v, want 0", got)
	}
	// The first lease ran out; the second is live (it is never released).
	if got := metricValue(t, reg, "lockbank_lock_live_leases", nil); got != 1 {
		t.Errorf("live leases = %v, want 1", got)
	}

	t.Run("RequestLogLine", func(t *testing.T) {
		var line map[string]any
		for _, l := range logs.lines(t) {
			if l["msg"] == "request" && l["request_id"] == "req-stale-1" {
				line = l
			}
		}
		if line == nil {
			t.Fatalf("no request line for req-stale-1 in:\n%s", logs)
		}
		for k, v := range map[string]any{"node": "node-t", "route": "/v1/accounts/{id}/withdrawals", "status": 409.0,
			"strategy": "row", "fencing_token": float64(staleToken), "batch_size": 1.0, "problem": "stale_fencing_token"} {
			if line[k] != v {
				t.Errorf("request line %s = %v, want %v: %v", k, line[k], v, line)
			}
		}
		if _, ok := line["duration_ms"].(float64); !ok {
			t.Errorf("request line has no duration_ms: %v", line)
		}
	})
	t.Run("LockEvents", func(t *testing.T) {
		events := map[string]map[string]any{}
		for _, l := range logs.lines(t) {
			if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "lock ") || msg == "fence refused" {
				events[msg] = l
			}
		}
		resource := "account:" + id
		if e := events["lock taken over after expiry"]; e == nil || e["resource"] != resource || e["fencing_token"] != float64(newToken) {
			t.Errorf("takeover event: %v", e)
		}
		if e := events["lock granted"]; e == nil || e["holder"] != "next" || e["ttl"] == nil {
			t.Errorf("grant event: %v", e)
		}
		e := events["fence refused"]
		if e == nil || e["resource"] != resource || e["fencing_token"] != float64(staleToken) || e["newest_token"] != float64(newToken) {
			t.Errorf("fence event: %v", e)
		}
	})
	t.Run("NoLeaseIDs", func(t *testing.T) {
		for _, leaseID := range []string{firstLeaseID, secondLeaseID} {
			if strings.Contains(logs.String(), leaseID) {
				t.Errorf("lease id %s is in the log:\n%s", leaseID, logs)
			}
		}
	})
}
