// Command lockbench measures lockbank's lease manager against the locks a
// user would otherwise pick, in one run on one machine and one database:
// cirello.io/pglock, PostgreSQL session and transaction advisory locks, and
// bsm/redislock. For each it measures acquire+release cycles per second with
// one worker, with 8 workers on 8 resources and with 8 workers on one
// resource (and how fairly that one is shared), and the latency of handing
// the lock to a waiter in another process. Every figure is also given as a
// ratio to pglock's, because absolute numbers swing with the machine's load.
//
// It starts a private PostgreSQL (fsync on) in a temporary directory and
// stops it at the end; redis-server must already run (see run.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lockbank/lockbank/bench/locks"
	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

// config is lockbench's flags.
type config struct {
	duration, warmup time.Duration
	workers          int
	slices           int
	maxCycles        int
	handoffRounds    int
	handoffTime      time.Duration
	handoffPause     time.Duration
	out              string
	redisAddr        string
	pgDir            string
	impls            []string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// The hidden subcommand: the other process of the hand-off measurement.
	if len(args) > 0 && args[0] == "waiter" {
		return runWaiter(ctx, args[1:], os.Stdin, stdout)
	}
	var cfg config
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "measuring time of each throughput figure of each implementation")
	fs.IntVar(&cfg.slices, "slices", 3, "measure each throughput figure in this many slices, taking turns over the implementations")
	fs.DurationVar(&cfg.warmup, "warmup", 300*time.Millisecond, "warm-up before each slice, not counted")
	fs.IntVar(&cfg.workers, "workers", 8, "workers of the parallel and contended measurements")
	fs.IntVar(&cfg.maxCycles, "max-cycles", 1_000_000, "stop a throughput measurement after this many cycles")
	fs.IntVar(&cfg.handoffRounds, "handoff-rounds", 200, "hand-offs measured per implementation")
	fs.DurationVar(&cfg.handoffTime, "handoff-time", 10*time.Second, "time limit of the hand-off measurement per implementation")
	fs.DurationVar(&cfg.handoffPause, "handoff-pause", 25*time.Millisecond, "how long the holder keeps the lock after the waiter starts waiting")
	fs.StringVar(&cfg.out, "out", "bench-results", "directory for results.json")
	fs.StringVar(&cfg.redisAddr, "redis", "", "host:port of a running redis-server; redislock is skipped without it")
	fs.StringVar(&cfg.pgDir, "pgdir", "", "directory for the private PostgreSQL's cluster, removed at the end (default: a temporary one)")
	only := fs.String("impls", "", "comma-separated implementations to measure (default all: "+strings.Join(names(), ",")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.slices < 1 || cfg.workers < 1 || cfg.duration <= 0 {
		return errors.New("-slices and -workers must be at least 1, and -duration positive")
	}
	cfg.impls = names()
	if *only != "" {
		cfg.impls = strings.Split(*only, ",")
		for _, name := range cfg.impls {
			if _, ok := locks.ByName(name); !ok {
				return fmt.Errorf("unknown implementation %q (want some of %s)", name, strings.Join(names(), ","))
			}
		}
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}

	env, pgInfo, stopPG, err := startPostgres(ctx, cfg.pgDir, stderr)
	if err != nil {
		return err
	}
	defer stopPG()
	env.RedisAddr = cfg.redisAddr

	res := newResults(cfg, pgInfo)
	measureAll(ctx, cfg, env, res, stderr)
	res.Machine.LoadAvgEnd = loadAvg()
	if err := ctx.Err(); err != nil {
		return err
	}
	printTable(stdout, res)
	path := filepath.Join(cfg.out, "results.json")
	if err := writeJSON(path, res); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "wrote", path)
	return nil
}

func names() []string {
	var ns []string
	for _, impl := range locks.All() {
		ns = append(ns, impl.Name)
	}
	return ns
}

