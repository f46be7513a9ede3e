package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/lockmgr"
)

// age moves resource's lease row and its grants back by d, as if all of it
// had happened that long ago (by the database's clock), without waiting.
func age(t *testing.T, b bundle, resource string, d time.Duration) {
	t.Helper()
	ms := d.Milliseconds()
	if _, err := b.pool.Exec(b.ctx, `UPDATE leases SET acquired_at = acquired_at - $2 * interval '1 millisecond',
		expires_at = expires_at - $2 * interval '1 millisecond' WHERE resource = $1`, resource, ms); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(b.ctx, `UPDATE lease_grants SET granted_at = granted_at - $2 * interval '1 millisecond'
		WHERE resource = $1`, resource, ms); err != nil {
		t.Fatal(err)
	}
}

// tableContents lists the resources in leases and the tokens in lease_grants.
func tableContents(t *testing.T, b bundle) (resources []string, tokens []int64) {
	t.Helper()
	rows, _ := b.pool.Query(b.ctx, `SELECT resource FROM leases ORDER BY resource`)
	resources, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = b.pool.Query(b.ctx, `SELECT token FROM lease_grants ORDER BY token`)
	tokens, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return resources, tokens
}

// TestPruneDeletesOnlyWhatOutlivedRetention: lease rows that ran out longer
// ago than the retention go, unless kept by prefix; a live lease, or one that
// ran out within the retention, stays whatever its age. Grants older than
// the retention go, but never a resource's newest. The next grant of a
// pruned resource gets a token above every earlier one.
func TestPruneDeletesOnlyWhatOutlivedRetention(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const retention = time.Hour
	cycle := func(resource string) *lockmgr.Lease {
		t.Helper()
		l := mustAcquire(t, m, resource, "node-a", time.Minute)
		if err := m.Release(b.ctx, resource, l.ID); err != nil {
			t.Fatal(err)
		}
		return l
	}
	old := cycle("job:old")
	age(t, b, "job:old", retention+time.Minute)
	recent := cycle("job:recent")
	age(t, b, "job:recent", retention-time.Minute)
	live := mustAcquire(t, m, "job:live", "node-a", time.Minute)
	age(t, b, "job:live", 2*retention) // granted long ago, renewed since: its expiry is still ahead
	if _, err := b.pool.Exec(b.ctx, `UPDATE leases SET expires_at = now() + interval '1 minute' WHERE resource = 'job:live'`); err != nil {
		t.Fatal(err)
	}
	cycle("job:superseded")
	newest := mustAcquire(t, m, "job:superseded", "node-b", time.Minute)
	age(t, b, "job:superseded", 2*retention)
	if _, err := b.pool.Exec(b.ctx, `UPDATE leases SET expires_at = now() + interval '1 minute' WHERE resource = 'job:superseded'`); err != nil {
		t.Fatal(err)
	}
	kept := cycle("account:7")
	age(t, b, "account:7", 2*retention)

	p, err := m.Prune(b.ctx, retention, "account:")
	if err != nil || p != (lockmgr.Pruned{Leases: 1, Grants: 2}) {
		t.Fatalf("Prune = %+v, %v; want job:old's row and grant, and job:superseded's first grant", p, err)
	}
	resources, tokens := tableContents(t, b)
	wantResources := []string{"account:7", "job:live", "job:recent", "job:superseded"}
	wantTokens := []int64{recent.Token, live.Token, newest.Token, kept.Token}
	slices.Sort(wantTokens)
	if !slices.Equal(resources, wantResources) || !slices.Equal(tokens, wantTokens) {
		t.Fatalf("left: leases %v, grants %v; want %v and %v", resources, tokens, wantResources, wantTokens)
	}
	if p, err := m.Prune(b.ctx, retention, "account:"); err != nil || p != (lockmgr.Pruned{}) {
		t.Fatalf("a second Prune = %+v, %v; want nothing left to delete", p, err)
	}

	if _, err := m.Get(b.ctx, "job:old"); !errors.Is(err, lockmgr.ErrNotFound) {
		t.Fatalf("Get of a pruned resource = %v, want ErrNotFound", err)
	}
	if err := m.Release(b.ctx, "job:old", old.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("Release of a pruned lease = %v, want ErrNotHolder", err)
	}
	again := mustAcquire(t, m, "job:old", "node-c", time.Minute)
	if again.Token <= slices.Max(tokens) || again.Token <= old.Token {
		t.Fatalf("the pruned resource's next token %d; want it above every earlier token (%d, %v)", again.Token, old.Token, tokens)
	}
	if _, err := m.Prune(b.ctx, -time.Second); !errors.Is(err, lockmgr.ErrInvalid) {
		t.Fatalf("Prune with a negative retention = %v, want ErrInvalid", err)
	}
}

