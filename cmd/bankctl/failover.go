package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/hacluster"
	"github.com/lockbank/lockbank/internal/history"
	"github.com/lockbank/lockbank/internal/wait"
)

// failover kills the HA cluster's primary — its keeper's process group and
// its postmaster, so that the keeper cannot restart it — once the old
// primary of the last failover has rejoined as standby; waits until the
// monitor has promoted the standby; starts the killed node again and waits
// until it is the new standby. ft.Start is the kill.
func failover(ctx context.Context, c *cluster.Cluster, r *history.Recorder, ft *history.Fault) error {
	ha := c.HA()
	if ha == nil {
		return fmt.Errorf("failover needs the HA cluster (--ha)")
	}
	old, err := ha.WaitHealthy(ctx, 2*time.Minute)
	if err != nil {
		return err
	}
	next := ha.Other(old)
	ft.Node, ft.Start = old.Name, r.Since()
	ha.Kill(old)
	if err := ha.WaitStates(ctx, time.Minute, map[string]string{next.Name: "wait_primary"}); err != nil {
		return err
	}
	ft.Promoted = r.Since()
	if err := ha.Restart(old); err != nil {
		return err
	}
	_, err = ha.WaitHealthy(ctx, 2*time.Minute)
	ft.Detail = fmt.Sprintf("%s killed, %s promoted after %.1fs, %s back as standby", old.Name, next.Name, ft.Promoted-ft.Start, old.Name)
	return err
}

// standbyDown is what pg_auto_failover does not promise: the standby is
// stopped first (the primary goes to wait_primary and commits on one node,
// without waiting for a standby), then the primary is killed. The standby
// is started again while the primary is down: it is behind the writes the
// primary took alone, so the monitor must not promote it, and no node takes
// writes until the primary is back. Then the primary is started, and the
// standby catches up.
func standbyDown(ctx context.Context, c *cluster.Cluster, r *history.Recorder, ft *history.Fault) error {
	ha := c.HA()
	if ha == nil {
		return fmt.Errorf("standby-down needs the HA cluster (--ha)")
	}
	primary, err := ha.WaitHealthy(ctx, 2*time.Minute)
	if err != nil {
		return err
	}
	standby := ha.Other(primary)
	ft.Node, ft.Start = primary.Name, r.Since()
	ha.Kill(standby)
	if err := ha.WaitStates(ctx, time.Minute, map[string]string{primary.Name: "wait_primary"}); err != nil {
		return err
	}
	alone := r.Since()
	// Let the primary acknowledge writes alone: these are the writes a
	// promotion of the standby would lose.
	var aloneOK int
	_ = wait.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() bool {
		aloneOK = 0
		for _, o := range r.Ops() {
			if history.IsWrite(o) && o.Outcome == history.OutcomeOK && o.Invoke > alone {
				aloneOK++
			}
		}
		return aloneOK >= 20
	})
	ha.Kill(primary)
	killed := r.Since()
	if err := ha.Restart(standby); err != nil {
		return err
	}
	// Watch the monitor: a promotion of the standby, which would lose the
	// writes above, would show here. The wait is expected to time out.
	var seen []string
	_ = wait.Poll(ctx, 8*time.Second, 250*time.Millisecond, func() bool {
		states, err := ha.States(ctx)
		if err != nil {
			return false
		}
		if d := hacluster.Describe(states); len(seen) == 0 || seen[len(seen)-1] != d {
			seen = append(seen, d)
		}
		if s := states[standby.Name]; s.Reported == "wait_primary" || s.Reported == "primary" || s.Reported == "single" {
			ft.Promoted = r.Since()
			return true
		}
		return false
	})
	if err := ha.Restart(primary); err != nil {
		return err
	}
	_, err = ha.WaitHealthy(ctx, 2*time.Minute)
	ft.Detail = fmt.Sprintf("%s stopped at %.1fs; %s alone in wait_primary from %.1fs, acknowledged %d writes alone; %s killed at %.1fs, %s restarted; monitor: %s",
		standby.Name, ft.Start, primary.Name, alone, aloneOK, primary.Name, killed, standby.Name, strings.Join(seen, " | "))
	if ft.Promoted > 0 {
		ft.Detail += fmt.Sprintf("; %s PROMOTED at %.1fs", standby.Name, ft.Promoted)
	}
	return err
}

// printFailovers reports each database fault (what the monitor did, the
// write outage), the outages' median and worst, and how the writes with
// unknown outcomes settled. It returns the number of 500 answers.
func printFailovers(tl *timeline, ops []history.Op, fs []history.Fault, res history.Summary) int {
	outage := map[int]history.Outage{}
	var secs []float64
	for _, o := range res.Outages {
		outage[o.Fault] = o
		if o.Kind == "failover" {
			secs = append(secs, o.Seconds)
		}
	}
	for i, ft := range fs {
		if ft.Kind != "failover" && ft.Kind != "standby-down" {
			continue
		}
		line := fmt.Sprintf("%s %.1fs–%.1fs: %s", ft.Kind, ft.Start, ft.End, ft.Detail)
		if ft.Error != "" {
			line += "; FAILED: " + ft.Error
		}
		if o, ok := outage[i]; ok {
			line += fmt.Sprintf("; write outage %.2fs (first failed write %.2fs, first success after %.2fs)", o.Seconds, o.FirstFail, o.FirstOK)
		}
		tl.printf("%s\n", line)
	}
	if len(secs) > 0 {
		sort.Float64s(secs)
		tl.printf("failover write outage over %d failovers: median %.2fs, worst %.2fs\n", len(secs), median(secs), secs[len(secs)-1])
	}
	u := res.Unknowns
	tl.printf("writes with an unknown outcome: %d; settled by a keyed retry: %d; still unknown, then found applied once in the ledger: %d, not applied: %d; 500 answers: %d\n",
		u["ok"]+u["applied"]+u["not-applied"], u["ok"], u["applied"], u["not-applied"], u["internal"])
	return u["internal"]
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}
