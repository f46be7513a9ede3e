package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// config is everything bankd can be told, from flags or, where a flag is
// not given, the environment.
type config struct {
	addr        string
	databaseURL string
	listenURL   string
	pooler      bool
	dataDir     string
	unsafeDemo  bool
	nodeName    string
	maxConns    int
	logFormat   string
	leaseTTL    time.Duration
	// autoTTL: --lease-ttl auto, learned between leaseTTLMin and
	// leaseTTLMax; leaseTTL is then the TTL until enough is learned.
	autoTTL                  bool
	leaseTTLMin, leaseTTLMax time.Duration
	leaseWait                time.Duration
	rowLockTTL               time.Duration
	lockTimeout              time.Duration
	readTimeout              time.Duration
	writeTimeout             time.Duration
	idleTimeout              time.Duration
	shutdownTimeout          time.Duration
	pprofAddr                string
	metricsAddr              string
	metrics                  bool
	live                     bool
	liveOrigins              string
	apiKeysFile              string
	// What is pruned, and when (invariant 12): idempotency records older
	// than idempotencyRetention, lease history older than leaseRetention,
	// every pruneInterval.
	idempotencyRetention time.Duration
	leaseRetention       time.Duration
	pruneInterval        time.Duration
}

// Bounds of the retentions. At least a minute: a record outlives by far the
// request that wrote it (a transaction lasts seconds) and its client's quick
// retries. At most ten years: the cutoff, now() minus the retention, stays
// a date PostgreSQL can hold.
const (
	minRetention = time.Minute
	maxRetention = 10 * 365 * 24 * time.Hour
)

