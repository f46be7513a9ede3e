package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/loadgen"
)

// haRounds is how many times benchAlone measures each run with the
// standby and without: on a shared two-core machine one pair is noise.
const haRounds = 3

// benchAlone measures the cost of synchronous replication in the same run:
// with the HA cluster's standby stopped, pg_auto_failover moves the primary
// to wait_primary, which commits without waiting for a standby — the same
// primary, data and nodes as one PostgreSQL. It measures every run of cfg
// with the standby (synchronous) and without it (alone), in haRounds
// alternating rounds on the same accounts, and prints per run the median
// throughput of each and the median of the rounds' ratios. The standby is
// running again when it returns.
func benchAlone(ctx context.Context, c *cluster.Cluster, tl *timeline, cfg loadgen.Config) error {
	ha := c.HA()
	accts, err := loadgen.Seed(ctx, account.NewService(cfg.Pool, account.Options{}), cfg.Spread)
	if err != nil {
		return trouble(err)
	}
	cfg.Done = nil
	type key struct {
		scenario string
		clients  int
		target   string
	}
	var (
		order       []key
		sync, alone = map[key][]float64{}, map[key][]float64{}
		ratios      = map[key][]float64{}
	)
	for round := 1; round <= haRounds; round++ {
		primary, err := ha.WaitHealthy(ctx, 2*time.Minute)
		if err != nil {
			return trouble(err)
		}
		synced, err := loadgen.Measure(ctx, cfg, accts)
		if err != nil {
			return trouble(err)
		}
		standby := ha.Other(primary)
		ha.Kill(standby)
		if err := ha.WaitStates(ctx, time.Minute, map[string]string{primary.Name: "wait_primary"}); err != nil {
			return trouble(err)
		}
		lone, err := loadgen.Measure(ctx, cfg, accts)
		if err != nil {
			return trouble(err)
		}
		if err := ha.Restart(standby); err != nil {
			return trouble(err)
		}
		for i, r := range synced {
			k := key{r.Scenario, r.Clients, r.Target}
			if round == 1 {
				order = append(order, k)
			}
			a := lone[i]
			sync[k], alone[k] = append(sync[k], r.Throughput), append(alone[k], a.Throughput)
			if a.Throughput > 0 {
				ratios[k] = append(ratios[k], r.Throughput/a.Throughput)
			}
		}
		tl.note("round %d of %d: measured with the standby (%s synchronous) and with %s stopped (%s alone, wait_primary)",
			round, haRounds, primary.Name, standby.Name, primary.Name)
	}
	if _, err := ha.WaitHealthy(ctx, 2*time.Minute); err != nil {
		return trouble(err)
	}
	tl.printf("\nsynchronous replication against the primary alone (standby stopped), %d alternating rounds, medians:\n", haRounds)
	tl.printf("%-8s %7s  %-8s %12s %12s %12s  %s\n", "scenario", "clients", "target", "sync ops/s", "alone ops/s", "sync/alone", "ratio per round")
	for _, k := range order {
		tl.printf("%-8s %7d  %-8s %12.0f %12.0f %11.2f×  %s\n", k.scenario, k.clients, k.target,
			medianOf(sync[k]), medianOf(alone[k]), medianOf(ratios[k]), fmtRatios(ratios[k]))
	}
	unsound, err := account.NewService(cfg.Pool, account.Options{}).Audit(ctx, accts.All())
	if err != nil {
		return trouble(err)
	}
	if len(unsound) > 0 {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d bench accounts break balance = opening + deposits - withdrawals", len(unsound))}
	}
	return nil
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return median(s)
}

func fmtRatios(xs []float64) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.2f", x)
	}
	return out
}
