// Package loadgen measures bankd under load, beside a baseline: the same
// withdrawal issued straight from pgx, one connection per client, as an
// application without a service in front of its database would (raw SQL).
//
// Scenarios: hot (every client on one account) and spread (clients on
// random accounts of many). For each scenario and concurrency, each target
// — raw-sql and bankd with each strategy — runs closed-loop clients (one
// request in flight each) through a warm-up and a measured window; a run
// reports throughput, latency percentiles, errors by code, and its ratio to
// raw SQL at the same scenario and concurrency, measured in the same run.
package loadgen

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
)

// TargetRawSQL is the baseline's name among the targets.
const TargetRawSQL = "raw-sql"

// Run is one measurement: a target (raw-sql or a bankd strategy) under one
// scenario at one concurrency.
type Run struct {
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
	// VsMetricsOff, for a bankd run with metrics on when the bench compares
	// (Config.MetricsOff), is its throughput over that of the same run on
	// the node with metrics off (target "<strategy>" + MetricsOffSuffix).
	VsMetricsOff float64 `json:"vs_metrics_off,omitempty"`
	// CPUMsPerOp is the CPU time (user and system) the run's bankd nodes
	// spent per operation, over the whole run (warm-up included), when
	// Config.CPU can tell: less swayed than throughput by whatever else the
	// machine runs.
	CPUMsPerOp float64 `json:"bankd_cpu_ms_per_op,omitempty"`

	total int // operations, in the window or not
}

// MetricsOffSuffix names a bankd target run on the nodes with metrics off.
const MetricsOffSuffix = "/metrics-off"

// Result is a whole bench, as results.json holds it.
type Result struct {
	Started  time.Time `json:"started"`
	Machine  string    `json:"machine"`
	Duration string    `json:"duration_per_run"`
	Warmup   string    `json:"warmup_per_run"`
	Nodes    int       `json:"bankd_nodes"`
	Accounts int       `json:"spread_accounts"`
	Runs     []Run     `json:"runs"`
	// Consistent: after the load, every bench account's balance equals its
	// opening balance plus its ledger; Unsound are those whose does not.
	Consistent bool    `json:"consistent"`
	Unsound    []int64 `json:"-"`
}

// Accounts are the bench's accounts.
type Accounts struct {
	Hot    int64
	Spread []int64
}

// All is every bench account.
func (a Accounts) All() []int64 { return append([]int64{a.Hot}, a.Spread...) }

// Seed opens the hot account and spread accounts (none for 0) through
// accounts, each with the largest balance allowed, so that a run of
// one-unit withdrawals never runs dry.
func Seed(ctx context.Context, accounts *account.Service, spread int) (Accounts, error) {
	hot, err := accounts.CreateMany(ctx, "bench-hot", account.MaxAmount, 1)
	if err != nil {
		return Accounts{}, fmt.Errorf("create bench accounts: %w", err)
	}
	a := Accounts{Hot: hot[0]}
	if spread > 0 {
		if a.Spread, err = accounts.CreateMany(ctx, "bench-spread", account.MaxAmount, spread); err != nil {
			return Accounts{}, fmt.Errorf("create bench accounts: %w", err)
		}
	}
	return a, nil
}

// Config is what a bench measures.
type Config struct {
	Scenarios  []string // hot, spread
	Clients    []int    // concurrency levels
	Strategies []string // bankd's targets
	Baseline   bool     // also measure raw-sql
	Duration   time.Duration
	Warmup     time.Duration
	Spread     int // accounts of the spread scenario
	// Nodes are bankd's base URLs; a run's clients take turns on them.
	Nodes []string
	// MetricsOff, if set, are bankd nodes like Nodes but started with
	// --metrics=false: every bankd run is made on both, back to back (which
	// goes first alternates from run to run, so that neither always gets
	// the warmer database), the second as target strategy+MetricsOffSuffix.
	MetricsOff []string
	// Scrape, with MetricsOff, is how often Nodes are scraped (GET /metrics)
	// during a run on them, as Prometheus would scrape them; 0: never.
	Scrape time.Duration
	// CPU, if set, is the CPU time a bankd node (by URL) has used so far,
	// in seconds, and whether it is known (not for a node not our child).
	CPU func(node string) (float64, bool)
	// Pool is bankd's database: for the bench accounts, and the raw-SQL
	// baseline's, with a connection for each client of the largest level.
	Pool *pgxpool.Pool
	// RSS, if set, is sampled after each run: bankd's peak resident set, MiB.
	RSS func() float64
	// Seeded, if set, hears the bench accounts once opened; Done, each run
	// as it ends.
	Seeded func(Accounts)
	Done   func(Run)
}