const usage = `Usage: bankd [flags]
       bankd migrate up|down|status [flags]
       bankd healthcheck [--addr host:port]   exit 0 when the bankd on --addr is ready
       bankd apikey new --name NAME --role admin|client   make an API key

bankd serves lockbank's account API. Without --database-url (DATABASE_URL) it
starts a private PostgreSQL from the installed server binaries in --data-dir.

Flags (environment variable in brackets):
`

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, []string, error) {
	fs := flag.NewFlagSet("bankd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	hostname, _ := os.Hostname()
	var c config
	var err error
	fs.StringVar(&c.addr, "addr", env("BANKD_ADDR", "127.0.0.1:8080"), "listen address [BANKD_ADDR]")
	fs.StringVar(&c.databaseURL, "database-url", env("DATABASE_URL", ""), "PostgreSQL URL; empty starts a private server [DATABASE_URL]")
	fs.StringVar(&c.listenURL, "listen-database-url", env("BANKD_LISTEN_DATABASE_URL", ""), "direct PostgreSQL URL (never through a pooler) for LISTEN, lock waiters' registration and migrations; empty: --database-url, or none with --pooler; none: no direct connection, waiters wake when the lease they wait for runs out [BANKD_LISTEN_DATABASE_URL]")
	pooler, err := envBool(getenv, "BANKD_POOLER")
	if err != nil {
		return c, nil, err
	}
	fs.BoolVar(&c.pooler, "pooler", pooler, "--database-url goes through a pooler in transaction mode (PgBouncer): no settings at connect (lock_timeout and idle_in_transaction_session_timeout are set in each transaction bankd opens), no server-side prepared statements unless the URL's default_query_exec_mode says otherwise, no LISTEN through it [BANKD_POOLER]")
	fs.StringVar(&c.dataDir, "data-dir", env("BANKD_DATA_DIR", ".lockbank/pgdata"), "data directory of the private PostgreSQL [BANKD_DATA_DIR]")
	unsafeDemo, err := envBool(getenv, "BANKD_UNSAFE_DEMO")
	if err != nil {
		return c, nil, err
	}
	fs.BoolVar(&c.unsafeDemo, "unsafe-demo", unsafeDemo, "demo mode: enable the unsafe strategy and hold_ms; never for real money [BANKD_UNSAFE_DEMO]")
	fs.StringVar(&c.nodeName, "node-name", env("BANKD_NODE", hostname), "this node's name in logs and as lock holder [BANKD_NODE]")
	// 32: on the benchmarks' 2-core machine, spread load gained from 16 to 32
	// (more commits share each WAL flush) and not beyond; a hot account
	// never takes more than one connection of a node (account.Service
	// combines its changes), so the pool size bounds only independent work.
	maxConns, err := envInt(getenv, "BANKD_MAX_CONNS", 32)
	if err != nil {
		return c, nil, err
	}
	fs.IntVar(&c.maxConns, "max-conns", maxConns, "database connection pool size [BANKD_MAX_CONNS]")
	c.leaseTTL = 5 * time.Second
	if v := getenv("BANKD_LEASE_TTL"); v != "" {
		if err := c.setLeaseTTL(v); err != nil {
			return c, nil, fmt.Errorf("BANKD_LEASE_TTL=%q: want auto or a duration such as 5s or 800ms", v)
		}
	}
	fs.Func("lease-ttl", "lifetime of the lease a lease withdrawal takes, or auto: learned from recent critical sections (p99 × 4, from --lease-ttl-min to --lease-ttl-max), 5s until learned, kept alive while the work lasts (default 5s) [BANKD_LEASE_TTL]", c.setLeaseTTL)
	leaseTTLMin, err := envDuration(getenv, "BANKD_LEASE_TTL_MIN", 200*time.Millisecond)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.leaseTTLMin, "lease-ttl-min", leaseTTLMin, "with --lease-ttl auto: the shortest learned TTL [BANKD_LEASE_TTL_MIN]")
	leaseTTLMax, err := envDuration(getenv, "BANKD_LEASE_TTL_MAX", 30*time.Second)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.leaseTTLMax, "lease-ttl-max", leaseTTLMax, "with --lease-ttl auto: the longest learned TTL [BANKD_LEASE_TTL_MAX]")
	leaseWait, err := envDuration(getenv, "BANKD_LEASE_WAIT", 5*time.Second)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.leaseWait, "lease-wait", leaseWait, "longest wait for that lease before 503 lock_timeout [BANKD_LEASE_WAIT]")
	rowLockTTL, err := envDuration(getenv, "BANKD_ROW_LOCK_TTL", 5*time.Second)
	if err != nil {
		return c, nil, err
	}
	// The row lock's lease: PostgreSQL ends a session that sits idle inside a
	// transaction longer than this (a frozen or dead node), rolling it back
	// and freeing its row locks.
	fs.DurationVar(&c.rowLockTTL, "row-lock-ttl", rowLockTTL, "idle_in_transaction_session_timeout of bankd's sessions: how long a paused node can keep a row lock [BANKD_ROW_LOCK_TTL]")
	lockTimeout, err := envDuration(getenv, "BANKD_LOCK_TIMEOUT", 5*time.Second)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.lockTimeout, "lock-timeout", lockTimeout, "lock_timeout of bankd's sessions: longest wait for a row lock before 503 lock_timeout [BANKD_LOCK_TIMEOUT]")
	fs.StringVar(&c.logFormat, "log-format", env("BANKD_LOG_FORMAT", "text"), "log format: text or json [BANKD_LOG_FORMAT]")
	fs.DurationVar(&c.readTimeout, "read-timeout", 10*time.Second, "longest time to read a request")
	// A demo withdrawal may hold for 30 s; the answer must still get out.
	fs.DurationVar(&c.writeTimeout, "write-timeout", 45*time.Second, "longest time to handle a request and write the answer")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", 60*time.Second, "how long an idle keep-alive connection stays open")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 35*time.Second, "how long in-flight requests may finish at shutdown")
	fs.StringVar(&c.apiKeysFile, "api-keys-file", env("BANKD_API_KEYS_FILE", ""), "file of API keys (name role sha256:hex per line; see bankd apikey new); every /v1 request then needs one; empty: no keys [BANKD_API_KEYS_FILE]")
	live := true
	if getenv("BANKD_LIVE") != "" {
		if live, err = envBool(getenv, "BANKD_LIVE"); err != nil {
			return c, nil, err
		}
	}
	fs.BoolVar(&c.live, "live", live, "serve the live page's data and write this node's live events (about 15% of throughput when on; off with API keys) [BANKD_LIVE]")
	fs.StringVar(&c.liveOrigins, "live-origins", env("BANKD_LIVE_ORIGINS", ""), "comma-separated origins (http://host:port) of other nodes' live pages that may drive this node's API from a browser (CORS) [BANKD_LIVE_ORIGINS]")
	fs.StringVar(&c.metricsAddr, "metrics-addr", env("BANKD_METRICS_ADDR", ""), "serve /metrics on this address instead of --addr [BANKD_METRICS_ADDR]")
	metrics := true
	if getenv("BANKD_METRICS") != "" {
		if metrics, err = envBool(getenv, "BANKD_METRICS"); err != nil {
			return c, nil, err
		}
	}
	// Off only to measure what metrics cost (bankctl bench --metrics-cost):
	// no /metrics, no HTTP metrics; lockmgr and account count regardless.
	fs.BoolVar(&c.metrics, "metrics", metrics, "serve /metrics and count HTTP requests; false only to measure their cost [BANKD_METRICS]")
	fs.StringVar(&c.pprofAddr, "pprof-addr", env("BANKD_PPROF_ADDR", ""), "serve net/http/pprof on this address (keep it on loopback); empty: off [BANKD_PPROF_ADDR]")
	// Stripe keeps idempotency keys for 24 hours: a retry within it is
	// answered from the first outcome; after it the key is new again.
	idempotencyRetention, err := envDuration(getenv, "BANKD_IDEMPOTENCY_RETENTION", 24*time.Hour)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.idempotencyRetention, "idempotency-retention", idempotencyRetention, "how long an Idempotency-Key's first outcome is kept and replayed; after it the key is new again [BANKD_IDEMPOTENCY_RETENTION]")
	// An hour is far beyond any lease (at most 10 minutes) and any pause
	// worth telling apart; lock-heavy users grant thousands an hour.
	leaseRetention, err := envDuration(getenv, "BANKD_LEASE_RETENTION", time.Hour)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.leaseRetention, "lease-retention", leaseRetention, "how long lease history is kept: grants, and the rows of lock-API resources after their last lease ran out [BANKD_LEASE_RETENTION]")
	pruneInterval, err := envDuration(getenv, "BANKD_PRUNE_INTERVAL", time.Minute)
	if err != nil {
		return c, nil, err
	}
	fs.DurationVar(&c.pruneInterval, "prune-interval", pruneInterval, "how often this node deletes what has outlived its retention [BANKD_PRUNE_INTERVAL]")
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	switch {
	case c.maxConns < 1:
		return c, nil, errors.New("--max-conns must be at least 1")
	case c.leaseTTL < 100*time.Millisecond || c.leaseTTL > 10*time.Minute:
		return c, nil, errors.New("--lease-ttl must be auto or from 100ms to 10m")
	case c.leaseTTLMin < 100*time.Millisecond || c.leaseTTLMax > 10*time.Minute || c.leaseTTLMin > c.leaseTTLMax:
		return c, nil, errors.New("--lease-ttl-min and --lease-ttl-max must be from 100ms to 10m, min ≤ max")
	case c.leaseWait < 0 || c.leaseWait > time.Minute:
		return c, nil, errors.New("--lease-wait must be from 0 to 1m")
	case c.rowLockTTL < 100*time.Millisecond || c.rowLockTTL > 10*time.Minute:
		return c, nil, errors.New("--row-lock-ttl must be from 100ms to 10m")
	case c.lockTimeout < 100*time.Millisecond || c.lockTimeout > 10*time.Minute:
		return c, nil, errors.New("--lock-timeout must be from 100ms to 10m")
	case c.idempotencyRetention < minRetention || c.idempotencyRetention > maxRetention:
		return c, nil, errors.New("--idempotency-retention must be from 1m to 87600h (10 years)")
	case c.leaseRetention < minRetention || c.leaseRetention > maxRetention:
		return c, nil, errors.New("--lease-retention must be from 1m to 87600h (10 years)")
	case c.pruneInterval < 100*time.Millisecond || c.pruneInterval > time.Hour:
		return c, nil, errors.New("--prune-interval must be from 100ms to 1h")
	case c.logFormat != "text" && c.logFormat != "json":
		return c, nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	return c, fs.Args(), nil
}

// setLeaseTTL reads --lease-ttl: auto, or a duration.
func (c *config) setLeaseTTL(v string) error {
	if v == "auto" {
		c.autoTTL = true
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("want auto or a duration such as 5s or 800ms")
	}
	c.leaseTTL, c.autoTTL = d, false
	return nil
}

func envBool(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s=%q: want 1, 0, true or false", name, v)
	}
	return b, nil
}

func envInt(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want an integer", name, v)
	}
	return n, nil
}

func envDuration(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a duration such as 5s or 800ms", name, v)
	}
	return d, nil
}

// liveOn reports whether this node serves the live page's data: not with
// --live=false, and not with API keys (the page shows every account, and
// its event stream carries no key).
func (c config) liveOn() bool { return c.live && c.apiKeysFile == "" }

// writesLiveEvents reports whether this node's sessions write the live
// page's events (live.WriteEvents): only when its page is on, since they
// cost throughput, and not through a pooler, which refuses the setting at
// connect.
func (c config) writesLiveEvents() bool { return c.liveOn() && !c.pooler }
