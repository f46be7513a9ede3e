package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/lockbank/lockbank/internal/cluster"
)

const usage = `bankctl plays the seed's scenarios against bankd and tells what happened.

Usage:
  bankctl race  [flags]   concurrent withdrawals of the whole balance, per strategy
  bankctl pause [flags]   a lease holder frozen past its lease, then resumed
  bankctl crash [flags]   a lease holder killed; the other node waits out the TTL
  bankctl check [flags]   random deposits, withdrawals and reads under faults, then a history check
  bankctl bench [flags]   load bankd (hot and spread accounts, 1–256 clients) beside the raw-SQL baseline

Examples:
  go run ./cmd/bankctl race                         # own cluster: unsafe double-spends, row and lease are safe
  go run ./cmd/bankctl race --clients 50 --rounds 3 --strategies row,lease --hold 0
  go run ./cmd/bankctl pause                        # node-a's late write is refused by the fence
  go run ./cmd/bankctl pause --strategy lease-nofence   # ... and without the fence, it overwrites node-b's
  go run ./cmd/bankctl pause --client               # the same story through the lock API, as in the README
  go run ./cmd/bankctl pause --strategy row         # a node frozen inside a row lock: the row-lock TTL ends it
  go run ./cmd/bankctl crash
  go run ./cmd/bankctl check --ha --faults failover --duration 90s   # kill the database's primary, again and again
  go run ./cmd/bankctl bench --out bench-results   # own single-node cluster; table, results.json, plots
  bankctl pause --targets http://127.0.0.1:8081,http://127.0.0.1:8082 --docker lockbank-node-a

Common flags:
  --targets URLS   bankd nodes, comma-separated; the first is node-a. Empty: start an own
                   cluster (private PostgreSQL + node-a + node-b, demo mode) and stop it after
  --docker NAME    with --targets: node-a's container, frozen with docker pause / killed with docker kill
  --lease-ttl D    own cluster: the nodes' lease TTL (default 2s), or auto (learned from their critical sections)
  --nodes N        own cluster: how many bankd nodes (up to 3; default: what the command needs)
  --pgbouncer      own cluster: the nodes reach PostgreSQL through a private PgBouncer (transaction mode)
  --ha             own cluster on a replicated PostgreSQL (pg_auto_failover), with a multi-host URL
  --json           one JSON object per line (events, then the result) instead of text

Exit codes: 0 the scenario showed what it promises; 1 a safe strategy was not safe, or a
demo did not show its point; 2 bad command line; 3 the cluster could not be started or reached.
`

// command is one of bankctl's commands: its flags, their check (before any
// cluster starts), and its scenario.
type command interface {
	register(fs *flag.FlagSet)
	validate() error
	run(ctx context.Context, c *cluster.Cluster, tl *timeline) error
}

// commands by name, with the size of the own cluster each starts.
var commands = map[string]struct {
	nodes int
	flags func() command
}{
	"race":  {2, func() command { return &raceFlags{} }},
	"pause": {2, func() command { return &pauseFlags{} }},
	"crash": {2, func() command { return &crashFlags{} }},
	"check": {3, func() command { return &checkFlags{} }},
	"bench": {1, func() command { return &benchFlags{} }},
}

