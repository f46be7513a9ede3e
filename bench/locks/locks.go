// Package locks puts every lock implementation that lockbench measures behind
// one small interface, so that each measurement runs the same code for all of
// them. Each implementation lives in a file of its own.
package locks

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Locker is one implementation as one process uses it. Acquire is safe for
// concurrent use by many workers.
type Locker interface {
	// Acquire blocks until the caller holds resource or ctx ends, and
	// returns the function that gives it back.
	Acquire(ctx context.Context, resource string) (release func(context.Context) error, err error)
	// Close frees the Locker's connections.
	Close()
}

// Env says where the servers are.
type Env struct {
	PostgresURL string // a database migrated with lockbank's migrations
	RedisAddr   string // host:port of a redis-server; "" when none runs
}

// Impl describes one implementation under test.
type Impl struct {
	Name    string
	Durable bool // a granted lock survives a database crash (a flushed commit)
	Fenced  bool // every grant carries a token that protected writes can check
	// CommitsOnly: a baseline, not a lock (CommitLoop); no contended
	// figure and no hand-off.
	CommitsOnly bool
	Notes       string // how it is configured and how a waiter waits
	Open        func(ctx context.Context, env Env) (Locker, error)
}

// LeaseTTL is the lease of the lease-based implementations that let the
// caller choose it: long enough never to expire during a run.
const LeaseTTL = 30 * time.Second

// MaxConns bounds each Locker's database connections: one per worker (8) and
// room to spare, so no worker ever waits for a connection.
const MaxConns = 16

// All lists the implementations in the order lockbench reports them; the
// first is the baseline the ratios refer to.
func All() []Impl {
	return []Impl{PGLock, Lockmgr, LockmgrCombined, CommitLoop, AdvisorySession, AdvisoryXact, Redislock}
}

// ByName finds an implementation in All.
func ByName(name string) (Impl, bool) {
	for _, impl := range All() {
		if impl.Name == name {
			return impl, true
		}
	}
	return Impl{}, false
}

// newPool opens a pgx pool with MaxConns connections.
func newPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	return pool, nil
}

// advisoryKey maps a resource name to an advisory lock key.
func advisoryKey(resource string) int64 {
	h := fnv.New64a()
	h.Write([]byte(resource))
	return int64(h.Sum64())
}
