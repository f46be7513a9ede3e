package live

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// TestTriggers: what commits writes its event (migration 00008), with the
// tokens the timeline shows: a first grant, a renewal, a release, a grant
// after the release, a takeover of a lease that ran out (old and new
// token), an account's opening, and a batch of ledger entries written by
// one transaction; and a lease for one statement (00009), a grant and a
// release in one update.
func TestTriggers(t *testing.T) {
	t.Parallel()
	pool := eventsPool(t)
	ctx := context.Background()
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	l := New(pool, Options{})

	first, err := locks.TryAcquire(ctx, "r:1", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locks.Renew(ctx, "r:1", first.ID, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := locks.Release(ctx, "r:1", first.ID); err != nil {
		t.Fatal(err)
	}
	second, err := locks.TryAcquire(ctx, "r:1", "node-b", lockmgr.MinTTL)
	if err != nil {
		t.Fatal(err)
	}
	var third *lockmgr.Lease
	wait.Until(t, 5*time.Second, "a takeover of the lease that ran out", func() bool {
		third, err = locks.TryAcquire(ctx, "r:1", "node-c", time.Minute)
		return err == nil
	})
	if err := locks.Release(ctx, "r:1", third.ID); err != nil {
		t.Fatal(err)
	}
	fourth := grantForOneStatement(t, pool, locks, "r:1", "node-d")
	var id int64
	if err := pool.QueryRow(ctx, `INSERT INTO accounts (owner, balance, opening_balance) VALUES ('<i>x</i>', 10, 10) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy, fence_token)
		VALUES ($1, 'deposit', 5, 15, 'row', NULL), ($1, 'withdrawal', 3, 12, 'lease', 7)`, id); err != nil {
		t.Fatal(err)
	}

	events, err := l.read(ctx, 0, 1<<62, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		got = append(got, describe(e))
	}
	want := []string{
		fmt.Sprintf("grant r:1 node-a token %d", first.Token),
		fmt.Sprintf("renewal r:1 node-a token %d", first.Token),
		fmt.Sprintf("release r:1 node-a token %d", first.Token),
		fmt.Sprintf("grant r:1 node-b token %d after %d", second.Token, first.Token),
		fmt.Sprintf("takeover r:1 node-c token %d after %d", third.Token, second.Token),
		fmt.Sprintf("release r:1 node-c token %d", third.Token),
		fmt.Sprintf("grant r:1 node-d token %d after %d", fourth, third.Token),
		fmt.Sprintf("release r:1 node-d token %d", fourth),
		fmt.Sprintf("open account:%d <i>x</i> balance 10", id),
		fmt.Sprintf("deposit account:%d 5 row balance 15 batch 2", id),
		fmt.Sprintf("withdrawal account:%d 3 lease token 7 balance 12 batch 2", id),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events:\n%q\nwant:\n%q", got, want)
	}
}

// TestNoEventsWithoutTheSetting: a session that did not ask for live events
// (a node with its page off, a lockmgr library user, psql) opens an
// account, writes ledger entries and grants, renews, releases and takes
// over a lease, grants a lease for one statement, and live_events stays empty: the triggers are off for it,
// so it does not pay for them.
func TestNoEventsWithoutTheSetting(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	ctx := context.Background()
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	first, err := locks.TryAcquire(ctx, "r:1", "node-a", lockmgr.MinTTL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := locks.Renew(ctx, "r:1", first.ID, lockmgr.MinTTL); err != nil {
		t.Fatal(err)
	}
	var third *lockmgr.Lease
	wait.Until(t, 5*time.Second, "a takeover of the lease that ran out", func() bool {
		third, err = locks.TryAcquire(ctx, "r:1", "node-b", time.Minute)
		return err == nil
	})
	if err := locks.Release(ctx, "r:1", third.ID); err != nil {
		t.Fatal(err)
	}
	grantForOneStatement(t, pool, locks, "r:1", "node-d")
	var id int64
	if err := pool.QueryRow(ctx, `INSERT INTO accounts (owner, balance, opening_balance) VALUES ('x', 10, 10) RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy)
		VALUES ($1, 'deposit', 5, 15, 'row')`, id); err != nil {
		t.Fatal(err)
	}
	var events int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM live_events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != 0 {
		t.Fatalf("%d live events from a session without %s; want none", events, EventsSetting)
	}
}

// eventsPool is a pool on a new test database whose sessions write live
// events, as a bankd with its page on does.
func eventsPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	return pgtest.Configured(t, pgtest.URL(t), func(cfg *pgxpool.Config) { WriteEvents(cfg.ConnConfig) })
}

func describe(e Event) string {
	s := e.Kind + " " + deref(e.Resource)
	switch e.Kind {
	case "grant", "renewal", "release", "takeover":
		s += fmt.Sprintf(" %s token %d", deref(e.Holder), *e.Token)
		if e.OldToken != nil {
			s += fmt.Sprintf(" after %d", *e.OldToken)
		}
	case "open":
		s += fmt.Sprintf(" %s balance %d", deref(e.Detail), *e.Balance)
	default:
		s += fmt.Sprintf(" %d %s", *e.Amount, deref(e.Strategy))
		if e.Token != nil {
			s += fmt.Sprintf(" token %d", *e.Token)
		}
		s += fmt.Sprintf(" balance %d batch %d", *e.Balance, e.Batch)
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// grantForOneStatement grants resource to holder for one statement
// (lockmgr_grant_released), and returns its token.
func grantForOneStatement(t *testing.T, pool *pgxpool.Pool, locks *lockmgr.Manager, resource, holder string) int64 {
	t.Helper()
	g, err := locks.GrantInStatement(resource, holder, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var token int64
	if err := pool.QueryRow(context.Background(), `SELECT lockmgr_grant_released($1, $2, $3, $4)`, g.Args()...).Scan(&token); err != nil {
		t.Fatal(err)
	}
	return token
}
