package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// targetRawSQL is the baseline: the row strategy's transaction issued
// straight from pgx, one connection per client, as an application without a
// service in front of its database would.
const targetRawSQL = "raw-sql"

type benchFlags struct {
	scenarios   string
	clients     string
	strategies  string
	duration    time.Duration
	warmup      time.Duration
	accounts    int
	out         string
	databaseURL string
	baseline    bool
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.scenarios, "scenarios", "hot,spread", "hot (every client on one account), spread (clients on random accounts of --accounts)")
	fs.StringVar(&f.clients, "clients", "1,16,64,256", "concurrency levels: closed-loop clients, each with one request in flight")
	fs.StringVar(&f.strategies, "strategies", "row,lease", "withdrawal strategies to load bankd with")
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "measured time of each run")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured time before each run")
	fs.IntVar(&f.accounts, "accounts", 10000, "accounts of the spread scenario")
	fs.StringVar(&f.out, "out", "bench-results", "directory for results.json and the plots")
	fs.StringVar(&f.databaseURL, "database-url", "", "with --targets: their database, for the bench accounts and the raw-SQL baseline")
	fs.BoolVar(&f.baseline, "baseline", true, "also measure the raw-SQL baseline in the same run")
}

func (f benchFlags) validate() error {
	switch {
	case f.duration < time.Second || f.duration > 10*time.Minute:
		return usageError("--duration must be from 1s to 10m")
	case f.warmup < 0 || f.warmup > time.Minute:
		return usageError("--warmup must be from 0 to 1m")
	case f.accounts < 2 || f.accounts > 1_000_000:
		return usageError("--accounts must be from 2 to 1000000")
	case len(splitList(f.scenarios)) == 0:
		return usageError("--scenarios needs at least one of hot, spread")
	case len(splitList(f.strategies)) == 0 && !f.baseline:
		return usageError("nothing to measure: no --strategies and --baseline=false")
	}
	for _, s := range splitList(f.scenarios) {
		if s != "hot" && s != "spread" {
			return usageError("--scenarios: %q is not one of hot, spread", s)
		}
	}
	for _, s := range splitList(f.strategies) {
		if s != "row" && s != "lease" {
			return usageError("--strategies: %q is not one of row, lease (the unsafe ones are not worth measuring)", s)
		}
	}
	if _, err := f.clientLevels(); err != nil {
		return err
	}
	return nil
}

func (f benchFlags) clientLevels() ([]int, error) {
	var levels []int
	for _, s := range splitList(f.clients) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1024 {
			return nil, usageError("--clients: %q is not a number from 1 to 1024", s)
		}
		levels = append(levels, n)
	}
	if len(levels) == 0 {
		return nil, usageError("--clients needs at least one level")
	}
	return levels, nil
}

// benchRun is one measurement: a target (raw-sql or a bankd strategy) under
// one scenario at one concurrency.
type benchRun struct {
	Scenario   string         `json:"scenario"`
	Target     string         `json:"target"`
	Clients    int            `json:"clients"`
	Seconds    float64        `json:"seconds"`
	OK         int            `json:"ok"`
	Errors     map[string]int `json:"errors,omitempty"`
	Throughput float64        `json:"throughput"` // ok operations per second
	P50Ms      float64        `json:"p50_ms"`
	P95Ms      float64        `json:"p95_ms"`
	P99Ms      float64        `json:"p99_ms"`
	// VsRawSQL is Throughput over the raw-SQL baseline's at the same
	// scenario and concurrency, in the same run.
	VsRawSQL float64 `json:"vs_raw_sql,omitempty"`
	// RSSMiB is the largest resident set of a bankd of the own cluster,
	// sampled at the end of the run.
	RSSMiB float64 `json:"bankd_rss_mib,omitempty"`
}

