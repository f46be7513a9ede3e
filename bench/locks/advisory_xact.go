package locks

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// AdvisoryXact is a PostgreSQL transaction advisory lock:
// pg_advisory_xact_lock inside BEGIN … COMMIT, released by the commit.
var AdvisoryXact = Impl{
	Name:  "advisory-xact",
	Notes: "BEGIN; pg_advisory_xact_lock; … COMMIT releases it; a waiter blocks in the server's lock queue",
	Open: func(ctx context.Context, env Env) (Locker, error) {
		pool, err := newPool(ctx, env.PostgresURL)
		if err != nil {
			return nil, err
		}
		return xactLocker{pool}, nil
	},
}

type xactLocker struct{ pool *pgxpool.Pool }

func (l xactLocker) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryKey(resource)); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return tx.Commit, nil
}

func (l xactLocker) Close() { l.pool.Close() }
