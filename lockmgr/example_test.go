package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// A holder takes a lease, does its work under KeepAlive, and fences its
// write with the token. A holder that paused past its lease finds its write
// rejected: someone else holds a newer token.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.ExampleURL()) // any migrated lockbank database
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	locks := lockmgr.New(pool, lockmgr.Options{})
	defer locks.Close()

	lease, err := locks.Acquire(ctx, "invoice:42", "worker-1", 2*time.Second)
	if err != nil {
		panic(err)
	}
	keep := locks.KeepAlive(ctx, lease)

	// The protected write checks the token in its own transaction.
	write := func(token int64) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := lockmgr.CheckFence(ctx, tx, "invoice:42", token); err != nil {
				return err
			}
			// … the write itself goes here, in the same transaction …
			return nil
		})
	}
	fmt.Println("write with the live token:", write(keep.Lease().Token))

	// worker-1 stops renewing (as if frozen); its lease runs out and
	// worker-2 takes over with a higher token.
	keep.Stop()
	next, err := locks.Acquire(ctx, "invoice:42", "worker-2", 2*time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println("token went up:", next.Token > lease.Token)

	err = write(lease.Token)
	fmt.Println("late write by worker-1:", errors.Is(err, lockmgr.ErrStaleToken))
	fmt.Println("worker-1 may not release worker-2's lease:", errors.Is(locks.Release(ctx, "invoice:42", lease.ID), lockmgr.ErrNotHolder))
	fmt.Println("worker-2 releases:", locks.Release(ctx, "invoice:42", next.ID))
	// Output:
	// write with the live token: <nil>
	// token went up: true
	// late write by worker-1: true
	// worker-1 may not release worker-2's lease: true
	// worker-2 releases: <nil>
}

// A server that authenticates its callers takes each lease as the caller:
// then the lease id alone no longer renews or releases it — a leaked id is
// no use to another caller.
func ExampleManager_As() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.ExampleURL())
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	locks := lockmgr.New(pool, lockmgr.Options{})
	defer locks.Close()

	lease, err := locks.As("alice").TryAcquire(ctx, "report:7", "alice-laptop", time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Println("owner:", lease.Owner)
	fmt.Println("bob releases with alice's lease id:", errors.Is(locks.As("bob").Release(ctx, "report:7", lease.ID), lockmgr.ErrNotHolder))
	fmt.Println("alice releases:", locks.As("alice").Release(ctx, "report:7", lease.ID))
	// Output:
	// owner: alice
	// bob releases with alice's lease id: true
	// alice releases: <nil>
}
