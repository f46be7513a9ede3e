package main

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
)

// TestReadyNeedsAWritablePrimary: /readyz's question fails on a database
// that answers but cannot take writes (pg_auto_failover's promoted standby
// before its demote timeout, a standby, a demoted primary), and passes on
// one that can.
func TestReadyNeedsAWritablePrimary(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	open := func(readOnly bool) *pgxpool.Pool {
		t.Helper()
		return pgtest.Configured(t, url, func(cfg *pgxpool.Config) {
			if readOnly {
				cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
			}
		})
	}
	ctx := context.Background()
	if err := ready(open(false))(ctx); err != nil {
		t.Fatalf("a writable primary: %v, want ready", err)
	}
	if err := ready(open(true))(ctx); !errors.Is(err, errNotPrimary) {
		t.Fatalf("a read-only database: %v, want errNotPrimary", err)
	}
}
