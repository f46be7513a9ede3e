package locks

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// AdvisorySession is a PostgreSQL session advisory lock: pg_advisory_lock on
// a connection taken from the pool and held until pg_advisory_unlock.
var AdvisorySession = Impl{
	Name:  "advisory-session",
	Notes: "pg_advisory_lock / pg_advisory_unlock on a held pool connection; a waiter blocks in the server's lock queue",
	Open: func(ctx context.Context, env Env) (Locker, error) {
		pool, err := newPool(ctx, env.PostgresURL)
		if err != nil {
			return nil, err
		}
		return sessionLocker{pool}, nil
	},
}

type sessionLocker struct{ pool *pgxpool.Pool }

func (l sessionLocker) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	key := advisoryKey(resource)
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		conn.Release()
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key)
		if err != nil {
			// The lock may still be held by this session: never reuse it.
			conn.Conn().Close(ctx)
		}
		conn.Release()
		return err
	}, nil
}

func (l sessionLocker) Close() { l.pool.Close() }
