package lockmgr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/lockmgr"
)

// grantInStatement runs a statement of its own around a lease for one
// statement, as a caller would write it, and returns its token (0: NULL,
// nothing granted). q runs it: a pool, or a transaction left open.
func grantInStatement(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, g *lockmgr.StatementGrant) int64 {
	t.Helper()
	var token *int64
	if err := q.QueryRow(ctx, `SELECT lockmgr_grant_released($1, $2, $3, $4)`, g.Args()...).Scan(&token); err != nil {
		t.Fatalf("lockmgr_grant_released: %v", err)
	}
	if token == nil {
		return 0
	}
	return *token
}

// TestGrantInStatement: a first grant, a takeover of a released lease and of
// one that ran out each draw a higher token, are recorded in lease_grants,
// and leave the lease released; a live lease is never taken (NULL, the row
// untouched). Committed counts a grant and a release.
func TestGrantInStatement(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	if _, err := m.GrantInStatement("no spaces", "a", time.Second); !errors.Is(err, lockmgr.ErrInvalid) {
		t.Fatalf("invalid resource: %v, want ErrInvalid", err)
	}
	g, err := m.GrantInStatement("res:stmt", "node-a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	check := func(what string, token int64) {
		t.Helper()
		if token <= last {
			t.Fatalf("%s: token %d, not above the %d granted before", what, token, last)
		}
		last = token
		st, err := m.Get(b.ctx, "res:stmt")
		if err != nil || st.Held || st.Token != token || st.Holder != "node-a" {
			t.Fatalf("%s: lease %+v (%v); want token %d's, released", what, st, err, token)
		}
		var recorded bool
		if err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM lease_grants WHERE token = $1 AND resource = 'res:stmt')`, token).Scan(&recorded); err != nil || !recorded {
			t.Fatalf("%s: token %d in lease_grants: %v (%v)", what, token, recorded, err)
		}
		g.Committed(token)
	}
	check("first grant", grantInStatement(t, b.ctx, b.pool, g))
	check("after a lease for one statement", grantInStatement(t, b.ctx, b.pool, g))
	l := mustAcquire(t, m, "res:stmt", "node-b", time.Minute)
	last = l.Token
	if token := grantInStatement(t, b.ctx, b.pool, g); token != 0 {
		t.Fatalf("granted token %d over node-b's live lease", token)
	}
	if st, err := m.Get(b.ctx, "res:stmt"); err != nil || !st.Held || st.Holder != "node-b" || st.Token != l.Token {
		t.Fatalf("node-b's lease after a refused grant: %+v (%v)", st, err)
	}
	expire(t, b, "res:stmt")
	check("takeover of a lease that ran out", grantInStatement(t, b.ctx, b.pool, g))
	if err := m.Release(b.ctx, "res:stmt", l.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("node-b's release after the takeover: %v, want ErrNotHolder", err)
	}
	if st, _ := m.Get(b.ctx, "res:stmt"); st.Token != last {
		t.Fatalf("node-b's late release moved the lease to %+v", st)
	}
	// Three grants counted by Committed, plus node-b's by TryAcquire.
	if got := count(t, reg, "lockbank_lock_grants_total", "result", "acquired"); got != 4 {
		t.Fatalf("grants acquired: %v, want 4", got)
	}
	if got := count(t, reg, "lockbank_lock_releases_total", "result", "released"); got != 3 {
		t.Fatalf("releases released: %v, want 3", got)
	}
	if got := count(t, reg, "lockbank_lock_releases_total", "result", "not_holder"); got != 1 {
		t.Fatalf("releases not_holder: %v, want node-b's 1", got)
	}
}

// TestGrantInStatementExcludesUntilCommit: until the caller's transaction
// commits, its lease's row stays locked, though it reads as released: a
// rival's grant waits for the commit and then gets a higher token.
func TestGrantInStatementExcludesUntilCommit(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 2)
	g, err := ms[0].GrantInStatement("res:open", "node-a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(b.ctx) }()
	token := grantInStatement(t, b.ctx, tx, g)
	if token == 0 {
		t.Fatal("nothing granted")
	}
	got := make(chan *lockmgr.Lease, 1)
	go func() {
		l, err := ms[1].TryAcquire(b.ctx, "res:open", "node-b", time.Minute)
		if err != nil {
			t.Errorf("node-b's TryAcquire: %v", err)
		}
		got <- l
	}()
	eventually(t, "node-b's grant waiting for the lease row's lock", func() bool {
		var waiting bool
		err := b.pool.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%lockmgr_try_acquire%')`).Scan(&waiting)
		return err == nil && waiting
	})
	select {
	case l := <-got:
		t.Fatalf("node-b granted %+v while node-a's statement had not committed", l)
	default:
	}
	if err := tx.Commit(b.ctx); err != nil {
		t.Fatal(err)
	}
	if l := <-got; l == nil || l.Token <= token {
		t.Fatalf("node-b after the commit: %+v; want a token above %d", l, token)
	}
}

