package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/loadgen"
	"github.com/lockbank/lockbank/internal/pgbouncer"
	"github.com/lockbank/lockbank/internal/pglocal"
)

// violations collects what the OpenAPI document does not allow in the
// exchanges of every test's cluster (contract.Transport on the nodes' API
// clients); TestMain fails the run if there is any. One collector for all:
// the clusters are started inside run, out of a test's reach.
var violations contractViolations

type contractViolations struct {
	mu   sync.Mutex
	msgs []string
}

func (v *contractViolations) Errorf(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
}

func TestMain(m *testing.M) {
	wrapTransport = func(base http.RoundTripper) http.RoundTripper { return contract.Transport(&violations, base) }
	code := m.Run()
	if len(violations.msgs) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the OpenAPI document does not allow %d exchanges with the nodes:\n%s\n",
			len(violations.msgs), strings.Join(violations.msgs, "\n"))
		code = 1
	}
	os.Exit(code)
}

// bankctl runs bankctl as main does, with --json, on its own cluster, and
// returns the result object and the error run returned.
func bankctl(t *testing.T, args ...string) (map[string]any, []any, error) {
	t.Helper()
	if _, err := pglocal.FindBinDir(); err != nil {
		t.Skip("bankctl's own cluster needs the PostgreSQL server binaries:", err)
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := run(ctx, append(args, "--json"), &out, &errOut)
	var obj map[string]any
	var list []any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if jerr := json.Unmarshal([]byte(line), &m); jerr != nil {
			t.Fatalf("output line is not JSON: %q (%v)\nstderr: %s", line, jerr, errOut.String())
		}
		switch r := m["result"].(type) {
		case map[string]any:
			obj = r
		case []any:
			list = r
		}
	}
	if obj == nil && list == nil {
		t.Fatalf("no result in the output:\n%s\nstderr: %s\nerr: %v", out.String(), errOut.String(), err)
	}
	return obj, list, err
}

func TestRace(t *testing.T) {
	t.Parallel()
	// A hold of a second: both unsafe withdrawals read before either writes,
	// however loaded the machine.
	_, rows, err := bankctl(t, "race", "--hold", "1s", "--clients", "3")
	if err != nil {
		t.Fatalf("race: %v (want exit 0: row and lease are safe)", err)
	}
	verdicts := map[string]string{}
	for _, r := range rows {
		row := r.(map[string]any)
		verdicts[row["strategy"].(string)] = row["verdict"].(string)
	}
	want := map[string]string{"unsafe": verdictDoubleSpend, "row": verdictSafe, "lease": verdictSafe}
	for s, v := range want {
		if verdicts[s] != v {
			t.Errorf("%s: verdict %q, want %q (all: %v)", s, verdicts[s], v, verdicts)
		}
	}
}

func TestPause(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		verdict string
		late    string
	}{
		{"Fenced", []string{"pause"}, verdictFenced, "stale_fencing_token"},
		{"NoFence", []string{"pause", "--strategy", "lease-nofence"}, verdictStaleOverwrite, "201"},
		{"Client", []string{"pause", "--client"}, verdictFenced, "stale_fencing_token"},
		// A hold past the row-lock TTL (2s): PostgreSQL ends node-a's session
		// even if a loaded machine delivers the freeze late.
		{"RowLock", []string{"pause", "--strategy", "row", "--hold", "5s"}, verdictRowLockEnded, "database_unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, _, err := bankctl(t, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			if res["verdict"] != tt.verdict || res["late_write"] != tt.late || (tt.name != "RowLock" && res["token_b"].(float64) <= res["token_a"].(float64)) {
				t.Fatalf("%v: %v; want %s with node-a's late write %s", tt.args, res, tt.verdict, tt.late)
			}
		})
	}
}

func TestCrash(t *testing.T) {
	t.Parallel()
	res, _, err := bankctl(t, "crash")
	if err != nil {
		t.Fatalf("crash: %v", err)
	}
	waited, remaining := res["node_b_waited_ms"].(float64), res["lease_remaining_at_kill_ms"].(float64)
	if res["verdict"] != "FREED AFTER TTL" || waited < remaining*0.7 || waited > remaining+5000 {
		t.Fatalf("crash: %v; want node-b to wait about the %vms left on node-a's lease", res, remaining)
	}
}