type benchResult struct {
	Started  time.Time  `json:"started"`
	Machine  string     `json:"machine"`
	Duration string     `json:"duration_per_run"`
	Warmup   string     `json:"warmup_per_run"`
	Nodes    int        `json:"bankd_nodes"`
	Accounts int        `json:"spread_accounts"`
	Runs     []benchRun `json:"runs"`
	// Consistent: after the load, every bench account's balance equals its
	// opening balance plus its ledger.
	Consistent bool `json:"consistent"`
}

// benchOp is one closed-loop operation; it returns the problem code of a
// refusal ("" for success) or an error when no answer came.
type benchOp func(ctx context.Context, rng *rand.Rand, account int64) (code string, err error)

func runBench(ctx context.Context, c *cluster, tl *timeline, f benchFlags) error {
	levels, _ := f.clientLevels()
	dbURL := c.pgURL
	if dbURL == "" {
		dbURL = f.databaseURL
	}
	if dbURL == "" {
		return usageError("bench with --targets needs --database-url: the bench accounts and the raw-SQL baseline go straight to the database")
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return trouble(err)
	}
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return usageError("--database-url: %v", err)
	}
	pcfg.MaxConns = int32(slices.Max(levels)) + 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return trouble(err)
	}
	defer pool.Close()

	hot, err := createBenchAccounts(ctx, pool, "bench-hot", 1)
	if err != nil {
		return trouble(err)
	}
	var spread []int64
	if slices.Contains(splitList(f.scenarios), "spread") {
		if spread, err = createBenchAccounts(ctx, pool, "bench-spread", f.accounts); err != nil {
			return trouble(err)
		}
	}
	tl.note("bench accounts: 1 hot, %d spread; each run: %s warm-up, %s measured", len(spread), f.warmup, f.duration)

	res := benchResult{Started: time.Now().UTC(), Machine: machine(), Duration: f.duration.String(), Warmup: f.warmup.String(),
		Nodes: len(c.nodes), Accounts: len(spread)}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = slices.Max(levels) + 8
	httpClient := &http.Client{Transport: transport, Timeout: time.Minute}
	defer transport.CloseIdleConnections()

	for _, scenario := range splitList(f.scenarios) {
		ids := []int64{hot[0]}
		if scenario == "spread" {
			ids = spread
		}
		for _, clients := range levels {
			var targets []string
			if f.baseline {
				targets = append(targets, targetRawSQL)
			}
			targets = append(targets, splitList(f.strategies)...)
			for _, target := range targets {
				op := bankdOp(httpClient, c.nodes, target)
				if target == targetRawSQL {
					op = rawSQLOp(pool)
				}
				r := drive(ctx, clients, f.warmup, f.duration, ids, op)
				r.Scenario, r.Target = scenario, target
				r.RSSMiB = peakRSS(c)
				res.Runs = append(res.Runs, r)
				tl.note("%-6s %4d clients  %-7s %8.0f/s  p50 %6.2fms  p99 %7.2fms%s", scenario, clients, target, r.Throughput, r.P50Ms, r.P99Ms, errorSummary(r.Errors))
				if ctx.Err() != nil {
					return trouble(ctx.Err())
				}
			}
		}
	}
	fillRatios(res.Runs)
	printBenchTable(tl, res)
	// Speed is worth nothing if money went astray under the load.
	bad, err := inconsistentAccounts(ctx, pool, append(hot, spread...))
	if err != nil {
		return trouble(err)
	}
	res.Consistent = bad == 0
	if err := writeBenchFiles(f.out, res); err != nil {
		return trouble(err)
	}
	tl.printf("\nresults: %s  plots: %s\n", filepath.Join(f.out, "results.json"), filepath.Join(f.out, "bench-*.svg"))
	tl.result(res)
	if bad > 0 {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d bench accounts break balance = opening + deposits - withdrawals", bad)}
	}
	tl.printf("money: every bench account's balance matches its ledger\n")
	return nil
}