// TestGrantInStatementAboveASequenceThatWentBack: the token guard of every
// grant (lockmgr_next_token) holds for a lease for one statement too.
func TestGrantInStatementAboveASequenceThatWentBack(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	g, err := m.GrantInStatement("res:went-back", "node-a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var newest int64
	for range 3 {
		newest = grantInStatement(t, b.ctx, b.pool, g)
	}
	if _, err := b.pool.Exec(b.ctx, `SELECT setval('fencing_tokens', 1)`); err != nil {
		t.Fatal(err)
	}
	if token := grantInStatement(t, b.ctx, b.pool, g); token <= newest {
		t.Fatalf("token %d after the sequence went back; %d was granted before", token, newest)
	}
}

// TestGrantInStatementCommitsSynchronously: the token is drawn in a
// transaction that commits synchronously, whatever the session says.
func TestGrantInStatementCommitsSynchronously(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	g, err := m.GrantInStatement("res:sync-stmt", "node-a", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := b.pool.Acquire(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(b.ctx, `SET synchronous_commit = off`); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a first grant, then a takeover
		tx, err := conn.Begin(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		grantInStatement(t, b.ctx, tx, g)
		var s string
		if err := tx.QueryRow(b.ctx, `SHOW synchronous_commit`).Scan(&s); err != nil || s != "on" {
			t.Fatalf("synchronous_commit in the grant's transaction: %q (%v), want on", s, err)
		}
		if err := tx.Commit(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGrantInStatementWakesAWaiter: a lease for one statement ends at its
// commit, and another Manager's waiter is told then, as by a release — not
// left asleep until the expiry it last saw.
func TestGrantInStatementWakesAWaiter(t *testing.T) {
	t.Parallel()
	ms, b := managers(t, 2)
	// The lease's end is made silent (expire): should the waiter's own try
	// after registering come later than that, it takes the lease itself and
	// the round tells nothing; then another round, on another resource.
	for round := range 5 {
		resource := fmt.Sprintf("res:wake%d", round)
		mustAcquire(t, ms[0], resource, "node-a", time.Minute)
		got := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
			defer cancel()
			_, err := ms[1].Acquire(ctx, resource, "node-b", time.Second)
			got <- err
		}()
		waitForWaiters(t, b, resource, 1)
		// node-a's lease ends without a word (as if it ran out): the waiter
		// still believes in its minute. Then a lease for one statement.
		expire(t, b, resource)
		g, err := ms[0].GrantInStatement(resource, "node-a", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if grantInStatement(t, b.ctx, b.pool, g) == 0 {
			if err := <-got; err != nil {
				t.Fatalf("node-b's Acquire: %v", err)
			}
			continue // node-b asked after the expiry, and took the lease
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("node-b's Acquire: %v", err)
			}
			return
		case <-time.After(5 * time.Second):
			t.Fatal("node-b still waiting 5 s after the lease for one statement ended")
		}
	}
	t.Fatal("in every round node-b took the lease before the lease for one statement")
}
