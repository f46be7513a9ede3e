package locks

import (
	"context"
	"fmt"
	"os"

	"github.com/lockbank/lockbank/lockmgr"
)

// Lockmgr is lockbank's own lease manager, used through its public API only.
var Lockmgr = Impl{
	Name:    "lockmgr",
	Durable: true,
	Fenced:  true,
	Notes:   "lockmgr.New(pool, Options{}); Acquire with a 30 s lease; waiters wake on NOTIFY or at expiry",
	Open: func(ctx context.Context, env Env) (Locker, error) {
		return openLockmgr(ctx, env, lockmgr.Options{})
	},
}

// LockmgrCombined is lockmgr with concurrent grants (and releases) of
// different resources sharing one statement and commit.
var LockmgrCombined = Impl{
	Name:    "lockmgr-combined",
	Durable: true,
	Fenced:  true,
	Notes:   "lockmgr.New(pool, Options{CombineGrants: true}); otherwise as lockmgr",
	Open: func(ctx context.Context, env Env) (Locker, error) {
		return openLockmgr(ctx, env, lockmgr.Options{CombineGrants: true})
	},
}

type lockmgrLocker struct {
	m      *lockmgr.Manager
	close  func()
	holder string
}

func openLockmgr(ctx context.Context, env Env, opts lockmgr.Options) (Locker, error) {
	pool, err := newPool(ctx, env.PostgresURL)
	if err != nil {
		return nil, err
	}
	m := lockmgr.New(pool, opts)
	return &lockmgrLocker{
		m:      m,
		close:  func() { m.Close(); pool.Close() },
		holder: fmt.Sprintf("lockbench-%d", os.Getpid()),
	}, nil
}

func (l *lockmgrLocker) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	lease, err := l.m.Acquire(ctx, resource, l.holder, LeaseTTL)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return l.m.Release(ctx, resource, lease.ID) }, nil
}

func (l *lockmgrLocker) Close() { l.close() }
