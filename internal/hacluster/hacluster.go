// Package hacluster runs a replicated PostgreSQL on this machine with
// pg_auto_failover: a monitor and two data nodes, each a pg_autoctl keeper
// with its postmaster, as local processes on 127.0.0.1. The primary commits
// synchronously to the standby (pg_auto_failover sets
// synchronous_standby_names = ANY 1 (…)); when the primary dies the monitor
// promotes the standby, and a killed node that is started again rejoins as
// the new standby (pg_rewind).
//
// It is tuned for fast failover (a few seconds instead of about a minute):
// the monitor's health checks and demote timeout are lowered, and each
// keeper's network_partition_timeout is below the monitor's
// primary_demote_timeout, so that a primary cut off from the monitor stops
// taking writes before the monitor promotes the standby. The standby is
// created after a CHECKPOINT on the primary, so that its pg_basebackup does
// not wait for one.
//
// bankctl's HA cluster (internal/cluster with HA) and the tests of bankd on
// a moving primary start it; they give bankd URL, a multi-host URL with
// target_session_attrs=primary.
package hacluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/internal/wait"
)

// Packages are the Debian packages that hold pg_autoctl and the monitor's
// extension for PostgreSQL 15.
var Packages = []string{"postgresql-15-auto-failover", "pg-auto-failover-cli"}

// ErrNotInstalled: pg_autoctl is not on PATH (see Install).
var ErrNotInstalled = errors.New("hacluster: pg_autoctl not found; install " + strings.Join(Packages, " ") + " (hacluster.Install does, as root)")

// Database is the database bankd uses, created on the first data node.
const Database = "lockbank"

// Tuning of the monitor (milliseconds) and of the keepers (seconds). A dead
// primary is noticed after about node_considered_unhealthy_timeout plus a
// health check, and the standby takes writes once primary_demote_timeout
// has passed since the primary was asked to demote; a keeper that cannot
// reach the monitor or the standby demotes itself after
// network_partition_timeout, which must be shorter.
var (
	monitorSettings = map[string]string{
		"pgautofailover.health_check_period":               "1000",
		"pgautofailover.health_check_timeout":              "1000",
		"pgautofailover.health_check_max_retries":          "1",
		"pgautofailover.health_check_retry_delay":          "500",
		"pgautofailover.node_considered_unhealthy_timeout": "2000",
		"pgautofailover.primary_demote_timeout":            "4000",
		"pgautofailover.startup_grace_period":              "2000",
	}
	networkPartitionTimeout = "2"
)

// Options configure Start.
type Options struct {
	// Dir holds the monitor's and the nodes' data and configuration; it must
	// be reachable by the postgres OS user when run as root.
	Dir string
	// Settings are PostgreSQL settings (name=value) of the data nodes.
	Settings []string
	// Notef, if set, hears what is being started.
	Notef func(format string, args ...any)
}

// Cluster is a monitor and two data nodes, node1 and node2.
type Cluster struct {
	dir     string
	env     []string
	runAs   *user.User // nil: the current user
	monitor *keeper
	Nodes   []*Node
	notef   func(string, ...any)
}

// Node is one data node: its keeper (and the postmaster it runs) and its
// port on 127.0.0.1.
type Node struct {
	Name   string
	Port   int
	PGData string
	keeper *keeper
}

