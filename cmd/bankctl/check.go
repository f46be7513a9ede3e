package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/history"
)

type checkFlags struct {
	clients  int
	duration time.Duration
	accounts int
	faults   string
	every    time.Duration
	timeout  time.Duration
	history  string
	plot     string
	strategy string
	ha       bool // set from the common --ha flag
}

func (f *checkFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.clients, "clients", 16, "concurrent clients")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long the workload runs")
	fs.IntVar(&f.accounts, "accounts", 8, "accounts the clients contend on")
	fs.StringVar(&f.faults, "faults", "pause,kill,terminate,db-restart", "faults to inject, comma-separated: pause (SIGSTOP a node inside a lease withdrawal, past the lease TTL; its late write must be refused by the fence), kill (SIGKILL, then restart), terminate (pg_terminate_backend of bankd's sessions), db-restart (PostgreSQL immediate shutdown and restart); with --ha: failover (kill the primary's keeper and postmaster, wait for the promotion, restart it as standby), standby-down (stop the standby, then kill the primary: no failover); empty for none")
	fs.DurationVar(&f.every, "fault-every", 3*time.Second, "pause between faults")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "client timeout of half the clients, shorter than the pauses so that unknown outcomes really happen; the other half wait 5 times as long")
	fs.StringVar(&f.strategy, "strategies", "row,lease", "withdrawal strategies to draw from; with unsafe or lease-nofence the check should find violations")
	fs.StringVar(&f.plot, "plot", "", "draw throughput and p99 latency over time, fault windows shaded, as an SVG to this file")
	fs.StringVar(&f.history, "history", "", "write the history (operations and faults) as JSON Lines to this file")
}

func (f checkFlags) validate() error {
	switch {
	case f.clients < 1 || f.clients > 256:
		return usageError("--clients must be from 1 to 256")
	case f.accounts < 1 || f.accounts > 1000:
		return usageError("--accounts must be from 1 to 1000")
	case f.duration < time.Second || f.duration > time.Hour:
		return usageError("--duration must be from 1s to 1h")
	case f.timeout < 100*time.Millisecond:
		return usageError("--timeout must be at least 100ms")
	}
	if len(splitList(f.strategy)) == 0 {
		return usageError("--strategies needs at least one strategy")
	}
	for _, s := range splitList(f.strategy) {
		if s != "row" && s != "lease" && s != "unsafe" && s != "lease-nofence" {
			return usageError("--strategies: %q is not one of row, lease, unsafe, lease-nofence", s)
		}
	}
	for _, fault := range splitList(f.faults) {
		switch fault {
		case "pause", "kill", "terminate", "db-restart":
		case "failover", "standby-down":
			if !f.ha {
				return usageError("--faults %s needs --ha (the replicated PostgreSQL)", fault)
			}
		default:
			return usageError("--faults: %q is not one of pause, kill, terminate, db-restart, failover, standby-down", fault)
		}
		if fault == "db-restart" && f.ha {
			return usageError("--faults db-restart restarts the one PostgreSQL; with --ha use failover")
		}
	}
	return nil
}

