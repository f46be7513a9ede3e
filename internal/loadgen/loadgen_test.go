package loadgen

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/bankdtest"
	"github.com/lockbank/lockbank/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestBench runs a tiny bench against bankd's handler on a real database:
// every scenario, level and target is measured, bankd's runs carry their
// ratio to raw SQL, and the load leaves every account sound — raw SQL's
// withdrawals included, in the ledger.
func TestBench(t *testing.T) {
	t.Parallel()
	srv := bankdtest.Start(t, nil)
	ctx := context.Background()
	var (
		accts Accounts
		heard []Run
	)
	cfg := Config{Scenarios: []string{"hot", "spread"}, Clients: []int{1, 3}, Strategies: []string{"row", "lease"}, Baseline: true,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Spread: 20, Nodes: []string{srv.URL, srv.URL}, Pool: srv.Pool,
		RSS: func() float64 { return 12.5 }, Seeded: func(a Accounts) { accts = a }, Done: func(r Run) { heard = append(heard, r) }}
	res, err := Bench(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(accts.Spread) != 20 || len(accts.All()) != 21 || res.Accounts != 20 || res.Nodes != 2 || !res.Consistent || len(res.Unsound) != 0 {
		t.Fatalf("seeded %+v, result %+v; want 1 hot and 20 spread, consistent", accts, res)
	}
	runs := res.Runs
	if len(runs) != 2*2*3 || len(heard) != len(runs) {
		t.Fatalf("%d runs, %d heard; want 12 (hot and spread × 1 and 3 clients × raw-sql, row, lease)", len(runs), len(heard))
	}
	for i, r := range runs {
		want := []string{TargetRawSQL, "row", "lease"}[i%3]
		if r.Target != want || r.OK < 1 || r.Errors != nil || r.P99Ms < r.P50Ms || r.Throughput <= 0 || r.RSSMiB != 12.5 {
			t.Errorf("run %d %+v: want %s with successes, no errors, p99 ≥ p50", i, r, want)
		}
		if (r.Target == TargetRawSQL) != (r.VsRawSQL == 0) {
			t.Errorf("run %+v: only bankd's runs carry a ratio to raw SQL", r)
		}
	}
	if bad, err := account.NewService(srv.Pool, account.Options{}).Audit(ctx, accts.All()); err != nil || len(bad) != 0 {
		t.Fatalf("audit after the load: %v, %v", bad, err)
	}
	var rawEntries int
	if err := srv.Pool.QueryRow(ctx, `SELECT count(*) FROM ledger_entries WHERE strategy = 'raw-sql'`).Scan(&rawEntries); err != nil || rawEntries == 0 {
		t.Fatalf("%d raw-sql entries (%v): the baseline's withdrawals must be in the ledger", rawEntries, err)
	}
}

// TestBenchComparesMetricsOnAndOff: with MetricsOff, every bankd run is
// made twice, on the nodes with metrics and on those without, in an order
// that alternates; only the former are scraped, and only during their runs;
// each run with metrics carries its ratio to the one without.
func TestBenchComparesMetricsOnAndOff(t *testing.T) {
	t.Parallel()
	srv := bankdtest.Start(t, nil)
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// Two doors to one bankd, each counting the scrapes it gets.
	front := func(scrapes *atomic.Int64) string {
		proxy := httputil.NewSingleHostReverseProxy(target)
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/metrics" {
				scrapes.Add(1)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	var onScrapes, offScrapes atomic.Int64
	var scrapedBy []int64 // the scrapes of the nodes with metrics by the end of each run
	cfg := Config{Scenarios: []string{"hot"}, Clients: []int{1, 2}, Strategies: []string{"row"}, Baseline: true,
		Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Pool: srv.Pool,
		Nodes: []string{front(&onScrapes)}, MetricsOff: []string{front(&offScrapes)}, Scrape: 20 * time.Millisecond,
		Done: func(Run) { scrapedBy = append(scrapedBy, onScrapes.Load()) }}
	res, err := Bench(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res.Runs {
		got = append(got, r.Target)
		if r.OK < 1 || r.Errors != nil {
			t.Errorf("run %+v: want successes and no errors", r)
		}
	}
	want := []string{TargetRawSQL, "row/metrics-off", "row", TargetRawSQL, "row", "row/metrics-off"}
	if !slices.Equal(got, want) {
		t.Fatalf("targets %v; want %v", got, want)
	}
	for i, r := range res.Runs {
		before := int64(0)
		if i > 0 {
			before = scrapedBy[i-1]
		}
		if scraped := scrapedBy[i] > before; scraped != (r.Target == "row") {
			t.Errorf("run %d (%s): scraped %d times; want scrapes during the runs with metrics only", i, r.Target, scrapedBy[i]-before)
		}
		off := res.Runs[slices.IndexFunc(res.Runs, func(o Run) bool { return o.Clients == r.Clients && o.Target == "row/metrics-off" })]
		if r.Target == "row" && r.VsMetricsOff != r.Throughput/off.Throughput {
			t.Errorf("run %+v: ratio to metrics off %v, want %v", r, r.VsMetricsOff, r.Throughput/off.Throughput)
		}
		if r.Target != "row" && r.VsMetricsOff != 0 {
			t.Errorf("run %+v carries a ratio to metrics off", r)
		}
	}
	if offScrapes.Load() != 0 {
		t.Fatalf("the nodes without metrics were scraped %d times", offScrapes.Load())
	}
}

// TestBenchFindsUnsoundAccounts: an account whose balance moved without
// its ledger during the load is reported, and the bench is not consistent.
func TestBenchFindsUnsoundAccounts(t *testing.T) {
	t.Parallel()
	srv := bankdtest.Start(t, nil)
	var hot int64
	cfg := Config{Scenarios: []string{"hot"}, Clients: []int{1}, Strategies: []string{"row"}, Duration: 100 * time.Millisecond,
		Nodes: []string{srv.URL}, Pool: srv.Pool, Seeded: func(a Accounts) { hot = a.Hot },
		Done: func(Run) {
			if _, err := srv.Pool.Exec(context.Background(), `UPDATE accounts SET balance = balance - 7 WHERE id = $1`, hot); err != nil {
				t.Fatal(err) // Done runs on the test's goroutine, inside Bench
			}
		}}
	res, err := Bench(context.Background(), cfg)
	if err != nil || res.Consistent || len(res.Unsound) != 1 || res.Unsound[0] != hot {
		t.Fatalf("result %+v, %v; want account %d unsound", res, err, hot)
	}
}

// TestMeasureStops: a canceled context ends the bench after the run in
// progress, with the context's error.
func TestMeasureStops(t *testing.T) {
	t.Parallel()
	srv := bankdtest.Start(t, nil)
	accts, err := Seed(context.Background(), account.NewService(srv.Pool, account.Options{}), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Scenarios: []string{"hot"}, Clients: []int{1, 2, 4}, Strategies: []string{"row"}, Duration: 200 * time.Millisecond,
		Nodes: []string{srv.URL}, Pool: srv.Pool, Done: func(Run) { cancel() }}
	runs, err := Measure(ctx, cfg, accts)
	if err != context.Canceled || len(runs) != 1 {
		t.Fatalf("%d runs, %v; want the first run, then context.Canceled", len(runs), err)
	}
}

func TestRatiosAndPercentiles(t *testing.T) {
	t.Parallel()
	runs := []Run{
		{Scenario: "hot", Clients: 4, Target: TargetRawSQL, Throughput: 100},
		{Scenario: "hot", Clients: 4, Target: "row", Throughput: 250},
		{Scenario: "hot", Clients: 8, Target: "row", Throughput: 300}, // no baseline at 8
		{Scenario: "spread", Clients: 4, Target: "row", Throughput: 50},
	}
	fillRatios(runs)
	if runs[0].VsRawSQL != 0 || runs[1].VsRawSQL != 2.5 || runs[2].VsRawSQL != 0 || runs[3].VsRawSQL != 0 {
		t.Fatalf("ratios %v %v %v %v; want only hot/4/row at 2.5", runs[0].VsRawSQL, runs[1].VsRawSQL, runs[2].VsRawSQL, runs[3].VsRawSQL)
	}
	var ms []time.Duration
	for i := 1; i <= 100; i++ {
		ms = append(ms, time.Duration(i)*time.Millisecond)
	}
	if p50, p99, p100 := percentileMs(ms, 0.5), percentileMs(ms, 0.99), percentileMs(ms, 1); p50 != 50 || p99 != 99 || p100 != 100 {
		t.Fatalf("p50 %v, p99 %v, p100 %v of 1…100 ms", p50, p99, p100)
	}
	if s := ErrorSummary(map[string]int{"timeout": 2, "lock_timeout": 1}); s != "  errors: lock_timeout×1 timeout×2" {
		t.Fatalf("summary %q", s)
	}
}

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res := Result{Machine: Machine(), Runs: []Run{
		{Scenario: "hot", Target: TargetRawSQL, Clients: 1, Throughput: 10, P99Ms: 5},
		{Scenario: "hot", Target: "row", Clients: 1, Throughput: 20, P99Ms: 2},
		{Scenario: "hot", Target: "row", Clients: 16, Throughput: 80, P99Ms: 4},
		{Scenario: "spread", Target: "row", Clients: 1, Throughput: 30, P99Ms: 1},
	}, Consistent: true}
	if err := WriteFiles(dir, res); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(data, &back); err != nil || len(back.Runs) != 4 || !back.Consistent || back.Machine != res.Machine {
		t.Fatalf("results.json: %v, %+v", err, back)
	}
	for scenario, lines := range map[string]int{"hot": 2 * 2, "spread": 1 * 2} { // a line a target, in each of two panels
		svg, err := os.ReadFile(filepath.Join(dir, "bench-"+scenario+".svg"))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			XMLName   xml.Name   `xml:"svg"`
			Polylines []struct{} `xml:"polyline"`
		}
		if err := xml.Unmarshal(svg, &doc); err != nil || len(doc.Polylines) != lines {
			t.Fatalf("bench-%s.svg: %v, %d polylines, want %d\n%s", scenario, err, len(doc.Polylines), lines, strings.TrimSpace(string(svg[:min(len(svg), 300)])))
		}
	}
}
