package account_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// node is one bankd node of a test cluster: its own pool (its own sessions,
// named after it in pg_stat_activity), its own lock manager and Service —
// so that what the nodes share is only the database, as in production, and
// their row locks and leases are really fought over in PostgreSQL, not
// settled by one Service's queue.
type node struct {
	name  string
	svc   *account.Service
	pool  *pgxpool.Pool
	locks *lockmgr.Manager
}

// cluster starts n nodes on one fresh database. The bundle's pool is an
// observer's: it belongs to no node.
func cluster(t *testing.T, n int, opts account.Options) ([]node, bundle) {
	t.Helper()
	url := pgtest.URL(t)
	b := bundle{pool: pgtest.Pool(t, url, "observer"), ctx: context.Background()}
	b.locks = lockmgr.New(b.pool, lockmgr.Options{})
	t.Cleanup(b.locks.Close)
	nodes := make([]node, n)
	for i := range nodes {
		name := fmt.Sprintf("node-%d", i)
		pool := pgtest.Pool(t, url, name)
		locks := lockmgr.New(pool, lockmgr.Options{})
		t.Cleanup(locks.Close)
		o := opts
		o.Locks, o.Node = locks, name
		nodes[i] = node{name: name, svc: account.NewService(pool, o), pool: pool, locks: locks}
	}
	return nodes, b
}

// holdRow locks account id's row in a transaction of the observer until the
// returned release is called (or the test ends), as a writer that is slow
// to commit would.
func holdRow(t *testing.T, b bundle, id int64) (release func()) {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(b.ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := tx.Commit(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// holdLease takes account id's lease for the observer until the returned
// release is called (or the test ends).
func holdLease(t *testing.T, b bundle, id int64) (release func()) {
	t.Helper()
	l, err := b.locks.TryAcquire(b.ctx, account.LeaseResource(id), "observer", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup releases a lease the test did not; by then a newer grant may
	// have superseded it, which Release rightly refuses.
	t.Cleanup(func() { _ = b.locks.Release(context.Background(), l.Resource, l.ID) })
	return func() {
		if err := b.locks.Release(b.ctx, l.Resource, l.ID); err != nil {
			t.Fatal(err)
		}
	}
}

// waitForLockWaits waits until every node has a session waiting for a lock
// in PostgreSQL: proof that the nodes are contending in the database.
func waitForLockWaits(t *testing.T, b bundle, nodes []node) {
	t.Helper()
	var names []string
	for _, n := range nodes {
		names = append(names, n.name)
	}
	wait.Until(t, 20*time.Second, fmt.Sprintf("a session of each of %v waiting for a lock", names), func() bool {
		var waiting int
		err := b.pool.QueryRow(b.ctx, `SELECT count(DISTINCT application_name) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = ANY($1)`, names).Scan(&waiting)
		return err == nil && waiting == len(names)
	})
}

// waitForLeaseWaiters waits until every node's lock manager is registered in
// the database as waiting for resource (lockmgr holds a shared advisory lock
// on its listening session while its callers wait): the nodes queue for the
// lease in PostgreSQL, not in one process.
func waitForLeaseWaiters(t *testing.T, b bundle, resource string, nodes []node) {
	t.Helper()
	var names []string
	for _, n := range nodes {
		names = append(names, n.name)
	}
	wait.Until(t, 20*time.Second, fmt.Sprintf("each of %v registered as waiting for %s", names, resource), func() bool {
		var waiting int
		err := b.pool.QueryRow(b.ctx, `SELECT count(DISTINCT a.application_name)
			FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE l.locktype = 'advisory' AND l.granted AND l.objid::int = hashtext($1)
			  AND a.datname = current_database() AND a.application_name = ANY($2)`, resource, names).Scan(&waiting)
		return err == nil && waiting == len(names)
	})
}

// leaseHolders returns who held the leases whose tokens are on account id's
// ledger entries, in ledger order.
func leaseHolders(t *testing.T, b bundle, id int64) []string {
	t.Helper()
	rows, _ := b.pool.Query(b.ctx, `SELECT g.holder FROM ledger_entries e JOIN lease_grants g ON g.token = e.fence_token
		WHERE e.account_id = $1 ORDER BY e.id`, id)
	holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return holders
}

// raceWithdrawals releases n goroutines at once through a barrier, each doing
// c on the nodes in turn, then runs released (if any) while they are under
// way, and counts outcomes by error code ("" for success).
func raceWithdrawals(t *testing.T, nodes []node, n int, c account.Change, released func()) map[string]int {
	t.Helper()
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := nodes[i%len(nodes)].svc.Withdraw(context.Background(), c)
			code := account.ErrorCode(err)
			if err != nil && code == "" {
				t.Errorf("Withdraw: unexpected error %v", err)
				code = "internal"
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	close(start)
	if released != nil {
		released()
	}
	wg.Wait()
	return codes
}
