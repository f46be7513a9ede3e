package hacluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/wait"
)

// State is what the monitor knows of a node: the state its keeper last
// reported and the goal the monitor set it.
type State struct {
	Reported, Goal string
}

func (s State) String() string {
	if s.Reported == s.Goal {
		return s.Reported
	}
	return s.Reported + "→" + s.Goal
}

// States asks the monitor for every data node's state, by node name.
func (c *Cluster) States(ctx context.Context) (map[string]State, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.MonitorURL())
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT nodename, reportedstate::text, goalstate::text FROM pgautofailover.node`)
	out := map[string]State{}
	var name string
	var s State
	_, err = pgx.ForEachRow(rows, []any{&name, &s.Reported, &s.Goal}, func() error {
		out[name] = s
		return nil
	})
	return out, err
}

// Describe is the states as one line, "node1 primary, node2 secondary".
func Describe(states map[string]State) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(states)) {
		parts = append(parts, name+" "+states[name].String())
	}
	return strings.Join(parts, ", ")
}

// WaitStates polls the monitor until every node named in want has reported
// that state and has it as its goal, or timeout passes.
func (c *Cluster) WaitStates(ctx context.Context, timeout time.Duration, want map[string]string) error {
	var last map[string]State
	err := wait.Poll(ctx, timeout, 100*time.Millisecond, func() bool {
		states, err := c.States(ctx)
		if err != nil {
			return false
		}
		last = states
		for name, w := range want {
			if s := states[name]; s.Reported != w || s.Goal != w {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("hacluster: waiting for %v, the monitor says %s: %w", want, Describe(last), err)
	}
	return nil
}

// Primary is the node the monitor has as primary (reported and goal), or
// an error when there is none now.
func (c *Cluster) Primary(ctx context.Context) (*Node, error) {
	states, err := c.States(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if s := states[n.Name]; s.Reported == "primary" && s.Goal == "primary" {
			return n, nil
		}
	}
	return nil, fmt.Errorf("hacluster: no primary: %s", Describe(states))
}

// Other is the data node that is not n.
func (c *Cluster) Other(n *Node) *Node {
	if c.Nodes[0] == n {
		return c.Nodes[1]
	}
	return c.Nodes[0]
}

// Kill kills node n's keeper and postmaster (SIGKILL): its keeper cannot
// restart it, so if it was the primary the monitor fails over.
func (c *Cluster) Kill(n *Node) { n.keeper.kill() }

// Restart starts node n's keeper again; it rejoins by itself, rewinding
// what a failover cut off.
func (c *Cluster) Restart(n *Node) error { return c.start(n.keeper) }

// WaitHealthy waits until one node is primary and the other its
// secondary, and returns the primary.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) (*Node, error) {
	var primary *Node
	err := wait.Poll(ctx, timeout, 100*time.Millisecond, func() bool {
		states, err := c.States(ctx)
		if err != nil {
			return false
		}
		for _, n := range c.Nodes {
			p, s := states[n.Name], states[c.Other(n).Name]
			if p.Reported == "primary" && p.Goal == "primary" && s.Reported == "secondary" && s.Goal == "secondary" {
				primary = n
				return true
			}
		}
		return false
	})
	if err != nil {
		states, _ := c.States(ctx)
		return nil, fmt.Errorf("hacluster: no primary with a secondary: %s: %w", Describe(states), err)
	}
	return primary, nil
}

// Install installs Packages with apt-get when pg_autoctl is missing (as
// root only), after apt-get update; logf hears what it does.
func Install(ctx context.Context, logf func(string, ...any)) error {
	if _, err := exec.LookPath("pg_autoctl"); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return ErrNotInstalled
	}
	logf("installing %s with apt-get", strings.Join(Packages, " "))
	update := exec.CommandContext(ctx, "apt-get", "update")
	if out, err := update.CombinedOutput(); err != nil {
		return fmt.Errorf("hacluster: apt-get update: %w\n%s", err, lastLines(string(out), 10))
	}
	install := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, Packages...)...)
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("hacluster: apt-get install: %w\n%s", err, lastLines(string(out), 10))
	}
	return nil
}
