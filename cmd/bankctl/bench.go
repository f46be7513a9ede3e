package main

import (
	"context"
	"flag"
	"fmt"
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
		Duration: f.duration, Warmup: f.warmup, Pool: pool, RSS: c.PeakRSSMiB,
		Seeded: func(a loadgen.Accounts) {
			tl.note("bench accounts: 1 hot, %d spread; each run: %s warm-up, %s measured", len(a.Spread), f.warmup, f.duration)
		},
		Done: func(r loadgen.Run) {
			tl.note("%-6s %4d clients  %-7s %8.0f/s  p50 %6.2fms  p99 %7.2fms%s", r.Scenario, r.Clients, r.Target, r.Throughput, r.P50Ms, r.P99Ms, loadgen.ErrorSummary(r.Errors))
		}}
	if slices.Contains(cfg.Scenarios, "spread") {
		cfg.Spread = f.accounts
	}
	for _, n := range c.Nodes {
		cfg.Nodes = append(cfg.Nodes, n.URL)
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

func printBenchTable(tl *timeline, res loadgen.Result) {
	tl.printf("\n%-7s %7s  %-8s %10s %9s %9s %9s %9s %9s  %s\n", "scenario", "clients", "target", "ops/s", "×raw-sql", "p50 ms", "p95 ms", "p99 ms", "RSS MiB", "errors")
	for _, r := range res.Runs {
		ratio, rss := "", ""
		if r.VsRawSQL > 0 {
			ratio = fmt.Sprintf("%.2f×", r.VsRawSQL)
		}
		if r.Target != loadgen.TargetRawSQL && r.RSSMiB > 0 {
			rss = fmt.Sprintf("%.1f", r.RSSMiB)
		}
		tl.printf("%-8s %7d  %-8s %10.0f %9s %9.2f %9.2f %9.2f %9s  %s\n", r.Scenario, r.Clients, r.Target, r.Throughput, ratio,
			r.P50Ms, r.P95Ms, r.P99Ms, rss, strings.TrimPrefix(loadgen.ErrorSummary(r.Errors), "  errors: "))
	}
}
