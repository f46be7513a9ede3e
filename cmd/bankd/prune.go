package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/lockmgr"
)

// startPruner deletes, at once and then every cfg.pruneInterval, what has
// outlived its retention (invariant 12): idempotency records older than
// --idempotency-retention, and lease history older than --lease-retention —
// grants, and the rows of lock-API resources; the accounts' lease rows stay.
// Every node runs one: their statements skip each other's rows, so they
// share the work and never wait for each other. stop ends it (as does ctx)
// and waits until it has, so that nothing uses the pool after it.
func startPruner(ctx context.Context, cfg config, accounts *account.Service, locks *lockmgr.Manager, logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(cfg.pruneInterval)
		defer ticker.Stop()
		for {
			prune(ctx, cfg, accounts, locks, logger)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// prune runs one round of both pruners and logs what they deleted: at info
// when they deleted something, else at debug. A failure (the database away)
// is logged and left to the next round.
func prune(ctx context.Context, cfg config, accounts *account.Service, locks *lockmgr.Manager, logger *slog.Logger) {
	start := time.Now()
	keys, keysErr := accounts.PruneIdempotencyKeys(ctx, cfg.idempotencyRetention)
	lease, leaseErr := locks.Prune(ctx, cfg.leaseRetention, account.LeaseResourcePrefix)
	if ctx.Err() != nil {
		return // shutting down: a statement cut short is no news
	}
	for _, err := range []error{keysErr, leaseErr} {
		if err != nil {
			logger.Warn("pruning failed; trying again next round", "err", err, "interval", cfg.pruneInterval)
		}
	}
	level := slog.LevelDebug
	if keys+lease.Leases+lease.Grants > 0 {
		level = slog.LevelInfo
	}
	logger.Log(ctx, level, "pruned", "idempotency_keys", keys, "leases", lease.Leases, "lease_grants", lease.Grants,
		"took", time.Since(start).Round(time.Millisecond))
}