type commonFlags struct {
	nodes    int // own cluster size
	targets  string
	docker   string
	leaseTTL time.Duration
	autoTTL  bool
	json     bool
	bouncer  bool
	ha       bool
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.targets, "targets", "", "bankd nodes, comma-separated (first = node-a); empty starts an own cluster")
	fs.StringVar(&c.docker, "docker", "", "node-a's container name (docker pause / kill) with --targets")
	c.leaseTTL = 2 * time.Second
	fs.Func("lease-ttl", "own cluster: lease TTL of the nodes, or auto: learned from their recent critical sections (row-lock TTL and waits stay sized for 2s) (default 2s)", func(v string) error {
		if v == "auto" {
			c.autoTTL = true
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("want auto or a duration")
		}
		c.leaseTTL, c.autoTTL = d, false
		return nil
	})
	fs.BoolVar(&c.json, "json", false, "JSON Lines output")
	fs.IntVar(&c.nodes, "nodes", c.nodes, "own cluster: how many bankd nodes (1 to 3; the scenarios use the first ones)")
	fs.BoolVar(&c.bouncer, "pgbouncer", false, "own cluster: the nodes reach PostgreSQL through a private PgBouncer in transaction mode (needs the pgbouncer binary)")
	fs.BoolVar(&c.ha, "ha", false, "own cluster: a replicated PostgreSQL (pg_auto_failover monitor, primary, synchronous standby; installed with apt-get when missing) under the nodes, which get a multi-host URL")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return &exitError{code: exitUsage}
		}
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("bankctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	known, ok := commands[cmd]
	if !ok {
		return usageError("unknown command %q; see bankctl --help", cmd)
	}
	common := commonFlags{nodes: known.nodes}
	common.register(fs)
	scenario := known.flags()
	scenario.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bankctl %s [flags]\n\n", cmd)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return &exitError{code: exitUsage}
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if least := min(known.nodes, 2); common.nodes < least || common.nodes > 3 {
		return usageError("--nodes must be from %d to 3 for %s", least, cmd)
	}
	if common.targets != "" && common.bouncer {
		return usageError("--pgbouncer is for the own cluster, not --targets")
	}
	if common.targets == "" && common.docker != "" {
		return usageError("--docker goes with --targets")
	}
	if common.targets != "" && common.ha {
		return usageError("--ha starts an own cluster; it does not go with --targets")
	}
	if check, ok := scenario.(*checkFlags); ok {
		check.ha = common.ha
	}
	// Before any cluster starts: a typo should cost nothing.
	if err := scenario.validate(); err != nil {
		return err
	}

	tl := newTimeline(stdout, common.json)
	var adjust func(*cluster.Options)
	if o, ok := scenario.(interface{ clusterOptions(*cluster.Options) }); ok {
		adjust = o.clusterOptions
	}
	c, err := openCluster(ctx, common, tl, adjust)
	if err != nil {
		var exit *exitError
		if errors.As(err, &exit) {
			return err
		}
		return &exitError{code: exitTrouble, msg: err.Error()}
	}
	defer c.Close()
	tl.restart() // the story's clock starts when the cluster is ready
	return scenario.run(ctx, c, tl)
}

// wrapTransport, set by tests only, wraps the transport of an own
// cluster's API clients: there it holds every answer to the OpenAPI
// document (internal/contract).
var wrapTransport func(http.RoundTripper) http.RoundTripper

// openCluster starts an own cluster, with the options adjust (if not nil)
// makes to them, or names the --targets.
func openCluster(ctx context.Context, f commonFlags, tl *timeline, adjust func(*cluster.Options)) (*cluster.Cluster, error) {
	if f.targets == "" {
		o := cluster.Options{Nodes: f.nodes, LeaseTTL: f.leaseTTL, AutoTTL: f.autoTTL, PgBouncer: f.bouncer, HA: f.ha, Notef: tl.note, Transport: wrapTransport}
		if adjust != nil {
			adjust(&o)
		}
		return cluster.Start(ctx, o)
	}
	var targets []string
	for _, u := range strings.Split(f.targets, ",") {
		targets = append(targets, strings.TrimRight(strings.TrimSpace(u), "/"))
	}
	c, err := cluster.Connect(ctx, targets, f.docker)
	if err != nil {
		return nil, err
	}
	// Two nodes tell every story but bench's, which loads whatever it gets.
	if need := min(f.nodes, 2); len(c.Nodes) < need {
		return nil, usageError("--targets needs %d nodes (node-a first)", need)
	}
	return c, nil
}