// inconsistentAccounts counts the accounts of ids whose balance is not their
// opening balance plus deposits minus withdrawals in their ledger.
func inconsistentAccounts(ctx context.Context, pool *pgxpool.Pool, ids []int64) (int, error) {
	var bad int
	err := pool.QueryRow(ctx, `
		SELECT count(*) FROM accounts a
		LEFT JOIN (
			SELECT account_id, sum(CASE kind WHEN 'deposit' THEN amount ELSE -amount END) AS delta
			FROM ledger_entries WHERE account_id = ANY($1) GROUP BY account_id
		) l ON l.account_id = a.id
		WHERE a.id = ANY($1) AND a.balance <> a.opening_balance + coalesce(l.delta, 0)`, ids).Scan(&bad)
	if err != nil {
		return 0, fmt.Errorf("check the bench accounts: %w", err)
	}
	return bad, nil
}

// createBenchAccounts opens n accounts with the largest balance allowed, so a
// run of one-unit withdrawals never runs dry. Straight SQL: 10,000 accounts
// through the API would take longer than the runs that use them.
func createBenchAccounts(ctx context.Context, pool *pgxpool.Pool, owner string, n int) ([]int64, error) {
	rows, _ := pool.Query(ctx, `
		INSERT INTO accounts (owner, balance, opening_balance)
		SELECT $1, 1000000000000000, 1000000000000000 FROM generate_series(1, $2)
		RETURNING id`, owner, n)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("create bench accounts: %w", err)
	}
	return ids, nil
}

// bankdOp withdraws one unit through bankd with strategy; client i of a run
// always talks to the same node, spreading clients over the nodes.
func bankdOp(hc *http.Client, nodes []*node, strategy string) benchOp {
	body := []byte(`{"amount":1,"strategy":"` + strategy + `"}`)
	var next sync.Mutex
	i := 0
	pick := func() *node {
		next.Lock()
		defer next.Unlock()
		i++
		return nodes[i%len(nodes)]
	}
	return func(ctx context.Context, _ *rand.Rand, account int64) (string, error) {
		n := pick()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url+"/v1/accounts/"+strconv.FormatInt(account, 10)+"/withdrawals", bytes.NewReader(body))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode == http.StatusCreated {
			return "", nil
		}
		var p struct{ Code string }
		if json.Unmarshal(data, &p) != nil || p.Code == "" {
			return "http_" + strconv.Itoa(resp.StatusCode), nil
		}
		return p.Code, nil
	}
}