// startPostgres starts a private PostgreSQL with its default (durable)
// settings in dir (a temporary directory if ""), creates and migrates a
// database, and returns how to stop it and remove dir.
func startPostgres(ctx context.Context, dir string, stderr io.Writer) (locks.Env, postgresInfo, func(), error) {
	var info postgresInfo
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "lockbench-pg-")
	} else {
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return locks.Env{}, info, nil, err
	}
	// The server runs as the postgres OS user when we are root; it must reach the data directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return locks.Env{}, info, nil, err
	}
	fmt.Fprintln(stderr, "starting a private PostgreSQL in", dir)
	srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(dir, "data")})
	if err != nil {
		os.RemoveAll(dir)
		return locks.Env{}, info, nil, err
	}
	stop := func() {
		// Stop even when ctx was cancelled by a signal.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := srv.Stop(sctx); err != nil {
			fmt.Fprintln(stderr, "lockbench:", err)
		}
		os.RemoveAll(dir)
	}
	fail := func(err error) (locks.Env, postgresInfo, func(), error) { stop(); return locks.Env{}, info, nil, err }
	if err := srv.CreateDatabase(ctx, "lockbench"); err != nil {
		return fail(err)
	}
	env := locks.Env{PostgresURL: srv.URL("lockbench")}
	pool, err := pgxpool.New(ctx, env.PostgresURL)
	if err != nil {
		return fail(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return fail(fmt.Errorf("migrate: %w", err))
	}
	err = pool.QueryRow(ctx, `SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')`).
		Scan(&info.Version, &info.Fsync, &info.SynchronousCommit)
	if err != nil {
		return fail(err)
	}
	return env, info, stop, nil
}

// measureAll runs each measurement for every implementation in turn, so that
// a change in the machine's load hits all implementations of one figure alike.
func measureAll(ctx context.Context, cfg config, env locks.Env, res *results, stderr io.Writer) {
	open := map[string]locks.Locker{}
	defer func() {
		for _, lk := range open {
			lk.Close()
		}
	}()
	for _, r := range res.Impls {
		impl, _ := locks.ByName(r.Name)
		lk, err := impl.Open(ctx, env)
		if err != nil {
			r.Error = err.Error()
			fmt.Fprintf(stderr, "%s: skipped: %v\n", r.Name, err)
			continue
		}
		open[r.Name] = lk
	}
	each := func(what string, f func(r *implResult, lk locks.Locker)) {
		for _, r := range res.Impls {
			if lk, ok := open[r.Name]; ok && ctx.Err() == nil {
				fmt.Fprintf(stderr, "%-16s %s\n", r.Name, what)
				f(r, lk)
			}
		}
	}
	resources := func(impl, phase string, n int, distinct bool) []string {
		rs := make([]string, n)
		for i := range rs {
			rs[i] = fmt.Sprintf("bench.%s.%s", impl, phase)
			if distinct {
				rs[i] += fmt.Sprintf(".%d", i)
			}
		}
		return rs
	}
	// Each throughput figure is measured in slices, taking turns over the
	// implementations, so that a burst of load elsewhere on the machine is
	// shared out rather than landing on one of them.
	slice := cfg.duration / time.Duration(cfg.slices)
	for _, m := range []struct {
		name     string
		phase    string
		workers  int
		distinct bool
		result   func(*implResult) *cycles
	}{
		{"uncontended", "solo", 1, false, func(r *implResult) *cycles { return &r.Uncontended }},
		{"parallel", "parallel", cfg.workers, true, func(r *implResult) *cycles { return &r.Parallel }},
		{"contended", "hot", cfg.workers, false, func(r *implResult) *cycles { return &r.Contended }},
	} {
		for i := range cfg.slices {
			each(fmt.Sprintf("%s %d/%d", m.name, i+1, cfg.slices), func(r *implResult, lk locks.Locker) {
				if r.CommitsOnly && m.name == "contended" {
					return // not a lock: nothing to contend for
				}
				// Fresh resources for every slice: a grant that the end of the
				// last slice cut off mid-acquire may still be held.
				phase := fmt.Sprintf("%s.%d", m.phase, i)
				m.result(r).add(measureCycles(ctx, lk, resources(r.Name, phase, m.workers, m.distinct), slice, cfg))
			})
		}
	}
	each("hand-off", func(r *implResult, lk locks.Locker) {
		if r.CommitsOnly {
			return
		}
		r.Handoff = measureHandoff(ctx, r.Name, lk, env, "bench."+r.Name+".handoff", cfg)
	})
}
