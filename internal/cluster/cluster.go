// Package cluster runs lockbank as it runs in production, on one machine:
// bankd nodes as real processes on a private PostgreSQL, or bankd nodes that
// others run (with --docker, in containers). It injects the faults lockbank
// is designed for — a node frozen (SIGSTOP, docker pause), killed and
// restarted, every database session terminated, the database crashed and
// restarted — and waits for what a scenario needs to see: a node ready, a
// holder inside its lease, a lease run out.
//
// bankctl's scenarios and cmd/bankd's process tests start bankd through it
// (StartNode), so there is one way to start bankd as a process.
package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/hacluster"
	"github.com/lockbank/lockbank/internal/pgbouncer"
	"github.com/lockbank/lockbank/internal/pglocal"
)

// Cluster is the nodes a scenario runs against: an own cluster (Start) or
// targets (Connect).
type Cluster struct {
	Nodes []*Node

	own         bool
	pg          *pglocal.Server
	ha          *hacluster.Cluster
	databaseURL string
	cleanup     []func()
}

// Options configure an own cluster.
type Options struct {
	Nodes    int           // 1 to 3: node-a, node-b, node-c
	LeaseTTL time.Duration // the nodes' lease TTL, also their row-lock TTL
	// Args are more bankd flags for the node of each name (bench's
	// --metrics-cost starts node-b with --metrics=false).
	Args map[string][]string
	// AutoTTL: the nodes learn their lease TTL (--lease-ttl auto, from
	// 200 ms); LeaseTTL still sizes the row-lock TTL and the waits.
	AutoTTL bool
	// PgBouncer puts a private PgBouncer in transaction mode between the
	// nodes and PostgreSQL (package internal/pgbouncer): the nodes run with
	// --pooler and LISTEN on a direct connection (--listen-database-url).
	// DatabaseURL stays the direct one.
	PgBouncer bool
	// HA puts the nodes on a replicated PostgreSQL (internal/hacluster: a
	// pg_auto_failover monitor and two data nodes, installed from Debian's
	// packages when missing) instead of one server, and gives them its
	// multi-host URL.
	HA bool
	// Notef, if set, hears what is being started.
	Notef func(format string, args ...any)
	// Transport, if set, wraps each node's API client's transport (see
	// NodeOptions.Transport).
	Transport func(http.RoundTripper) http.RoundTripper
}

// NodeNames are the names of an own cluster's first n nodes.
func NodeNames(n int) []string { return []string{"node-a", "node-b", "node-c"}[:n] }

// Start starts an own cluster: a private PostgreSQL (internal/pglocal) and
// the bankd processes, in demo mode, on free loopback ports; it waits until
// every node is ready. Close stops it all.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	c := &Cluster{own: true}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "bankctl-*")
	if err != nil {
		return nil, err
	}
	c.cleanup = append(c.cleanup, func() { os.RemoveAll(dir) })
	// The server may run as the postgres OS user (when we are root): let it in.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	bankd, err := Bankd(ctx, dir)
	if err != nil {
		return nil, err
	}
	names := NodeNames(o.Nodes)
	if o.Notef != nil {
		ttl := o.LeaseTTL.String()
		if o.AutoTTL {
			ttl = "learned (auto)"
		}
		db := "PostgreSQL"
		if o.HA {
			db = "PostgreSQL HA (pg_auto_failover: monitor, primary, synchronous standby)"
		}
		o.Notef("starting an own cluster: %s, %s (demo mode, lease TTL %s)", db, strings.Join(names, ", "), ttl)
	}
	// Room for three nodes' pools and bench's raw-SQL baseline at 256 clients.
	settings := []string{"max_connections=400"}
	if o.HA {
		if err := c.startHA(ctx, dir, settings, o.Notef); err != nil {
			return nil, err
		}
	} else {
		pg, err := pglocal.Start(ctx, pglocal.Options{DataDir: filepath.Join(dir, "pgdata"), Settings: settings})
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL for the own cluster: %w (or pass --targets)", err)
		}
		c.cleanup = append(c.cleanup, func() { _ = pg.Stop(context.Background()) })
		if err := pg.CreateDatabase(ctx, "lockbank"); err != nil {
			return nil, err
		}
		c.pg, c.databaseURL = pg, pg.URL("lockbank")
	}
	wait := (o.LeaseTTL*3 + 2*time.Second).String()
	demo := []string{"--unsafe-demo", "--lease-ttl", o.LeaseTTL.String(), "--lease-wait", wait,
		// The row lock's lease is as long as the lease's, and a waiter waits it out.
		"--row-lock-ttl", o.LeaseTTL.String(), "--lock-timeout", wait}
	if o.AutoTTL {
		demo[2] = "auto"
	}
	nodesURL := c.databaseURL
	if o.PgBouncer {
		// Fewer server connections than the nodes' pools hold clients, so
		// that transactions really do move between them.
		b, err := pgbouncer.Start(ctx, pgbouncer.Options{Backend: c.databaseURL, PoolSize: 20})
		if err != nil {
			return nil, err
		}
		c.cleanup = append(c.cleanup, b.Stop)
		if o.Notef != nil {
			o.Notef("PgBouncer in transaction mode on 127.0.0.1:%d in front of it; the nodes LISTEN on the direct connection", b.Port())
		}
		nodesURL = b.URL("lockbank")
		demo = append(demo, "--pooler", "--listen-database-url", c.databaseURL)
	}
	// The nodes start side by side; the migrations' advisory lock lets one
	// of them apply each.
	nodes, errs := make([]*Node, len(names)), make([]error, len(names))
	logPaths := make([]string, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		logPaths[i] = filepath.Join(dir, name+".log")
		log, err := os.OpenFile(logPaths[i], os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		c.cleanup = append(c.cleanup, func() { log.Close() })
		wg.Go(func() {
			args := append(slices.Clone(demo), o.Args[name]...)
			nodes[i], errs[i] = StartNode(ctx, NodeOptions{Binary: bankd, Name: name, DatabaseURL: nodesURL, Args: args, Log: log, Transport: o.Transport})
		})
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			c.cleanup = append(c.cleanup, n.Stop)
			c.Nodes = append(c.Nodes, n)
		}
	}
	for i, err := range errs {
		if err != nil {
			text, _ := os.ReadFile(logPaths[i])
			return nil, fmt.Errorf("%w\n%s", err, text)
		}
	}
	return c, nil
}