// rawSQLOp is the row strategy's transaction without bankd: lock the row,
// check funds, update, append to the ledger, commit.
func rawSQLOp(pool *pgxpool.Pool) benchOp {
	return func(ctx context.Context, _ *rand.Rand, account int64) (string, error) {
		code := ""
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var balance int64
			if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, account).Scan(&balance); err != nil {
				return err
			}
			if balance < 1 {
				code = "insufficient_funds"
				return nil
			}
			var after int64
			if err := tx.QueryRow(ctx, `UPDATE accounts SET balance = balance - 1, updated_at = now() WHERE id = $1 RETURNING balance`, account).Scan(&after); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy) VALUES ($1, 'withdrawal', 1, $2, 'raw-sql')`, account, after)
			return err
		})
		return code, err
	}
}

// drive runs op from clients goroutines in a closed loop: warm-up, then the
// measured window. Only operations that start and end inside the window
// count; the run stops when the window closes (each operation in flight
// finishes or times out first).
func drive(ctx context.Context, clients int, warmup, duration time.Duration, ids []int64, op benchOp) benchRun {
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+duration)
	type tally struct {
		latencies []time.Duration
		errors    map[string]int
	}
	tallies := make([]tally, clients)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			t := &tallies[i]
			t.errors = map[string]int{}
			<-ready
			for time.Now().Before(until) && ctx.Err() == nil {
				account := ids[0]
				if len(ids) > 1 {
					account = ids[rng.IntN(len(ids))]
				}
				opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				began := time.Now()
				code, err := op(opCtx, rng, account)
				ended := time.Now()
				cancel()
				if began.Before(from) || ended.After(until) {
					continue
				}
				switch {
				case err != nil:
					t.errors[errorCode(err)]++
				case code != "":
					t.errors[code]++
				default:
					t.latencies = append(t.latencies, ended.Sub(began))
				}
			}
		})
	}
	close(ready) // the start barrier: every client is spawned before any begins
	wg.Wait()

	r := benchRun{Clients: clients, Seconds: duration.Seconds(), Errors: map[string]int{}}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		for code, n := range t.errors {
			r.Errors[code] += n
		}
	}
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	r.OK = len(all)
	r.Throughput = float64(r.OK) / duration.Seconds()
	slices.Sort(all)
	r.P50Ms, r.P95Ms, r.P99Ms = percentileMs(all, 0.50), percentileMs(all, 0.95), percentileMs(all, 0.99)
	return r
}

func percentileMs(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return float64(sorted[max(i, 0)].Microseconds()) / 1000
}

// errorCode names a failure without an answer: a timeout, or a transport or
// database error.
func errorCode(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func errorSummary(errs map[string]int) string {
	if len(errs) == 0 {
		return ""
	}
	codes := make([]string, 0, len(errs))
	for code, n := range errs {
		codes = append(codes, fmt.Sprintf("%s×%d", code, n))
	}
	sort.Strings(codes)
	return "  errors: " + strings.Join(codes, " ")
}

func fillRatios(runs []benchRun) {
	base := map[string]float64{}
	for _, r := range runs {
		if r.Target == targetRawSQL {
			base[r.Scenario+"/"+strconv.Itoa(r.Clients)] = r.Throughput
		}
	}
	for i := range runs {
		if b := base[runs[i].Scenario+"/"+strconv.Itoa(runs[i].Clients)]; b > 0 && runs[i].Target != targetRawSQL {
			runs[i].VsRawSQL = runs[i].Throughput / b
		}
	}
}

// peakRSS is the largest resident set (VmHWM, MiB) of the own cluster's
// bankd processes, or 0 for targets that are not our children.
func peakRSS(c *cluster) float64 {
	var peak float64
	for _, n := range c.nodes {
		if n.proc == nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.proc.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				peak = max(peak, kb/1024)
			}
		}
	}
	return peak
}

func machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func printBenchTable(tl *timeline, res benchResult) {
	tl.printf("\n%-7s %7s  %-8s %10s %9s %9s %9s %9s %9s  %s\n", "scenario", "clients", "target", "ops/s", "×raw-sql", "p50 ms", "p95 ms", "p99 ms", "RSS MiB", "errors")
	for _, r := range res.Runs {
		ratio, rss := "", ""
		if r.VsRawSQL > 0 {
			ratio = fmt.Sprintf("%.2f×", r.VsRawSQL)
		}
		if r.Target != targetRawSQL && r.RSSMiB > 0 {
			rss = fmt.Sprintf("%.1f", r.RSSMiB)
		}
		tl.printf("%-8s %7d  %-8s %10.0f %9s %9.2f %9.2f %9.2f %9s  %s\n", r.Scenario, r.Clients, r.Target, r.Throughput, ratio,
			r.P50Ms, r.P95Ms, r.P99Ms, rss, strings.TrimPrefix(errorSummary(r.Errors), "  errors: "))
	}
}

func writeBenchFiles(dir string, res benchResult) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	for _, scenario := range uniqueScenarios(res.Runs) {
		var buf bytes.Buffer
		writeBenchPlot(&buf, scenario, res.Runs)
		if err := os.WriteFile(filepath.Join(dir, "bench-"+scenario+".svg"), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func uniqueScenarios(runs []benchRun) []string {
	var out []string
	for _, r := range runs {
		if !slices.Contains(out, r.Scenario) {
			out = append(out, r.Scenario)
		}
	}
	return out
}
