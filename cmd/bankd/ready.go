package main

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
)

// errNotPrimary: the database answers, but cannot take writes — a standby,
// a demoted primary, or a promoted standby that pg_auto_failover keeps
// read-only until the old primary's demote timeout has passed.
var errNotPrimary = errors.New("the database is a standby or read-only: no primary to write to")

// ready is /readyz's question: is there a primary to write to? With a
// multi-host DATABASE_URL (target_session_attrs=primary) the pool connects
// only to a node that is not in recovery, but a session may outlive its
// node's promotion or demotion, and pg_auto_failover makes a promoted node
// read-only for a while: so the question is asked of a session, every time.
func ready(pool *pgxpool.Pool) func(context.Context) error {
	return func(ctx context.Context) error {
		var writable bool
		err := pool.QueryRow(ctx, `SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'`).Scan(&writable)
		if err == nil && !writable {
			err = errNotPrimary
		}
		return err
	}
}
