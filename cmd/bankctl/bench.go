package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/loadgen"
)

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
	metricsCost bool
	scrape      time.Duration
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
	fs.BoolVar(&f.metricsCost, "metrics-cost", false, "run every bankd cell twice, on node-a (metrics on, scraped every --scrape) and on node-b (--metrics=false), "+
		"and report the ratio; own cluster: starts both; with --targets: the first target has metrics, the second not")
	fs.DurationVar(&f.scrape, "scrape", time.Second, "with --metrics-cost: how often node-a's /metrics is scraped during its runs (0: never)")
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
	case f.scrape < 0 || f.scrape > time.Minute:
		return usageError("--scrape must be from 0 to 1m")
	case f.metricsCost && len(splitList(f.strategies)) == 0:
		return usageError("--metrics-cost needs --strategies: it compares bankd with and without metrics")
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

// run measures bankd beside the raw-SQL baseline (internal/loadgen),
// on the own cluster's database or --database-url.
func (f benchFlags) run(ctx context.Context, c *cluster.Cluster, tl *timeline) error {
	levels, _ := f.clientLevels()
	dbURL := c.DatabaseURL()
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

	cfg := loadgen.Config{Scenarios: splitList(f.scenarios), Clients: levels, Strategies: splitList(f.strategies), Baseline: f.baseline,
		Duration: f.duration, Warmup: f.warmup, Pool: pool, RSS: c.PeakRSSMiB, CPU: c.CPUSeconds,
		Seeded: func(a loadgen.Accounts) {
			tl.note("bench accounts: 1 hot, %d spread; each run: %s warm-up, %s measured", len(a.Spread), f.warmup, f.duration)
		},
		Done: func(r loadgen.Run) {
			tl.note("%-6s %4d clients  %-15s %8.0f/s  p50 %6.2fms  p99 %7.2fms%s", r.Scenario, r.Clients, r.Target, r.Throughput, r.P50Ms, r.P99Ms, loadgen.ErrorSummary(r.Errors))
		}}
	if slices.Contains(cfg.Scenarios, "spread") {
		cfg.Spread = f.accounts
	}
	for _, n := range c.Nodes {
		cfg.Nodes = append(cfg.Nodes, n.URL)
	}
	if f.metricsCost {
		if len(c.Nodes) < 2 {
			return usageError("--metrics-cost needs two nodes: the first with metrics, the second with --metrics=false")
		}
		if err := checkMetricsServed(ctx, c.Nodes[0].URL, true); err != nil {
			return usageError("--metrics-cost: %s: %v", c.Nodes[0].Name, err)
		}
		if err := checkMetricsServed(ctx, c.Nodes[1].URL, false); err != nil {
			return usageError("--metrics-cost: %s: %v", c.Nodes[1].Name, err)
		}
		cfg.Nodes, cfg.MetricsOff, cfg.Scrape = []string{c.Nodes[0].URL}, []string{c.Nodes[1].URL}, f.scrape
		tl.note("metrics cost: %s with metrics, scraped every %s; %s with --metrics=false", c.Nodes[0].Name, f.scrape, c.Nodes[1].Name)
	}
	res, err := loadgen.Bench(ctx, cfg)
	if err != nil {
		return trouble(err)
	}
	printBenchTable(tl, res)
	if err := loadgen.WriteFiles(f.out, res); err != nil {
		return trouble(err)
	}
	tl.printf("\nresults: %s  plots: %s\n", filepath.Join(f.out, "results.json"), filepath.Join(f.out, "bench-*.svg"))
	tl.result(res)
	if !res.Consistent {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d bench accounts break balance = opening + deposits - withdrawals", len(res.Unsound))}
	}
	tl.printf("money: every bench account's balance matches its ledger\n")
	if c.HA() != nil {
		return benchAlone(ctx, c, tl, cfg)
	}
	return nil
}

// checkMetricsServed makes sure the node at url serves /metrics (want) or
// not (404), so that a comparison of the two is what it says.
func checkMetricsServed(ctx context.Context, url string, want bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	switch {
	case want && resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET /metrics answered %d; want 200 from the node with metrics", resp.StatusCode)
	case !want && resp.StatusCode != http.StatusNotFound:
		return fmt.Errorf("GET /metrics answered %d; want 404 from a node started with --metrics=false", resp.StatusCode)
	}
	return nil
}

// clusterOptions starts node-b with --metrics=false for --metrics-cost.
func (f benchFlags) clusterOptions(o *cluster.Options) {
	if f.metricsCost {
		o.Nodes = max(o.Nodes, 2)
		o.Args = map[string][]string{"node-b": {"--metrics=false"}}
	}
}

func printBenchTable(tl *timeline, res loadgen.Result) {
	width := 8
	for _, r := range res.Runs {
		width = max(width, len(r.Target))
	}
	tl.printf("\n%-7s %7s  %-*s %10s %9s %9s %9s %9s %9s  %s\n", "scenario", "clients", width, "target", "ops/s", "×raw-sql", "p50 ms", "p95 ms", "p99 ms", "RSS MiB", "errors")
	for _, r := range res.Runs {
		ratio, rss := "", ""
		if r.VsRawSQL > 0 {
			ratio = fmt.Sprintf("%.2f×", r.VsRawSQL)
		}
		if r.Target != loadgen.TargetRawSQL && r.RSSMiB > 0 {
			rss = fmt.Sprintf("%.1f", r.RSSMiB)
		}
		tl.printf("%-8s %7d  %-*s %10.0f %9s %9.2f %9.2f %9.2f %9s  %s\n", r.Scenario, r.Clients, width, r.Target, r.Throughput, ratio,
			r.P50Ms, r.P95Ms, r.P99Ms, rss, strings.TrimPrefix(loadgen.ErrorSummary(r.Errors), "  errors: "))
	}
	for _, r := range res.Runs {
		if r.VsMetricsOff > 0 {
			cpu := ""
			if i := slices.IndexFunc(res.Runs, func(o loadgen.Run) bool {
				return o.Scenario == r.Scenario && o.Clients == r.Clients && o.Target == r.Target+loadgen.MetricsOffSuffix
			}); i >= 0 && r.CPUMsPerOp > 0 && res.Runs[i].CPUMsPerOp > 0 {
				cpu = fmt.Sprintf(", %.3f× the CPU per operation (%.3f vs %.3f ms)", r.CPUMsPerOp/res.Runs[i].CPUMsPerOp, r.CPUMsPerOp, res.Runs[i].CPUMsPerOp)
			}
			tl.printf("metrics cost: %-6s %4d clients  %-6s with metrics %.3f× the throughput without%s\n", r.Scenario, r.Clients, r.Target, r.VsMetricsOff, cpu)
		}
	}
}
