package main

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
)

// bankdBinary builds bankd once per test run, for tests that need it as a
// real process: one that can be frozen with SIGSTOP and killed with SIGKILL.
func bankdBinary(t *testing.T) string {
	t.Helper()
	bin, err := cluster.BuildOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startProcess runs bankd as a child process in demo mode, with args, until
// the test ends (internal/cluster: the one way to start bankd as a process).
func startProcess(t *testing.T, node, databaseURL string, args ...string) *cluster.Node {
	t.Helper()
	logs := &cluster.LogBuffer{}
	n, err := cluster.StartNode(context.Background(), cluster.NodeOptions{Binary: bankdBinary(t), Name: node, DatabaseURL: databaseURL,
		Args: append([]string{"--unsafe-demo"}, args...), Log: logs,
		Transport: func(base http.RoundTripper) http.RoundTripper { return contract.Transport(t, base) }})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("%s log:\n%s", node, logs)
		}
	})
	return n
}

// fault freezes (SIGSTOP), resumes (SIGCONT) or kills (SIGKILL) a node.
func fault(t *testing.T, do func(context.Context) error) {
	t.Helper()
	if err := do(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// twoNodesOneAccount starts node-a and node-b as processes on a fresh
// database, with their extra flags, and opens an account of 5000 on node-a.
func twoNodesOneAccount(t *testing.T, argsA, argsB []string) (db string, nodeA, nodeB *cluster.Node, acct client.Account) {
	t.Helper()
	db = pgtest.URL(t)
	nodeA = startProcess(t, "node-a", db, argsA...)
	nodeB = startProcess(t, "node-b", db, argsB...)
	return db, nodeA, nodeB, createAccount(t, nodeA.API, "alice", 5000)
}

// waitForHolder waits until node sees holder holding the account's lease.
func waitForHolder(t *testing.T, node *cluster.Node, accountID int64, holder string) client.LockStatus {
	t.Helper()
	lock, err := node.WaitHolder(context.Background(), account.LeaseResource(accountID), holder, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return lock
}

// TestPausedNodeIsFenced is the seed's paused node with a real pause: node-a
// takes the account's lease for a withdrawal and is frozen with SIGSTOP
// before it writes; its lease runs out; node-b takes over and withdraws;
// node-a is resumed with SIGCONT and its write is rejected by the fence.
// With lease-nofence, the same pause overwrites node-b's withdrawal.
func TestPausedNodeIsFenced(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		strategy   string
		wantStatus int
		wantCode   string
	}{
		{"lease", 409, "stale_fencing_token"},
		{"lease-nofence", 201, ""},
	} {
		t.Run(tt.strategy, func(t *testing.T) {
			t.Parallel()
			_, nodeA, nodeB, acct := twoNodesOneAccount(t, []string{"--lease-ttl", "1s"}, []string{"--lease-ttl", "5s", "--lease-wait", "10s"})

			lateA := withdrawAsync(nodeA.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: tt.strategy, Hold: 800 * time.Millisecond})
			waitForHolder(t, nodeB, acct.ID, "node-a")
			time.Sleep(200 * time.Millisecond) // node-a has read the balance and is holding before its write
			fault(t, nodeA.Freeze)
			frozen := time.Now()

			b := withdraw(nodeB.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: tt.strategy})
			if b.status != 201 {
				t.Fatalf("node-b: %d %v", b.status, b.err)
			}
			if waited := time.Since(frozen); waited > 5*time.Second {
				t.Fatalf("node-b waited %s for a 1s lease", waited)
			}
			fault(t, nodeA.Resume)
			a := <-lateA
			if a.status != tt.wantStatus || (tt.wantCode != "" && a.code != tt.wantCode) {
				t.Fatalf("node-a after the pause: %d %v, want %d %s", a.status, a.err, tt.wantStatus, tt.wantCode)
			}

			balance := getAccount(t, nodeB.API, acct.ID).Balance
			entries := ledger(t, nodeB.API, acct.ID)
			if tt.wantCode != "" {
				if balance != 4000 || len(entries) != 1 || entries[0].FenceToken != b.entry.FenceToken {
					t.Fatalf("balance %v, ledger %+v: want only node-b's withdrawal", balance, entries)
				}
				return
			}
			// The stale overwrite: two withdrawals of 1000 in the ledger, yet
			// the balance shows one.
			if balance != 4000 || len(entries) != 2 {
				t.Fatalf("balance %v with %d entries: want 4000 with 2 (the lost update)", balance, len(entries))
			}
		})
	}
}

