package locks

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"cirello.io/pglock"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// PGLock is cirello.io/pglock, configured as its README's example does: a 3 s
// lease kept alive by a heartbeat every second. Its defaults (20 s lease, 5 s
// heartbeat) would make a waiter sleep 20 s.
//
// pglock.New insists on lib/pq's driver; pglock.UnsafeNew takes any, and
// pglock's own tests run it on pgx's stdlib driver too, which is what we use.
var PGLock = Impl{
	Name:    "pglock",
	Durable: true,
	Fenced:  false,
	Notes: "cirello.io/pglock via pgx stdlib (UnsafeNew), WithLeaseDuration(3s), WithHeartbeatFrequency(1s); " +
		"a waiter that finds the lock taken sleeps a whole lease (3 s) before trying again",
	Open: openPGLock,
}

const (
	pglockLease     = 3 * time.Second
	pglockHeartbeat = time.Second
)

type pglockLocker struct {
	c  *pglock.Client
	db *sql.DB
}

func openPGLock(ctx context.Context, env Env) (Locker, error) {
	db, err := sql.Open("pgx", env.PostgresURL)
	if err != nil {
		return nil, err
	}
	// database/sql keeps only 2 idle connections by default; 8 workers would
	// then reconnect on most cycles.
	db.SetMaxOpenConns(MaxConns)
	db.SetMaxIdleConns(MaxConns)
	c, err := pglock.UnsafeNew(db, pglock.WithLeaseDuration(pglockLease), pglock.WithHeartbeatFrequency(pglockHeartbeat))
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := c.TryCreateTable(); err != nil {
		db.Close()
		return nil, fmt.Errorf("pglock: %w", err)
	}
	return &pglockLocker{c: c, db: db}, nil
}

func (l *pglockLocker) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	lock, err := l.c.AcquireContext(ctx, resource)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return l.c.ReleaseContext(ctx, lock) }, nil
}

func (l *pglockLocker) Close() { l.db.Close() }