// Start installs nothing (see Install): it creates the monitor and the two
// data nodes under o.Dir and waits until node1 is primary and node2 its
// synchronous standby. Close stops them.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if _, err := exec.LookPath("pg_autoctl"); err != nil {
		return nil, ErrNotInstalled
	}
	binDir, err := pglocal.FindBinDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: o.Dir, notef: o.Notef}
	if c.notef == nil {
		c.notef = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("hacluster: running as root needs the postgres OS user: %w", err)
		}
	}
	// pg_autoctl keeps its configuration and state under XDG directories:
	// ours, so that nothing of the user's is read or left behind.
	c.env = append(os.Environ(), "HOME="+o.Dir, "XDG_CONFIG_HOME="+filepath.Join(o.Dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(o.Dir, "data"), "XDG_RUNTIME_DIR="+filepath.Join(o.Dir, "run"),
		"PATH="+binDir+":"+os.Getenv("PATH"), "PG_CONFIG="+filepath.Join(binDir, "pg_config"))
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if err := c.chown(o.Dir); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}

	c.notef("pg_auto_failover: creating the monitor on 127.0.0.1:%d", ports[0])
	mon := filepath.Join(o.Dir, "monitor")
	if err := c.autoctl(ctx, "create", "monitor", "--pgdata", mon, "--pgport", strconv.Itoa(ports[0]),
		"--hostname", "127.0.0.1", "--auth", "trust", "--no-ssl"); err != nil {
		return nil, err
	}
	if err := c.autoctl(ctx, "config", "set", "--pgdata", mon, "postgresql.listen_addresses", "127.0.0.1"); err != nil {
		return nil, err
	}
	if c.monitor, err = c.run(mon, "monitor", ports[0]); err != nil {
		return nil, err
	}
	if err := c.tuneMonitor(ctx); err != nil {
		return nil, err
	}
	for i, port := range ports[1:] {
		n := &Node{Name: fmt.Sprintf("node%d", i+1), Port: port, PGData: filepath.Join(o.Dir, fmt.Sprintf("node%d", i+1))}
		c.notef("pg_auto_failover: creating %s on 127.0.0.1:%d", n.Name, port)
		if i == 1 {
			// The standby's pg_basebackup starts with a checkpoint; one
			// done now makes that one quick instead of a spread one.
			if err := c.exec(ctx, c.Nodes[0], "CHECKPOINT"); err != nil {
				return nil, err
			}
		}
		if err := c.autoctl(ctx, "create", "postgres", "--pgdata", n.PGData, "--pgport", strconv.Itoa(port),
			"--listen", "127.0.0.1", "--hostname", "127.0.0.1", "--name", n.Name, "--dbname", Database,
			"--monitor", c.MonitorURL(), "--auth", "trust", "--no-ssl"); err != nil {
			return nil, err
		}
		if err := c.autoctl(ctx, "config", "set", "--pgdata", n.PGData, "timeout.network_partition_timeout", networkPartitionTimeout); err != nil {
			return nil, err
		}
		if err := appendSettings(n.PGData, o.Settings); err != nil {
			return nil, err
		}
		if n.keeper, err = c.run(n.PGData, n.Name, n.Port); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		want := map[string]string{"node1": "single"}
		if i == 1 {
			want = map[string]string{"node1": "primary", "node2": "secondary"}
		}
		if err := c.WaitStates(ctx, 2*time.Minute, want); err != nil {
			return nil, err
		}
		// The monitor already had node1 as single when it was created; its
		// keeper may not have started its postmaster yet.
		if err := wait.Poll(ctx, time.Minute, 100*time.Millisecond, func() bool { return c.exec(ctx, n, "SELECT 1") == nil }); err != nil {
			return nil, fmt.Errorf("hacluster: %s does not answer: %w", n.Name, err)
		}
	}
	return c, nil
}

// MonitorURL is the monitor's database, as the keepers reach it.
func (c *Cluster) MonitorURL() string {
	return fmt.Sprintf("postgres://autoctl_node@127.0.0.1:%d/pg_auto_failover?sslmode=disable", c.monitor.port)
}

// URL is the multi-host URL of database db that follows the primary: pgx
// tries the hosts in turn and keeps the one that is not in recovery.
func (c *Cluster) URL(db string) string {
	var hosts []string
	for _, n := range c.Nodes {
		hosts = append(hosts, net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)))
	}
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: strings.Join(hosts, ","), Path: "/" + db,
		RawQuery: "sslmode=disable&target_session_attrs=primary&connect_timeout=2"}
	return u.String()
}

// NodeURL is the URL of database db on node n alone.
func (c *Cluster) NodeURL(n *Node, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=2", n.Port, db)
}

// Node returns the data node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Close stops every keeper and postmaster (SIGKILL of their process
// groups: nothing here needs to survive) and removes nothing: Dir is the
// caller's.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		n.keeper.kill()
	}
	if c.monitor != nil {
		c.monitor.kill()
	}
}

// tuneMonitor lowers the monitor's timeouts (monitorSettings).
func (c *Cluster) tuneMonitor(ctx context.Context) error {
	var conn *pgx.Conn
	err := wait.Poll(ctx, time.Minute, 100*time.Millisecond, func() bool {
		var err error
		conn, err = pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pg_auto_failover?sslmode=disable&connect_timeout=2", c.monitor.port))
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("hacluster: the monitor does not answer: %w", err)
	}
	defer conn.Close(ctx)
	for name, value := range monitorSettings {
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET %s = %s", name, value)); err != nil {
			return fmt.Errorf("hacluster: monitor %s: %w", name, err)
		}
	}
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

// exec runs sql on node n as the superuser.
func (c *Cluster) exec(ctx context.Context, n *Node, sql string) error {
	conn, err := pgx.Connect(ctx, c.NodeURL(n, Database))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func appendSettings(pgdata string, settings []string) error {
	if len(settings) == 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(pgdata, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	for _, kv := range settings {
		name, value, _ := strings.Cut(kv, "=")
		fmt.Fprintf(f, "%s = '%s' # lockbank hacluster\n", name, value)
	}
	return f.Close()
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