// TestCrashedHolderFreesTheLock: node-a takes the account's lease and is
// killed with SIGKILL before it writes or releases. node-b waits about the
// TTL, then gets the lease with a higher token and withdraws.
func TestCrashedHolderFreesTheLock(t *testing.T) {
	t.Parallel()
	_, nodeA, nodeB, acct := twoNodesOneAccount(t, []string{"--lease-ttl", "2s"}, []string{"--lease-wait", "10s"})

	crashed := withdrawAsync(nodeA.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: "lease", Hold: 20 * time.Second})
	lock := waitForHolder(t, nodeB, acct.ID, "node-a")
	fault(t, nodeA.Kill)
	killed := time.Now()

	b := withdraw(nodeB.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: "lease"})
	waited := time.Since(killed)
	if b.status != 201 {
		t.Fatalf("node-b: %d %v", b.status, b.err)
	}
	if waited < time.Second || waited > 6*time.Second {
		t.Fatalf("node-b waited %s; want about the rest of node-a's 2s TTL", waited)
	}
	if b.entry.FenceToken <= lock.Token {
		t.Fatalf("token %v after the crashed holder's %v", b.entry.FenceToken, lock.Token)
	}
	if got := getAccount(t, nodeB.API, acct.ID); got.Balance != 4000 {
		t.Fatalf("balance %v, want 4000: node-a's withdrawal must not have landed", got.Balance)
	}
	if a := <-crashed; a.status != 0 {
		t.Fatalf("node-a answered %d after SIGKILL", a.status)
	}
}

// waitIdleInTransaction waits until node's session on databaseURL's
// database sits idle inside a transaction: it holds its row lock and is
// between statements.
func waitIdleInTransaction(t *testing.T, databaseURL, node string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	wait.Until(t, 10*time.Second, node+" holding a row lock", func() bool {
		var n int
		// Tests run side by side on one server, each with its own database
		// and nodes of the same names.
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND state = 'idle in transaction' AND datname = current_database()`, "bankd "+node).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
}

// TestPausedNodeInsideRowLock: a node frozen in the middle of a row
// transaction keeps its row lock — the pessimistic lock's own crashed
// holder. The bounds of invariant 10 end it: PostgreSQL ends the frozen
// session after --row-lock-ttl, so the other node proceeds and the frozen
// node's late write fails and changes nothing; or, if the other node's
// --lock-timeout is shorter, it gets 503 lock_timeout instead of hanging.
func TestPausedNodeInsideRowLock(t *testing.T) {
	t.Parallel()
	t.Run("RowLockTTLFreesTheRow", func(t *testing.T) {
		t.Parallel()
		db, nodeA, nodeB, acct := twoNodesOneAccount(t, []string{"--row-lock-ttl", "1s"}, []string{"--lock-timeout", "20s"})

		// The hold outlasts the row-lock TTL, so node-a cannot commit before
		// the freeze lands however late a loaded machine delivers SIGSTOP:
		// a 500ms hold once let node-a commit first under go test -race.
		late := withdrawAsync(nodeA.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: "row", Hold: 3 * time.Second})
		waitIdleInTransaction(t, db, "node-a")
		fault(t, nodeA.Freeze)
		frozen := time.Now()

		b := withdraw(nodeB.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: "row"})
		waited := time.Since(frozen)
		if b.status != 201 {
			t.Fatalf("node-b: %d %v", b.status, b.err)
		}
		if waited > 6*time.Second {
			t.Fatalf("node-b waited %s behind a frozen node; the row lock's TTL is 1s", waited)
		}
		fault(t, nodeA.Resume)
		if a := <-late; a.status == 201 || a.status < 500 {
			t.Fatalf("node-a's late write after its session was ended: %d %v; want a 5xx and no change", a.status, a.err)
		} else {
			t.Logf("node-a's late write: %d %v (node-b waited %s)", a.status, a.code, waited.Round(time.Millisecond))
		}
		balance, entries := getAccount(t, nodeB.API, acct.ID).Balance, ledger(t, nodeB.API, acct.ID)
		if balance != 4000 || len(entries) != 1 {
			t.Fatalf("balance %v with %d entries; want only node-b's withdrawal", balance, len(entries))
		}
	})
	t.Run("LockTimeoutAnswers503", func(t *testing.T) {
		t.Parallel()
		db, nodeA, nodeB, acct := twoNodesOneAccount(t, []string{"--row-lock-ttl", "30s"}, []string{"--lock-timeout", "300ms"})

		// A hold much longer than node-b's lock_timeout: node-a keeps the row
		// locked for node-b's whole wait even if SIGSTOP lands late.
		late := withdrawAsync(nodeA.API, acct.ID, client.Withdrawal{Amount: 1000, Strategy: "row", Hold: 5 * time.Second})
		waitIdleInTransaction(t, db, "node-a")
		fault(t, nodeA.Freeze)
		start := time.Now()
		_, err := nodeB.API.Withdraw(context.Background(), acct.ID, client.Withdrawal{Amount: 1000, Strategy: "row"})
		var refusal *client.Error
		if !errors.As(err, &refusal) || refusal.Status != 503 || refusal.Code != "lock_timeout" || refusal.RetryAfter <= 0 {
			t.Fatalf("node-b behind a frozen row lock: %v (%+v); want 503 lock_timeout with Retry-After", err, refusal)
		}
		if waited := time.Since(start); waited > 3*time.Second {
			t.Fatalf("node-b's answer took %s with a 300ms lock_timeout", waited)
		}
		fault(t, nodeA.Resume)
		if a := <-late; a.status != 201 {
			t.Fatalf("node-a after a pause shorter than its row-lock TTL: %d %v; want 201", a.status, a.err)
		}
		if got := getAccount(t, nodeB.API, acct.ID); got.Balance != 4000 {
			t.Fatalf("balance %v, want 4000 (node-a's withdrawal only)", got.Balance)
		}
	})
}