// TestCrashWithLearnedTTL: the crash story with nodes that learn their
// lease TTL (--lease-ttl auto) beside the fixed 2s of TestCrash's cluster,
// in one run: node-a learns a short TTL from its quick withdrawals, and its
// death frees the account for node-b much sooner than the fixed TTL does.
func TestCrashWithLearnedTTL(t *testing.T) {
	t.Parallel()
	fixed, _, err := bankctl(t, "crash")
	if err != nil {
		t.Fatalf("crash: %v", err)
	}
	auto, _, err := bankctl(t, "crash", "--lease-ttl", "auto")
	if err != nil {
		t.Fatalf("crash --lease-ttl auto: %v", err)
	}
	learned := auto["learned_ttl_ms"].(float64)
	if learned < 200 || learned > 1000 || fixed["learned_ttl_ms"].(float64) != 0 {
		t.Fatalf("learned TTL %vms with auto, %vms with the fixed TTL; want 200ms–1s from quick work, and none when fixed", learned, fixed["learned_ttl_ms"])
	}
	autoWait, fixedWait := auto["node_b_waited_ms"].(float64), fixed["node_b_waited_ms"].(float64)
	if auto["verdict"] != "FREED AFTER TTL" || autoWait > learned+1000 || autoWait*2 > fixedWait {
		t.Fatalf("node-b waited %vms after a holder with a learned TTL of %vms died, %vms after one with the fixed 2s; want well under half", autoWait, learned, fixedWait)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"dance"},
		{"race", "--clients", "0"},
		{"race", "--clients", "1001"},
		{"pause", "--strategy", "optimistic"},
		{"pause", "--client", "--strategy", "lease-nofence"},
		{"crash", "extra"},
		{"race", "--docker", "x"},
		{"bench", "--clients", "0"},
		{"bench", "--scenarios", "cold"},
		{"bench", "--strategies", "unsafe"},
		{"bench", "--duration", "10ms"},
		{"bench", "--metrics-cost", "--strategies", ""},
		{"bench", "--scrape", "-1s"},
		{"check", "--faults", "failover"},            // needs --ha
		{"check", "--ha", "--faults", "db-restart"},  // one PostgreSQL's fault
		{"check", "--ha", "--targets", "http://x:1"}, // --ha is an own cluster
	} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		var exit *exitError
		if !errors.As(err, &exit) || exit.code != exitUsage {
			t.Errorf("bankctl %v: %v, want exit code %d", args, err, exitUsage)
		}
	}
}

// TestCheckUnderFaults is the short version of the bank test: the safe
// strategies under every fault must produce a valid history, with faults
// that really happened and bit — every pause's late write refused by the
// fence — and writes retried with their Idempotency-Key.
func TestCheckUnderFaults(t *testing.T) {
	t.Parallel()
	res, _, err := bankctl(t, "check", "--duration", "16s", "--fault-every", "2s", "--clients", "12")
	if err != nil {
		t.Fatalf("check: %v: %v", err, res["violations"])
	}
	faults := res["faults"].(map[string]any)
	if res["valid"] != true || res["operations"].(float64) < 200 || len(faults) < 4 {
		t.Fatalf("check: %v; want a valid history of at least 200 operations under all four faults", res)
	}
	probes, fenced := res["pause_probes"].(float64), res["pause_probes_fenced"].(float64)
	if probes < 1 || fenced != probes || res["fence_rejections"].(float64) < probes {
		t.Fatalf("check: %v pauses inside a lease, %v late writes refused by the fence, %v fence refusals in all; want every pause's late write refused", probes, fenced, res["fence_rejections"])
	}
	if res["retried_writes"].(float64) < 1 {
		t.Fatalf("check: no write was retried with its Idempotency-Key under four kinds of fault: %v", res)
	}
}

