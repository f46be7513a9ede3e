package hacluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/hacluster"
	"github.com/lockbank/lockbank/internal/history"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// startHA starts a replicated PostgreSQL for one test, or skips it when
// pg_autoctl is not installed.
func startHA(t *testing.T) *hacluster.Cluster {
	t.Helper()
	if _, err := exec.LookPath("pg_autoctl"); err != nil {
		t.Skip("needs pg_autoctl:", hacluster.ErrNotInstalled)
	}
	dir, err := os.MkdirTemp("", "hacluster-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the postgres OS user runs the servers
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	ha, err := hacluster.Start(ctx, hacluster.Options{Dir: dir, Settings: []string{"max_connections=200"}})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Logf("monitor, primary and standby up in %s", time.Since(began).Round(100*time.Millisecond))
	t.Cleanup(func() { ha.Close(); os.RemoveAll(dir) })
	return ha
}

// answers counts what bankd said to writes during a failover, by problem
// code ("" for success).
type answers struct {
	mu    sync.Mutex
	codes map[string]int
	// lastOK is when the last write succeeded.
	lastOK time.Time
}

func (a *answers) add(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	code := ""
	if err != nil {
		code = client.ErrorCode(err)
		if code == "" {
			code = "no_answer: " + err.Error()
		}
	} else {
		a.lastOK = time.Now()
	}
	a.codes[code]++
}

func (a *answers) snapshot() (map[string]int, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for k, v := range a.codes {
		out[k] = v
	}
	return out, a.lastOK
}

// TestBankdOnAMovingPrimary kills the primary under a bankd that writes
// through a multi-host URL: while there is no primary, /readyz answers 503
// and every failed write is database_unavailable or outcome_unknown (never
// a 500); writes succeed again soon after the promotion, without a
// restart; every acknowledged deposit is in the ledger exactly once (the
// unknown ones settled by retrying their key); tokens keep increasing
// across the failover; and lockmgr's listener reconnects to the new
// primary, so a waiter is woken by a release there, long before the lease
// would have run out.
func TestBankdOnAMovingPrimary(t *testing.T) {
	t.Parallel()
	ha := startHA(t)
	ctx := context.Background()
	bin, err := cluster.BuildOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var log cluster.LogBuffer
	node, err := cluster.StartNode(ctx, cluster.NodeOptions{Binary: bin, Name: "node-a", DatabaseURL: ha.URL(hacluster.Database),
		Args: []string{"--lease-ttl", "2s"}, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Stop)
	defer func() {
		if t.Failed() {
			t.Logf("bankd's log:\n%s", log.String())
		}
	}()
	const opening = 1_000_000
	acct, err := node.API.CreateAccount(ctx, "failover", opening)
	if err != nil {
		t.Fatal(err)
	}

	// A Manager on the moving primary, holding a lease that a second one
	// waits for: the release after the failover must wake the waiter.
	pool, err := pgxpool.New(ctx, ha.URL(hacluster.Database))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	holderM, waiterM := lockmgr.New(pool, lockmgr.Options{}), lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(holderM.Close)
	t.Cleanup(waiterM.Close)
	held, err := holderM.TryAcquire(ctx, "res:moving", "holder", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		l   *lockmgr.Lease
		err error
		at  time.Time
	}
	granted := make(chan grant, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		for {
			l, err := waiterM.Acquire(wctx, "res:moving", "waiter", time.Minute)
			var unavailable = errors.Is(err, lockmgr.ErrUnavailable) || errors.Is(err, lockmgr.ErrOutcomeUnknown)
			if unavailable && wctx.Err() == nil {
				continue // the failover: ask again
			}
			granted <- grant{l, err, time.Now()}
			return
		}
	}()
	// Registered: its listener holds the shared advisory lock that makes
	// releases notify (lockmgr's class 1818979687).
	wait.Until(t, 10*time.Second, "the waiter registered", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1818979687 AND mode = 'ShareLock' AND granted`).Scan(&n)
		return err == nil && n > 0
	})

	// Writers: keyed deposits, retried with their key until answered.
	ans := &answers{codes: map[string]int{}}
	var (
		stop      atomic.Bool
		acked     atomic.Int64
		wg        sync.WaitGroup
		readyDown atomic.Bool
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("w%d-%d", w, i)
				for attempt := 0; ; attempt++ {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := node.API.Deposit(cctx, acct.ID, 1, client.IdempotencyKey(key))
					cancel()
					ans.add(err)
					if err == nil {
						acked.Add(1)
						break
					}
					var refusal *client.Error
					if errors.As(err, &refusal) && refusal.Code == "database_unavailable" && stop.Load() {
						break // certainly not applied, and the run is over
					}
					time.Sleep(50 * time.Millisecond) // a client's back-off, not a wait for the server
				}
			}
		})
	}
	wg.Go(func() {
		_ = wait.Poll(ctx, 5*time.Minute, 20*time.Millisecond, func() bool {
			if err := node.API.Ready(ctx); err != nil {
				readyDown.Store(true)
			}
			return stop.Load()
		})
	})
	wait.Until(t, 10*time.Second, "writes before the failover", func() bool { return acked.Load() >= 20 })

	old, err := ha.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokenBefore := held.Token
	killed := time.Now()
	ha.Kill(old)
	next := ha.Other(old)
	if err := ha.WaitStates(ctx, time.Minute, map[string]string{next.Name: "wait_primary"}); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	ackedAtPromotion := acked.Load()
	wait.Until(t, 10*time.Second, "a write after the promotion", func() bool { return acked.Load() > ackedAtPromotion+5 })
	_, lastOK := ans.snapshot()
	t.Logf("killed %s; monitor had %s as wait_primary after %s; writes flowing again %s after that",
		old.Name, next.Name, promoted.Sub(killed).Round(10*time.Millisecond), lastOK.Sub(promoted).Round(10*time.Millisecond))
	if back := lastOK.Sub(promoted); back > 3*time.Second {
		t.Errorf("writes came back %s after the promotion; want within about a second", back)
	}

	// The holder releases on the new primary: the waiter hears of it.
	var released time.Time
	if err := wait.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() bool {
		released = time.Now()
		return holderM.Release(ctx, "res:moving", held.ID) == nil
	}); err != nil {
		t.Fatal("release on the new primary:", err)
	}
	select {
	case g := <-granted:
		if g.err != nil {
			t.Fatal("waiter:", g.err)
		}
		if d := g.at.Sub(released); d > 10*time.Second {
			t.Errorf("the waiter got the lease %s after the release: not woken by the new primary's notification", d)
		}
		if g.l.Token <= tokenBefore {
			t.Errorf("token %d after the failover, %d before: tokens went back", g.l.Token, tokenBefore)
		}
		_ = waiterM.Release(ctx, g.l.Resource, g.l.ID)
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was not granted the lease within 30s of the release (its lease lasts a minute)")
	}

	// The old primary rejoins as standby.
	if err := ha.Restart(old); err != nil {
		t.Fatal(err)
	}
	if _, err := ha.WaitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()

	codes, _ := ans.snapshot()
	t.Logf("answers by code: %v", codes)
	for code, n := range codes {
		switch code {
		case "", "database_unavailable", "outcome_unknown":
		default:
			t.Errorf("%d writes answered %q; during a failover only database_unavailable or outcome_unknown may be", n, code)
		}
	}
	if codes["database_unavailable"]+codes["outcome_unknown"] == 0 {
		t.Error("no write failed: the failover did not bite")
	}
	if !readyDown.Load() {
		t.Error("/readyz never said 503 while there was no primary")
	}
	got, err := node.API.Account(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(opening) + acked.Load(); got.Balance != want {
		t.Errorf("balance %d after %d acknowledged deposits of 1 on %d: want %d (lost or doubled)", got.Balance, acked.Load(), opening, want)
	}
	grants, bad, err := history.CheckGrants(ctx, ha.URL(hacluster.Database))
	if err != nil || len(bad) > 0 {
		t.Errorf("lease_grants (%d): %v %v", grants, bad, err)
	}
}
