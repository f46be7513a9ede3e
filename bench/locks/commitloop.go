package locks

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// CommitLoop is not a lock: each "acquire" is one durable single-row commit
// and its release does nothing. It is the physical limit of anything that
// flushes one commit per cycle (lockmgr's grant; its release commits without
// waiting for a flush), so it is measured alone and in parallel only.
var CommitLoop = Impl{
	Name:        "commit-loop",
	Durable:     true,
	CommitsOnly: true,
	Notes:       "baseline, not a lock: one single-row upsert per cycle, committed with synchronous_commit on; no release",
	Open:        openCommitLoop,
}

type commitLoop struct{ pool *pgxpool.Pool }

func openCommitLoop(ctx context.Context, env Env) (Locker, error) {
	pool, err := newPool(ctx, env.PostgresURL)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS lockbench_commits (resource text PRIMARY KEY, n bigint NOT NULL)`); err != nil {
		pool.Close()
		return nil, fmt.Errorf("create lockbench_commits: %w", err)
	}
	return &commitLoop{pool: pool}, nil
}

func (c *commitLoop) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	_, err := c.pool.Exec(ctx, `INSERT INTO lockbench_commits AS c VALUES ($1, 1)
ON CONFLICT (resource) DO UPDATE SET n = c.n + 1`, resource)
	if err != nil {
		return nil, err
	}
	return func(context.Context) error { return nil }, nil
}

func (c *commitLoop) Close() { c.pool.Close() }
