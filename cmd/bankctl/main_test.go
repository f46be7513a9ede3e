package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/loadgen"
	"github.com/lockbank/lockbank/internal/pglocal"
)

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
	res, _, err := bankctl(t, "check", "--duration", "12s", "--fault-every", "2s", "--clients", "12")
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