// Connect names bankd nodes that others run, at targets (base URLs; the
// first is node-a, whose container, if docker is not "", is frozen and
// killed with docker commands). It asks each for its name.
func Connect(ctx context.Context, targets []string, docker string) (*Cluster, error) {
	c := &Cluster{}
	for i, u := range targets {
		n := &Node{URL: u, API: newAPI(u, nil)}
		h, err := n.API.Health(ctx)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", u, err)
		}
		n.Name = h.Node
		if i == 0 {
			n.docker = docker
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c, nil
}

// startHA starts the replicated PostgreSQL of an HA cluster under dir.
func (c *Cluster) startHA(ctx context.Context, dir string, settings []string, notef func(string, ...any)) error {
	logf := notef
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := hacluster.Install(ctx, logf); err != nil {
		return err
	}
	ha, err := hacluster.Start(ctx, hacluster.Options{Dir: filepath.Join(dir, "ha"), Settings: settings, Notef: notef})
	if err != nil {
		return fmt.Errorf("PostgreSQL HA for the own cluster: %w", err)
	}
	c.cleanup = append(c.cleanup, ha.Close)
	c.ha, c.databaseURL = ha, ha.URL(hacluster.Database)
	return nil
}

// HA is the own cluster's replicated PostgreSQL, or nil.
func (c *Cluster) HA() *hacluster.Cluster { return c.ha }

// Own reports whether the cluster is an own one (Start).
func (c *Cluster) Own() bool { return c.own }

// DatabaseURL is the own cluster's database, or "".
func (c *Cluster) DatabaseURL() string { return c.databaseURL }

// Close stops what Start started, in reverse order.
func (c *Cluster) Close() {
	for i := len(c.cleanup) - 1; i >= 0; i-- {
		c.cleanup[i]()
	}
	c.cleanup = nil
}

// TerminateSessions ends every bankd session of the own cluster's database
// (pg_terminate_backend), as a network cut or a database operator would.
func (c *Cluster) TerminateSessions(ctx context.Context) error {
	if c.databaseURL == "" {
		return fmt.Errorf("terminate needs the own cluster's database")
	}
	conn, err := pgx.Connect(ctx, c.databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'bankd %'`)
	return err
}

// RestartDatabase stops the own cluster's PostgreSQL the way a crash does
// (immediate shutdown) and starts it again on the same port.
func (c *Cluster) RestartDatabase(ctx context.Context) error {
	if c.pg == nil {
		return fmt.Errorf("db-restart needs the own cluster's database")
	}
	return c.pg.CrashAndRestart(ctx)
}

// CPUSeconds is the CPU time (user and system) the own node at url has
// used so far, and whether /proc could tell (never for targets).
func (c *Cluster) CPUSeconds(url string) (float64, bool) {
	for _, n := range c.Nodes {
		if n.URL != url || n.PID() == 0 {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.PID()))
		if err != nil {
			return 0, false
		}
		// The fields after the command name, which is in parentheses and
		// may hold spaces: utime and stime are the 12th and 13th of them.
		_, rest, ok := strings.Cut(string(data), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 13 {
			return 0, false
		}
		utime, err1 := strconv.ParseFloat(fields[11], 64)
		stime, err2 := strconv.ParseFloat(fields[12], 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return (utime + stime) / clockTicks, true
	}
	return 0, false
}

// clockTicks is Linux's USER_HZ, the unit of /proc's CPU times: 100 on
// every architecture Go supports there.
const clockTicks = 100

// PeakRSSMiB is the largest peak resident set (VmHWM) of the own nodes'
// processes, in MiB; 0 for targets, which are not our children.
func (c *Cluster) PeakRSSMiB() float64 {
	var peak float64
	for _, n := range c.Nodes {
		pid := n.PID()
		if pid == 0 {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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