// Bench opens the bench accounts (Seed), measures every run on them
// (Measure), and then checks that the load left every account's balance
// agreeing with its ledger (account.Service.Audit). When ctx ends it
// returns what it has and ctx's error.
func Bench(ctx context.Context, cfg Config) (Result, error) {
	accounts := account.NewService(cfg.Pool, account.Options{})
	accts, err := Seed(ctx, accounts, cfg.Spread)
	if err != nil {
		return Result{}, err
	}
	if cfg.Seeded != nil {
		cfg.Seeded(accts)
	}
	res := Result{Started: time.Now().UTC(), Machine: Machine(), Duration: cfg.Duration.String(), Warmup: cfg.Warmup.String(),
		Nodes: len(cfg.Nodes), Accounts: len(accts.Spread)}
	if res.Runs, err = Measure(ctx, cfg, accts); err != nil {
		return res, err
	}
	// Speed is worth nothing if money went astray under the load.
	if res.Unsound, err = accounts.Audit(ctx, accts.All()); err != nil {
		return res, fmt.Errorf("check the bench accounts: %w", err)
	}
	res.Consistent = len(res.Unsound) == 0
	return res, nil
}

// Measure runs every scenario, concurrency and target in turn on accts and
// returns the runs, each bankd run with its ratio to raw SQL. When ctx ends
// it returns the runs so far and ctx's error.
func Measure(ctx context.Context, cfg Config, accts Accounts) ([]Run, error) {
	hc := newHTTPClient(slices.Max(cfg.Clients) + 8)
	defer hc.CloseIdleConnections()
	var runs []Run
	for _, scenario := range cfg.Scenarios {
		ids := []int64{accts.Hot}
		if scenario == "spread" {
			ids = accts.Spread
		}
		for _, clients := range cfg.Clients {
			var targets []string
			if cfg.Baseline {
				targets = append(targets, TargetRawSQL)
			}
			targets = append(targets, cfg.Strategies...)
			for _, target := range targets {
				for _, v := range variants(cfg, target, len(runs)) {
					op := bankdOp(hc, v.nodes, target)
					if target == TargetRawSQL {
						op = rawSQLOp(cfg.Pool)
					}
					before, known := cpuOf(cfg, v.nodes, target)
					stopScraping := scrape(ctx, hc, v.scraped, cfg.Scrape)
					r := drive(ctx, clients, cfg.Warmup, cfg.Duration, ids, op)
					stopScraping()
					if after, _ := cpuOf(cfg, v.nodes, target); known && r.total > 0 {
						r.CPUMsPerOp = (after - before) * 1000 / float64(r.total)
					}
					r.Scenario, r.Target = scenario, v.name
					if cfg.RSS != nil {
						r.RSSMiB = cfg.RSS()
					}
					runs = append(runs, r)
					if cfg.Done != nil {
						cfg.Done(r)
					}
					if ctx.Err() != nil {
						return runs, ctx.Err()
					}
				}
			}
		}
	}
	fillRatios(runs)
	return runs, nil
}

func fillRatios(runs []Run) {
	base := map[string]float64{}
	for _, r := range runs {
		if r.Target == TargetRawSQL {
			base[r.Scenario+"/"+strconv.Itoa(r.Clients)] = r.Throughput
		}
	}
	off := map[string]float64{}
	for _, r := range runs {
		if strategy, ok := strings.CutSuffix(r.Target, MetricsOffSuffix); ok {
			off[r.Scenario+"/"+strconv.Itoa(r.Clients)+"/"+strategy] = r.Throughput
		}
	}
	for i := range runs {
		if b := base[runs[i].Scenario+"/"+strconv.Itoa(runs[i].Clients)]; b > 0 && runs[i].Target != TargetRawSQL {
			runs[i].VsRawSQL = runs[i].Throughput / b
		}
		if o := off[runs[i].Scenario+"/"+strconv.Itoa(runs[i].Clients)+"/"+runs[i].Target]; o > 0 {
			runs[i].VsMetricsOff = runs[i].Throughput / o
		}
	}
}

// cpuOf is the CPU seconds nodes have used so far, and whether that is
// known (never for the raw-SQL baseline, which uses no bankd).
func cpuOf(cfg Config, nodes []string, target string) (float64, bool) {
	if cfg.CPU == nil || target == TargetRawSQL {
		return 0, false
	}
	var sum float64
	for _, n := range nodes {
		s, ok := cfg.CPU(n)
		if !ok {
			return 0, false
		}
		sum += s
	}
	return sum, true
}

// variant is one run of a target: its name, the nodes it loads, and those
// scraped during it.
type variant struct {
	name           string
	nodes, scraped []string
}

// variants are target's runs: one, or, for a bankd target when the bench
// compares metrics on and off, one on each, in an order that alternates
// with n (the runs so far).
func variants(cfg Config, target string, n int) []variant {
	on := variant{name: target, nodes: cfg.Nodes}
	if target == TargetRawSQL || len(cfg.MetricsOff) == 0 {
		return []variant{on}
	}
	on.scraped = cfg.Nodes
	off := variant{name: target + MetricsOffSuffix, nodes: cfg.MetricsOff}
	if n%2 == 1 {
		return []variant{off, on}
	}
	return []variant{on, off}
}

// Machine names the machine a bench ran on.
func Machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}
