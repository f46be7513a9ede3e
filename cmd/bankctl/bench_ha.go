package main

import (
	"context"
	"fmt"
	"time"

	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/loadgen"
)

// benchAlone measures the cost of synchronous replication in the same run:
// with the HA cluster's standby stopped, pg_auto_failover moves the primary
// to wait_primary, which commits without waiting for a standby — the same
// primary, data and nodes as one PostgreSQL. It measures every run again
// (on fresh bench accounts), prints each synchronous figure as a ratio of
// the one-node figure, and starts the standby again.
func benchAlone(ctx context.Context, c *cluster.Cluster, tl *timeline, cfg loadgen.Config, synced loadgen.Result) error {
	ha := c.HA()
	primary, err := ha.WaitHealthy(ctx, 2*time.Minute)
	if err != nil {
		return trouble(err)
	}
	standby := ha.Other(primary)
	tl.note("stopping the standby %s: %s commits alone (wait_primary), as one PostgreSQL would", standby.Name, primary.Name)
	ha.Kill(standby)
	if err := ha.WaitStates(ctx, time.Minute, map[string]string{primary.Name: "wait_primary"}); err != nil {
		return trouble(err)
	}
	alone, err := loadgen.Bench(ctx, cfg)
	if err != nil {
		return trouble(err)
	}
	if err := ha.Restart(standby); err != nil {
		return trouble(err)
	}
	if _, err := ha.WaitHealthy(ctx, 2*time.Minute); err != nil {
		return trouble(err)
	}
	byKey := map[string]loadgen.Run{}
	for _, r := range alone.Runs {
		byKey[fmt.Sprintf("%s/%d/%s", r.Scenario, r.Clients, r.Target)] = r
	}
	tl.printf("\nsynchronous replication against one node (the standby stopped), same run:\n")
	tl.printf("%-8s %7s  %-8s %12s %12s %9s %12s %12s\n", "scenario", "clients", "target", "sync ops/s", "alone ops/s", "ratio", "sync p50 ms", "alone p50 ms")
	for _, r := range synced.Runs {
		a, ok := byKey[fmt.Sprintf("%s/%d/%s", r.Scenario, r.Clients, r.Target)]
		if !ok || a.Throughput == 0 {
			continue
		}
		tl.printf("%-8s %7d  %-8s %12.0f %12.0f %8.2f× %12.2f %12.2f\n", r.Scenario, r.Clients, r.Target, r.Throughput, a.Throughput,
			r.Throughput/a.Throughput, r.P50Ms, a.P50Ms)
	}
	if !alone.Consistent {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d bench accounts break balance = opening + deposits - withdrawals", len(alone.Unsound))}
	}
	return nil
}