// TestPrunedStaleTokenIsRefusedByTheFence: a stale token is refused however
// much of its history was pruned — its grant, the resource's lease row, or
// both and then a new grant — and the newest live token is still accepted.
// Pruning turns "stale" into "never issued", never into "accepted".
func TestPrunedStaleTokenIsRefusedByTheFence(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const resource = "job:fence"
	check := func(token int64) error {
		t.Helper()
		var fenceErr error
		if err := pgx.BeginFunc(b.ctx, b.pool, func(tx pgx.Tx) error {
			fenceErr = lockmgr.CheckFence(b.ctx, tx, resource, token)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return fenceErr
	}
	first := mustAcquire(t, m, resource, "node-a", time.Minute)
	if err := m.Release(b.ctx, resource, first.ID); err != nil {
		t.Fatal(err)
	}
	second := mustAcquire(t, m, resource, "node-b", time.Minute)
	if err := check(first.Token); !errors.Is(err, lockmgr.ErrStaleToken) {
		t.Fatalf("stale token before pruning: %v, want ErrStaleToken", err)
	}

	age(t, b, resource, 2*time.Hour)
	if _, err := b.pool.Exec(b.ctx, `UPDATE leases SET expires_at = now() + interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	if p, err := m.Prune(b.ctx, time.Hour); err != nil || p != (lockmgr.Pruned{Grants: 1}) {
		t.Fatalf("Prune = %+v, %v; want the first grant", p, err)
	}
	if err := check(first.Token); !errors.Is(err, lockmgr.ErrTokenMismatch) {
		t.Fatalf("stale token, grant pruned: %v, want ErrTokenMismatch", err)
	}
	if err := check(second.Token); err != nil {
		t.Fatalf("the newest live token, its grant kept: %v", err)
	}

	if err := m.Release(b.ctx, resource, second.ID); err != nil {
		t.Fatal(err)
	}
	age(t, b, resource, 2*time.Hour)
	if p, err := m.Prune(b.ctx, time.Hour); err != nil || p != (lockmgr.Pruned{Leases: 1, Grants: 1}) {
		t.Fatalf("Prune = %+v, %v; want the lease row and its grant", p, err)
	}
	for _, token := range []int64{first.Token, second.Token} {
		if err := check(token); !errors.Is(err, lockmgr.ErrTokenMismatch) {
			t.Fatalf("token %d, lease row pruned: %v, want ErrTokenMismatch", token, err)
		}
	}

	third := mustAcquire(t, m, resource, "node-c", time.Minute)
	if third.Token <= second.Token {
		t.Fatalf("token %d after pruning, %d before: tokens must never be reused", third.Token, second.Token)
	}
	for _, token := range []int64{first.Token, second.Token} {
		if err := check(token); !errors.Is(err, lockmgr.ErrTokenMismatch) {
			t.Fatalf("token %d after a new grant: %v, want ErrTokenMismatch", token, err)
		}
	}
	if err := check(third.Token); err != nil {
		t.Fatalf("the new grant's token: %v", err)
	}
}

// TestPruneRacingAcquiresKeepsTokensIncreasing: acquirers on four Managers,
// released together, take turns on one resource while pruners with no
// retention at all delete its row every time it is released. In the order
// they held the lock, the tokens strictly increase, and no two ever held it
// at once.
func TestPruneRacingAcquiresKeepsTokensIncreasing(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	const (
		resource                     = "job:race"
		managers, perManager, rounds = 4, 8, 20
	)
	var ms []*lockmgr.Manager
	for range managers {
		m := lockmgr.New(b.pool, lockmgr.Options{})
		t.Cleanup(m.Close)
		ms = append(ms, m)
	}
	start := make(chan struct{})
	acquirersDone := make(chan struct{})
	var (
		acquirers, pruners sync.WaitGroup
		mu                 sync.Mutex
		order              []int64
		counter            atomic.Int64 // Load+Store is not an increment: an overlap of holders loses one
		pruned             atomic.Int64
	)
	for i := range managers * perManager {
		m := ms[i%managers]
		acquirers.Go(func() {
			<-start
			for range rounds {
				ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
				l, err := m.Acquire(ctx, resource, fmt.Sprintf("w%d", i), 5*time.Second)
				cancel()
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				mu.Lock()
				order = append(order, l.Token)
				mu.Unlock()
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				if err := m.Release(b.ctx, resource, l.ID); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	for range 2 {
		pruners.Go(func() {
			<-start
			for {
				select {
				case <-acquirersDone:
					return
				default:
				}
				p, err := ms[0].Prune(b.ctx, 0)
				if err != nil {
					t.Errorf("Prune: %v", err)
					return
				}
				pruned.Add(p.Leases)
			}
		})
	}
	close(start)
	acquirers.Wait()
	close(acquirersDone)
	pruners.Wait()
	if got := counter.Load(); got != managers*perManager*rounds {
		t.Fatalf("counter = %d, want %d: two holders overlapped", got, managers*perManager*rounds)
	}
	checkGrants(t, order, managers*perManager*rounds)
	if pruned.Load() == 0 {
		t.Fatal("the pruners never deleted the lease row: the race was not run")
	}
	t.Logf("%d grants; the lease row was pruned %d times between them", len(order), pruned.Load())
}

// TestFirstGrantAfterPruneDrawsANewerToken is the race of the test above,
// made to happen every time: a first grant ("slow") is stopped inside its
// INSERT, before the check for a conflicting row, while another ("fast") is
// granted, released, and its row pruned. When slow goes on there is no row
// to conflict with: its token must still be above fast's, so it must be
// drawn after that wait, not before.
func TestFirstGrantAfterPruneDrawsANewerToken(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const resource, gateKey = "job:gap", 4242
	if _, err := b.pool.Exec(b.ctx, `
		CREATE FUNCTION stall_slow() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.holder = 'slow' THEN
				PERFORM pg_advisory_lock(4242);
				PERFORM pg_advisory_unlock(4242);
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER stall_slow BEFORE INSERT ON leases FOR EACH ROW EXECUTE FUNCTION stall_slow()`); err != nil {
		t.Fatal(err)
	}
	gate, err := pgx.Connect(b.ctx, b.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gate.Close(context.Background()) })
	if _, err := gate.Exec(b.ctx, `SELECT pg_advisory_lock($1)`, gateKey); err != nil {
		t.Fatal(err)
	}

	type grant struct {
		l   *lockmgr.Lease
		err error
	}
	slow := make(chan grant, 1)
	go func() {
		l, err := m.TryAcquire(b.ctx, resource, "slow", time.Minute)
		slow <- grant{l, err}
	}()
	eventually(t, "the slow grant to wait inside its INSERT", func() bool {
		var waiting bool
		err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%lockmgr_try_acquire%')`).Scan(&waiting)
		return err == nil && waiting
	})
	fast := mustAcquire(t, m, resource, "fast", time.Minute)
	if err := m.Release(b.ctx, resource, fast.ID); err != nil {
		t.Fatal(err)
	}
	if p, err := m.Prune(b.ctx, 0); err != nil || p.Leases != 1 {
		t.Fatalf("Prune = %+v, %v; want fast's lease row deleted", p, err)
	}
	if _, err := gate.Exec(b.ctx, `SELECT pg_advisory_unlock($1)`, gateKey); err != nil {
		t.Fatal(err)
	}
	g := <-slow
	if g.err != nil {
		t.Fatalf("the slow grant: %v", g.err)
	}
	if g.l.Token <= fast.Token {
		t.Fatalf("the slow grant got token %d after fast's %d: tokens must strictly increase", g.l.Token, fast.Token)
	}
}