// TestCheckThroughPgBouncer: the bank test with the nodes behind a private
// PgBouncer in transaction mode (--pgbouncer: --pooler, exec mode, LISTEN
// and migrations on the direct connection) gives a valid history under
// every fault, the pause's late write refused by the fence.
func TestCheckThroughPgBouncer(t *testing.T) {
	t.Parallel()
	if _, err := pgbouncer.Binary(); err != nil {
		t.Skipf("no PgBouncer to run behind: %v", err)
	}
	res, _, err := bankctl(t, "check", "--pgbouncer", "--duration", "10s", "--fault-every", "2s", "--clients", "12")
	if err != nil {
		t.Fatalf("check through PgBouncer: %v: %v", err, res["violations"])
	}
	if res["valid"] != true || res["operations"].(float64) < 200 {
		t.Fatalf("check through PgBouncer: %v; want a valid history of at least 200 operations", res)
	}
	if probes := res["pause_probes"].(float64); probes < 1 || res["pause_probes_fenced"].(float64) != probes {
		t.Fatalf("check through PgBouncer: %v pauses inside a lease, %v late writes refused; want every one refused", probes, res["pause_probes_fenced"])
	}
}

// TestCheckFindsTheRace: the same check with the unsafe strategy must find
// violations — the checker and the workload can fail.
func TestCheckFindsTheRace(t *testing.T) {
	t.Parallel()
	res, _, err := bankctl(t, "check", "--duration", "5s", "--faults", "", "--strategies", "unsafe")
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != exitUnsafe || res["valid"] != false {
		t.Fatalf("check with unsafe withdrawals: %v, %v; want violations and exit %d", err, res, exitUnsafe)
	}
}

// TestBench runs a tiny bench: every scenario, level and target is measured
// in the same run, bankd's figures come with their ratio to raw SQL, the
// files are written, and the load left every bench account consistent.
func TestBench(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	res, _, err := bankctl(t, "bench", "--clients", "1,4", "--duration", "1s", "--warmup", "200ms", "--accounts", "50", "--out", out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	runs := res["runs"].([]any)
	if len(runs) != 2*2*3 || res["consistent"] != true {
		t.Fatalf("bench: %d runs, consistent %v; want 12 (hot and spread × 1 and 4 clients × raw-sql, row, lease) and consistent", len(runs), res["consistent"])
	}
	for _, r := range runs {
		run := r.(map[string]any)
		if run["ok"].(float64) < 1 || run["errors"] != nil || run["p99_ms"].(float64) < run["p50_ms"].(float64) {
			t.Errorf("run %v: want successes, no errors, p99 ≥ p50", run)
		}
		if ratio, _ := run["vs_raw_sql"].(float64); (run["target"] == loadgen.TargetRawSQL) != (ratio == 0) {
			t.Errorf("run %v: only bankd's runs carry a ratio to raw SQL", run)
		}
		if rss, _ := run["bankd_rss_mib"].(float64); rss <= 0 {
			t.Errorf("run %v: no resident set measured for the own bankd", run)
		}
	}
	for _, f := range []string{"results.json", "bench-hot.svg", "bench-spread.svg"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestBenchMetricsCost: --metrics-cost starts node-b with metrics off and
// runs every bankd cell on both nodes; the run with metrics carries its
// ratio to the one without, and bankd's runs their CPU per operation.
func TestBenchMetricsCost(t *testing.T) {
	t.Parallel()
	res, _, err := bankctl(t, "bench", "--metrics-cost", "--scenarios", "hot", "--clients", "2", "--strategies", "row",
		"--duration", "1s", "--warmup", "0s", "--accounts", "2", "--out", t.TempDir())
	if err != nil {
		t.Fatalf("bench --metrics-cost: %v", err)
	}
	if res["bankd_nodes"] != 1.0 {
		t.Errorf("bankd_nodes %v; want 1: node-a carries the load with metrics, node-b without", res["bankd_nodes"])
	}
	ratios := map[string]float64{}
	for _, r := range res["runs"].([]any) {
		run := r.(map[string]any)
		if run["ok"].(float64) < 1 || run["errors"] != nil {
			t.Errorf("run %v: want successes, no errors", run)
		}
		ratios[run["target"].(string)], _ = run["vs_metrics_off"].(float64)
		if cpu, _ := run["bankd_cpu_ms_per_op"].(float64); (run["target"] == loadgen.TargetRawSQL) != (cpu == 0) {
			t.Errorf("run %v: want the CPU per operation of bankd's runs (from /proc), none for raw SQL", run)
		}
	}
	if len(ratios) != 3 || ratios["row"] <= 0 || ratios["row/metrics-off"] != 0 || ratios[loadgen.TargetRawSQL] != 0 {
		t.Fatalf("runs' ratios to metrics off %v; want raw-sql, row with one, row/metrics-off", ratios)
	}
}