// run is a Jepsen-style bank test (internal/history): clients run
// random deposits, withdrawals (row and lease, some holding inside the
// critical section) and reads with idempotency keys while faults are
// injected; writes whose outcome is unknown are retried with the same key
// on another node; every operation is recorded, and the history is checked
// against the final ledgers. Every pause fault freezes a node inside a lease
// (pauseInLease), so the run fails if pauses were injected and the fence
// refused nothing.
func (f checkFlags) run(ctx context.Context, c *cluster.Cluster, tl *timeline) error {
	faults := splitList(f.faults)
	if len(faults) > 0 && !c.Own() && c.Nodes[0].Docker() == "" {
		return usageError("faults need the own cluster (or --docker for pause and kill on node-a); use --faults '' against plain --targets")
	}
	var ids []int64
	const opening = 100_000
	for i := range f.accounts {
		acct, err := c.Nodes[0].API.CreateAccount(ctx, fmt.Sprintf("check-%d", i), opening)
		if err != nil {
			return trouble(err)
		}
		ids = append(ids, acct.ID)
	}
	// The pause probe's own account: nobody else writes to it, so what the
	// probe does there is exactly what the fence decides.
	probe, err := c.Nodes[0].API.CreateAccount(ctx, "check-pause-probe", opening)
	if err != nil {
		return trouble(err)
	}
	tl.note("check: %d clients for %s over %d accounts on %d nodes; faults: %s every %s; client timeout %s",
		f.clients, f.duration, f.accounts, len(c.Nodes), strings.Join(faults, ", "), f.every, f.timeout)

	w := history.Workload{Clients: f.clients, Duration: f.duration, Timeout: f.timeout, Accounts: ids,
		Nodes: historyNodes(c.Nodes), Strategies: splitList(f.strategy), Faults: faults, FaultEvery: f.every,
		Inject: func(ctx context.Context, r *history.Recorder, ft *history.Fault, i int) error {
			return inject(ctx, c, r, probe.ID, ft, i)
		},
		Injected: func(ft history.Fault, err error) {
			if err != nil {
				tl.note("fault %s failed: %v", ft.Kind, err)
				return
			}
			result := fmt.Sprintf("%.1fs–%.1fs", ft.Start, ft.End)
			if ft.Kind == "pause" {
				result += ", late write " + ft.LateWrite
			}
			tl.event(ft.Node, "fault: "+ft.Kind, 0, result, bad)
		},
		Progress: func(n int) { tl.showProgress("operations", n, 0) },
	}
	r, fs := w.Run(ctx)
	// Every fault is healed (inject resumes and restarts before it returns);
	// wait out leases and row locks left by faults, then read the truth.
	for _, n := range c.Nodes {
		if err := cluster.WaitReady(ctx, n.API, 30*time.Second, nil); err != nil {
			return trouble(fmt.Errorf("%s after the run: %w", n.Name, err))
		}
	}
	ops := r.Ops()
	res, err := history.Judge(ctx, c.Nodes[0].API, append(ids, probe.ID), ops, fs)
	if err != nil {
		return trouble(err)
	}
	if f.history != "" {
		if err := history.WriteFile(f.history, ops, fs); err != nil {
			return trouble(err)
		}
	}
	if f.plot != "" {
		out, err := os.Create(f.plot)
		if err != nil {
			return trouble(err)
		}
		err = history.WritePlot(out, ops, fs, r.Since())
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return trouble(err)
		}
		tl.note("plot: %s", f.plot)
	}
	if c.Own() {
		// Tokens from the lock table's history: per resource strictly
		// increasing, across every failover, and never granted twice.
		grants, bad, err := history.CheckGrants(ctx, c.DatabaseURL())
		if err != nil {
			return trouble(err)
		}
		tl.note("lease_grants: %d grants checked", grants)
		res.Violations = append(res.Violations, bad...)
		res.ViolationCount += len(bad)
		res.Valid = res.Valid && len(bad) == 0
	}
	internal := 0
	if c.HA() != nil {
		internal = printFailovers(tl, ops, fs, res)
	}
	pausesTried, failovers, failedDBFaults := 0, 0, 0
	for _, ft := range fs {
		switch {
		case ft.Kind == "pause":
			pausesTried++
		case (ft.Kind == "failover" || ft.Kind == "standby-down") && ft.Error != "":
			failedDBFaults++
		case ft.Kind == "failover":
			failovers++
		}
	}
	printCheck(tl, res, f.history, pausesTried)
	tl.result(res)
	switch {
	case !res.Valid:
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d violations", res.ViolationCount)}
	case failedDBFaults > 0:
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d database faults did not complete: the HA cluster did not fail over or recover as it should", failedDBFaults)}
	case slices.Contains(splitList(f.faults), "failover") && failovers == 0:
		return &exitError{code: exitUnsafe, msg: "no failover was completed: make --duration longer"}
	case internal > 0:
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d answers were 500 internal: every database failure must be database_unavailable or outcome_unknown", internal)}
	case pausesTried > 0 && res.FenceRejected == 0:
		// A fault that did not bite proves nothing: the pauses froze nodes
		// inside leases, so a working fence must have refused their writes.
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d pause faults, but the fence refused no write: the pauses did not bite, or the fence is gone", pausesTried)}
	}
	return nil
}

// inject applies one fault and heals it before returning.
func inject(ctx context.Context, c *cluster.Cluster, r *history.Recorder, probeAccount int64, ft *history.Fault, i int) error {
	// Rotate through the nodes out of step with the fault kinds, so that every
	// kind of fault hits every node in turn.
	n := c.Nodes[(i+i/len(c.Nodes))%len(c.Nodes)]
	if !c.Own() {
		n = c.Nodes[0] // only node-a has a --docker name
	}
	ft.Node = n.Name
	switch ft.Kind {
	case "pause":
		return pauseInLease(ctx, c, r, n, probeAccount, ft, i)
	case "kill":
		if err := n.Kill(ctx); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		return n.Restart(ctx)
	case "db-restart":
		ft.Node = ""
		return c.RestartDatabase(ctx)
	case "terminate":
		ft.Node = ""
		return c.TerminateSessions(ctx)
	case "failover":
		return failover(ctx, c, r, ft)
	case "standby-down":
		return standbyDown(ctx, c, r, ft)
	}
	return fmt.Errorf("unknown fault %q", ft.Kind)
}

func printCheck(tl *timeline, r history.Summary, historyFile string, pausesTried int) {
	tl.printf("\n%d operations: %d ok, %d fail, %d info (unknown outcome)\n", r.Operations, r.Outcomes[history.OutcomeOK], r.Outcomes[history.OutcomeFail], r.Outcomes[history.OutcomeInfo])
	tl.printf("writes retried with their Idempotency-Key: %d (%d attempts for all writes); answers that replayed an earlier attempt's outcome: %d\n", r.Retried, r.Attempts, r.Replays)
	tl.printf("faults: %v\n", r.Faults)
	tl.printf("refusals and unknowns by code, per attempt: %v\n", r.Codes)
	tl.printf("writes refused by the fence: %d; pauses inside a lease whose late write the fence refused: %d of %d\n", r.FenceRejected, r.ProbesFenced, r.PauseProbes)
	if pausesTried > 0 && r.FenceRejected == 0 {
		tl.printf("%s: %d pause faults, but the fence refused no write\n", tl.paint("FAULTS DID NOT BITE", bad), pausesTried)
	}
	if historyFile != "" {
		tl.printf("history: %s\n", historyFile)
	}
	for _, v := range r.Violations {
		tl.printf("VIOLATION account %d [%s]: %s\n", v.Account, v.Rule, v.Detail)
	}
	if r.Valid {
		tl.printf("%s: 0 violations\n", tl.paint("VALID", good))
	} else {
		tl.printf("%s: %d violations\n", tl.paint("INVALID", bad), r.ViolationCount)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
