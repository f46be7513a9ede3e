package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/internal/poolmetrics"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
	"github.com/lockbank/lockbank/web/live"
)

// run is bankd: everything main does, with its world passed in, so tests
// start the real server exactly as a user would.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, rest, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	// The web server logs a request's node itself; everything else, here.
	baseLogger := newLogger(cfg, stderr)
	logger := baseLogger.With("node", cfg.nodeName)

	// `bankd migrate …` takes its own flags after the verb.
	if len(rest) > 0 && rest[0] == "migrate" {
		if len(rest) < 2 {
			return errors.New("usage: bankd migrate up|down|status [flags]")
		}
		cfg, extra, err := parseConfig(append(args[:len(args)-len(rest)], rest[2:]...), getenv, stderr)
		if err != nil {
			return err
		}
		if len(extra) > 0 {
			return fmt.Errorf("unexpected arguments: %v", extra)
		}
		return runMigrate(ctx, cfg, rest[1], logger, stdout)
	}
	if len(rest) == 1 && rest[0] == "healthcheck" {
		return healthcheck(ctx, cfg.addr)
	}
	if len(rest) > 0 && rest[0] == "apikey" {
		return runAPIKey(rest[1:], stdout, stderr)
	}
	if len(rest) > 0 {
		return fmt.Errorf("unknown command %q (want: migrate, healthcheck, apikey, or no command to serve)", rest[0])
	}

	// Read before anything starts, so that a bad file stops bankd at once.
	var keys *apikey.Set
	if cfg.apiKeysFile != "" {
		if keys, err = apikey.Load(cfg.apiKeysFile); err != nil {
			return err
		}
	}

	db, closeDB, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeDB()
	pool := db.pool
	if err := migrate(ctx, db, logger); err != nil {
		return err
	}
	db.checkPooledTimeouts(ctx, logger)

	locks := lockmgr.New(pool, db.lockOptions(logger))
	defer locks.Close()
	var autoTTL *lockmgr.AutoTTL
	if cfg.autoTTL {
		autoTTL = lockmgr.NewAutoTTL(lockmgr.AutoTTLOptions{Min: cfg.leaseTTLMin, Max: cfg.leaseTTLMax, Initial: cfg.leaseTTL})
	}
	accounts := account.NewService(pool, account.Options{
		UnsafeDemo: cfg.unsafeDemo, Locks: locks, Node: cfg.nodeName, LeaseTTL: cfg.leaseTTL, LeaseWait: cfg.leaseWait,
		TxTimeouts: db.txTimeouts(cfg), AutoTTL: autoTTL,
	})
	stopPruning := startPruner(ctx, cfg, accounts, locks, logger)
	defer stopPruning() // before the pool closes (defers run last first)
	if cfg.unsafeDemo {
		logger.Warn("demo mode: the unsafe strategy and hold_ms are enabled; never use this node for real money")
	}
	var (
		serverOpts []web.Option
		liveHub    *live.Live
	)
	if cfg.liveOn() {
		// The live page's hub reads the timeline every node writes (package live).
		liveHub = live.New(pool, live.Options{UnsafeDemo: cfg.unsafeDemo, LeaseTTL: cfg.leaseTTL, Logger: logger})
		if err := liveHub.Start(ctx); err != nil {
			return err
		}
		defer liveHub.Close()
		serverOpts = append(serverOpts, web.WithLive(liveHub, splitList(cfg.liveOrigins)))
		if !cfg.writesLiveEvents() {
			logger.Warn("live page: behind a pooler this node writes no live events; the page shows other nodes' only")
		}
	}
	var httpMetrics *web.Metrics // nil: not counted (--metrics=false)
	if cfg.metrics {
		httpMetrics = web.NewMetrics()
	}
	var handler http.Handler = web.NewServer(baseLogger, cfg.nodeName, accounts, locks, keys, ready(pool), httpMetrics, serverOpts...)
	if cfg.metrics {
		registry := newRegistry(locks.Collector(), accounts.Collector(), httpMetrics, poolmetrics.New(pool))
		if autoTTL != nil {
			registry.MustRegister(autoTTL.Collector())
		}
		if cfg.metricsAddr == "" {
			handler = withMetrics(handler, registry)
		} else {
			stopMetrics, err := serveMetrics(cfg.metricsAddr, registry, logger)
			if err != nil {
				return err
			}
			defer stopMetrics()
		}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.readTimeout,
		WriteTimeout:      cfg.writeTimeout,
		IdleTimeout:       cfg.idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if liveHub != nil {
		// Shutdown waits for connections to go idle, which a live event
		// stream never does: end the streams as it begins.
		srv.RegisterOnShutdown(liveHub.Close)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("bankd listening", "addr", "http://"+ln.Addr().String(), "unsafe_demo", cfg.unsafeDemo, "api_keys", keys.Len())
	warnIfOpen(logger, ln.Addr(), keys)
	if cfg.pprofAddr != "" {
		stopProfiling, err := serveProfiles(cfg.pprofAddr, logger)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopProfiling()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", cfg.shutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("bankd stopped")
	return nil
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var h slog.Handler = slog.NewTextHandler(w, nil)
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(w, nil)
	}
	return slog.New(h)
}

// openDatabase connects to cfg.databaseURL or, when it is empty, to a private
// PostgreSQL started from the installed binaries, and finds its direct
// connection (pooler.go). close releases both.
func openDatabase(ctx context.Context, cfg config, logger *slog.Logger) (*database, func(), error) {
	url := cfg.databaseURL
	stopLocal := func() {}
	if url == "" {
		srv, err := pglocal.Start(ctx, pglocal.Options{DataDir: cfg.dataDir, Logger: logger})
		if errors.Is(err, pglocal.ErrNoBinaries) {
			return nil, nil, fmt.Errorf("%w.\nEither point bankd at a database (DATABASE_URL=postgres://user:pass@host:5432/db or --database-url),\n"+
				"install PostgreSQL (apt-get install postgresql), or run the whole cluster with `docker compose up -d`", err)
		}
		if err != nil {
			return nil, nil, err
		}
		stopLocal = func() {
			if err := srv.Stop(context.Background()); err != nil {
				logger.Error("stop private PostgreSQL", "err", err)
			}
		}
		if err := srv.CreateDatabase(ctx, "lockbank"); err != nil {
			stopLocal()
			return nil, nil, err
		}
		url = srv.URL("lockbank")
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		stopLocal()
		return nil, nil, fmt.Errorf("database url: %w", err)
	}
	pcfg.MaxConns = int32(cfg.maxConns)
	// A database that does not answer (down, partitioned) costs a request a
	// few seconds and a 503, not a hang until the client gives up.
	pcfg.ConnConfig.ConnectTimeout = 3 * time.Second
	pcfg.ConnConfig.RuntimeParams["application_name"] = "bankd " + cfg.nodeName
	if cfg.writesLiveEvents() {
		live.WriteEvents(pcfg.ConnConfig)
	}
	if cfg.pooler {
		// The pooler would refuse settings at connect, or give them to one
		// server connection: they are set in each transaction instead
		// (account.Options.TxTimeouts).
		noPreparedStatements(pcfg, url)
	} else {
		// No unbounded waits: a row lock lives at most row-lock-ttl beyond its
		// holder's last statement, and nobody queues for one longer than
		// lock-timeout (the caller gets 503 lock_timeout).
		pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(cfg.rowLockTTL.Milliseconds(), 10)
		pcfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(cfg.lockTimeout.Milliseconds(), 10)
	}
	direct, err := directConfig(cfg, url)
	if err != nil {
		stopLocal()
		return nil, nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		stopLocal()
		return nil, nil, fmt.Errorf("database pool: %w", err)
	}
	if err := waitForDatabase(ctx, pool, logger); err != nil {
		pool.Close()
		stopLocal()
		return nil, nil, err
	}
	return &database{pool: pool, direct: direct, pooled: cfg.pooler}, func() { pool.Close(); stopLocal() }, nil
}

// waitForDatabase retries for up to 60 s: in a compose cluster the database
// may still be starting when bankd does.
func waitForDatabase(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 0; ; attempt++ {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("database unreachable: %w", err)
		}
		if attempt%10 == 0 {
			logger.Warn("waiting for the database", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func migrate(ctx context.Context, d *database, logger *slog.Logger) error {
	p, closeDB, err := d.migrations()
	if err != nil {
		return err
	}
	defer closeDB()
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		logger.Info("applied migration", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return nil
}

func runMigrate(ctx context.Context, cfg config, verb string, logger *slog.Logger, stdout io.Writer) error {
	d, closeDB, err := openDatabase(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeDB()
	p, closeProvider, err := d.migrations()
	if err != nil {
		return err
	}
	defer closeProvider()
	switch verb {
	case "up":
		results, err := p.Up(ctx)
		for _, r := range results {
			fmt.Fprintf(stdout, "applied %s\n", r.Source.Path)
		}
		if err == nil && len(results) == 0 {
			fmt.Fprintln(stdout, "no pending migrations")
		}
		return err
	case "down":
		r, err := p.Down(ctx)
		if r != nil {
			fmt.Fprintf(stdout, "rolled back %s\n", r.Source.Path)
		}
		return err
	case "status":
		statuses, err := p.Status(ctx)
		if err != nil {
			return err
		}
		for _, s := range statuses {
			applied := "pending"
			if !s.AppliedAt.IsZero() {
				applied = "applied " + s.AppliedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%-5d %-40s %s\n", s.Source.Version, s.Source.Path, applied)
		}
		return nil
	}
	return fmt.Errorf("unknown migrate verb %q: want up, down or status", verb)
}

// serveProfiles serves net/http/pprof on a listener of its own, so that the
// profiles never share the API's address, middleware or timeouts (a 30 s CPU
// profile outlives --write-timeout).
func serveProfiles(addr string, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("pprof listening", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}

// healthcheck asks the bankd listening on addr whether it is ready: the
// container HEALTHCHECK, for images that have no curl (FROM scratch).
func healthcheck(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("healthcheck: --addr %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /readyz answered %s", resp.Status)
	}
	return nil
}

// splitList is a comma-separated flag's values, blanks dropped.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
