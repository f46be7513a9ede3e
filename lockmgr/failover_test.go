package lockmgr_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lockbank/lockbank/lockmgr"
)

// TestTokensAboveASequenceThatWentBack: the fencing_tokens sequence is set
// back (setval), as a failover to a standby that missed the sequence's tail
// or a restore from backup would. The next takeover of a resource, and the
// next first grant of a new one, still get tokens above every token granted
// before, and the sequence is moved past them, so that the grant after needs
// no repair.
func TestTokensAboveASequenceThatWentBack(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	var newest int64
	for range 5 {
		l, err := m.TryAcquire(b.ctx, "res:failover", "before", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		newest = l.Token
		if err := m.Release(b.ctx, l.Resource, l.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.pool.Exec(b.ctx, `SELECT setval('fencing_tokens', 1)`); err != nil {
		t.Fatal(err)
	}

	takeover, err := m.TryAcquire(b.ctx, "res:failover", "after", time.Minute)
	if err != nil {
		t.Fatalf("takeover after the sequence went back: %v", err)
	}
	if takeover.Token <= newest {
		t.Fatalf("takeover got token %d; %d was granted before: a token went back", takeover.Token, newest)
	}
	first, err := m.TryAcquire(b.ctx, "res:failover-new", "after", time.Minute)
	if err != nil {
		t.Fatalf("first grant of a new resource after the sequence went back: %v", err)
	}
	if first.Token <= takeover.Token {
		t.Fatalf("first grant got token %d, not above the %d granted before", first.Token, takeover.Token)
	}
	var lastValue int64
	if err := b.pool.QueryRow(b.ctx, `SELECT last_value FROM fencing_tokens`).Scan(&lastValue); err != nil {
		t.Fatal(err)
	}
	if lastValue < first.Token {
		t.Fatalf("sequence at %d after granting %d: not repaired", lastValue, first.Token)
	}
	// Every grant is in lease_grants once, each token for one grant.
	var grants, distinct int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*), count(DISTINCT token) FROM lease_grants`).Scan(&grants, &distinct); err != nil {
		t.Fatal(err)
	}
	if grants != 7 || distinct != 7 {
		t.Fatalf("lease_grants: %d grants, %d distinct tokens; want 7 and 7", grants, distinct)
	}
}

// TestGrantCommitsSynchronously: a grant's transaction commits with
// synchronous_commit on even when the session has it off (as the test
// server has), so that its token is on the synchronous standby before the
// holder hears of it; the session's own setting is back after the commit.
func TestGrantCommitsSynchronously(t *testing.T) {
	t.Parallel()
	_, b := setup(t)
	conn, err := b.pool.Acquire(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	show := func() string {
		t.Helper()
		var s string
		if err := conn.QueryRow(b.ctx, `SHOW synchronous_commit`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := conn.Exec(b.ctx, `SET synchronous_commit = off`); err != nil {
		t.Fatal(err)
	}
	for _, resource := range []string{"res:sync", "res:sync"} { // a first grant, then a takeover
		tx, err := conn.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var granted bool
		if err := tx.QueryRow(b.ctx, `SELECT granted FROM lockmgr_try_acquire($1, 'a', gen_random_uuid(), 60000, NULL)`, resource).Scan(&granted); err != nil || !granted {
			t.Fatalf("grant: %v, %v", granted, err)
		}
		if s := show(); s != "on" {
			t.Fatalf("synchronous_commit in the grant's transaction: %q, want on", s)
		}
		if err := tx.Commit(b.ctx); err != nil {
			t.Fatal(err)
		}
		if s := show(); s != "off" {
			t.Fatalf("synchronous_commit after the grant's commit: %q, want the session's off", s)
		}
		if _, err := conn.Exec(b.ctx, `UPDATE leases SET expires_at = clock_timestamp() WHERE resource = $1`, resource); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGuardQuietUnderConcurrentGrants: many grants of distinct resources at
// once, where a later draw often commits first. The token guard must not
// take that for a sequence that went back: every grant succeeds, every
// token is granted once, and the sequence was never moved on (a repair
// jumps it a thousand ahead).
func TestGuardQuietUnderConcurrentGrants(t *testing.T) {
	t.Parallel()
	const workers, rounds = 8, 150
	ms, b := managers(t, workers)
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			resource := fmt.Sprintf("res:quiet-%d", w)
			for range rounds {
				l, err := ms[w].TryAcquire(b.ctx, resource, "w", time.Minute)
				if err == nil {
					err = ms[w].Release(b.ctx, resource, l.ID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a grant failed: %v", err)
	}
	var grants, distinct, lastValue int64
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*), count(DISTINCT token), (SELECT last_value FROM fencing_tokens) FROM lease_grants`).Scan(&grants, &distinct, &lastValue); err != nil {
		t.Fatal(err)
	}
	if grants != workers*rounds || distinct != grants {
		t.Fatalf("%d grants, %d distinct tokens; want %d of each", grants, distinct, workers*rounds)
	}
	if lastValue > grants+100 {
		t.Fatalf("the sequence is at %d after %d grants: the guard repaired a sequence that never went back", lastValue, grants)
	}
}

// TestGrantDrawsAgainWhenItsTokenWasTaken: after the sequence went back, two
// grants can draw the same token before either commits (neither sees the
// other's in the guard's floor); lease_grants' key refuses the second, which
// then draws again rather than failing. The first is played here by a
// transaction that records the next token and commits once the grant waits
// on it.
func TestGrantDrawsAgainWhenItsTokenWasTaken(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	mustAcquire(t, m, "res:drawn", "before", time.Minute)
	var next int64
	if err := b.pool.QueryRow(b.ctx, `SELECT last_value + 1 FROM fencing_tokens`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	rival, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rival.Rollback(b.ctx) }()
	if _, err := rival.Exec(b.ctx, `INSERT INTO lease_grants (token, resource, holder, granted_at) VALUES ($1, 'res:rival', 'rival', now())`, next); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		l   *lockmgr.Lease
		err error
	}
	got := make(chan answer, 1)
	go func() {
		l, err := m.TryAcquire(b.ctx, "res:drawing", "after", time.Minute)
		got <- answer{l, err}
	}()
	eventually(t, "the grant waiting on the rival's token", func() bool {
		var waiting bool
		err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%lockmgr_try_acquire%')`).Scan(&waiting)
		return err == nil && waiting
	})
	if err := rival.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil || a.l.Token <= next {
		t.Fatalf("grant after its token %d was taken: %+v, %v; want a token above it", next, a.l, a.err)
	}
}
