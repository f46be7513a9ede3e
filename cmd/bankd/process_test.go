package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// bankdBinary builds bankd once per test run, for tests that need it as a
// real process: one that can be frozen with SIGSTOP and killed with SIGKILL.
func bankdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bankd-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "bankd")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type process struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
}

// startProcess runs bankd as a child process and waits until it is healthy.
func startProcess(t *testing.T, node, databaseURL string, args ...string) *process {
	t.Helper()
	addr := freeAddr(t)
	logs := &syncBuffer{}
	cmd := exec.Command(bankdBinary(t), append([]string{"--addr", addr, "--database-url", databaseURL, "--node-name", node, "--unsafe-demo"}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{url: "http://" + addr, cmd: cmd, logs: logs}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", node, logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.url + "/healthz"); err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy:\n%s", node, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// twoNodesOneAccount starts node-a and node-b as processes on a fresh
// database, with their extra flags, and opens an account of 5000 on node-a.
func twoNodesOneAccount(t *testing.T, argsA, argsB []string) (db string, nodeA, nodeB *process, acct map[string]any) {
	t.Helper()
	db = pgtest.URL(t)
	nodeA = startProcess(t, "node-a", db, argsA...)
	nodeB = startProcess(t, "node-b", db, argsB...)
	status, acct := post(t, nodeA.url+"/v1/accounts", `{"owner":"alice","balance":5000}`)
	if status != 201 {
		t.Fatalf("create account: %d %v", status, acct)
	}
	return db, nodeA, nodeB, acct
}

// waitForHolder polls the lock API until holder holds the account's lease.
func waitForHolder(t *testing.T, url, accountID, holder string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, lock := get(t, url+"/v1/locks/account:"+accountID)
		if status == 200 && lock["holder"] == holder && lock["held"] == true {
			return lock
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held account %s's lease: %d %v", holder, accountID, status, lock)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type outcome struct {
	status int
	body   map[string]any
}

// postAsync sends a request from another goroutine; a request whose server
// died reports status 0.
func postAsync(url, body string) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			ch <- outcome{}
			return
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		ch <- outcome{resp.StatusCode, m}
	}()
	return ch
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
			path := fmt.Sprintf("/v1/accounts/%.0f", acct["id"])

			lateA := postAsync(nodeA.url+path+"/withdrawals", `{"amount":1000,"strategy":"`+tt.strategy+`","hold_ms":800}`)
			waitForHolder(t, nodeB.url, fmt.Sprint(acct["id"]), "node-a")
			time.Sleep(200 * time.Millisecond) // node-a has read the balance and is holding before its write
			nodeA.signal(t, syscall.SIGSTOP)
			frozen := time.Now()

			status, entryB := post(t, nodeB.url+path+"/withdrawals", `{"amount":1000,"strategy":"`+tt.strategy+`"}`)
			if status != 201 {
				t.Fatalf("node-b: %d %v", status, entryB)
			}
			if waited := time.Since(frozen); waited > 5*time.Second {
				t.Fatalf("node-b waited %s for a 1s lease", waited)
			}
			nodeA.signal(t, syscall.SIGCONT)
			a := <-lateA
			if a.status != tt.wantStatus || (tt.wantCode != "" && a.body["code"] != tt.wantCode) {
				t.Fatalf("node-a after the pause: %d %v, want %d %s", a.status, a.body, tt.wantStatus, tt.wantCode)
			}

			_, got := get(t, nodeB.url+path)
			_, ledger := get(t, nodeB.url+path+"/ledger")
			entries := ledger["entries"].([]any)
			balance := got["balance"].(float64)
			if tt.wantCode != "" {
				if balance != 4000 || len(entries) != 1 || entries[0].(map[string]any)["fence_token"] != entryB["fence_token"] {
					t.Fatalf("balance %v, ledger %v: want only node-b's withdrawal", balance, entries)
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
	path := fmt.Sprintf("/v1/accounts/%.0f", acct["id"])

	crashed := postAsync(nodeA.url+path+"/withdrawals", `{"amount":1000,"strategy":"lease","hold_ms":20000}`)
	lock := waitForHolder(t, nodeB.url, fmt.Sprint(acct["id"]), "node-a")
	nodeA.signal(t, syscall.SIGKILL)
	killed := time.Now()

	status, entry := post(t, nodeB.url+path+"/withdrawals", `{"amount":1000,"strategy":"lease"}`)
	waited := time.Since(killed)
	if status != 201 {
		t.Fatalf("node-b: %d %v", status, entry)
	}
	if waited < time.Second || waited > 6*time.Second {
		t.Fatalf("node-b waited %s; want about the rest of node-a's 2s TTL", waited)
	}
	if entry["fence_token"].(float64) <= lock["token"].(float64) {
		t.Fatalf("token %v after the crashed holder's %v", entry["fence_token"], lock["token"])
	}
	_, got := get(t, nodeB.url+path)
	if got["balance"].(float64) != 4000 {
		t.Fatalf("balance %v, want 4000: node-a's withdrawal must not have landed", got["balance"])
	}
	if a := <-crashed; a.status != 0 {
		t.Fatalf("node-a answered %d after SIGKILL", a.status)
	}
}

// waitIdleInTransaction polls until node's session sits idle inside a
// transaction: it holds its row lock and is between statements.
func waitIdleInTransaction(t *testing.T, databaseURL, node string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND state = 'idle in transaction'`, "bankd "+node).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held a row lock", node)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
		path := fmt.Sprintf("/v1/accounts/%.0f", acct["id"])

		// The hold outlasts the row-lock TTL, so node-a cannot commit before
		// the freeze lands however late a loaded machine delivers SIGSTOP:
		// a 500ms hold once let node-a commit first under go test -race.
		late := postAsync(nodeA.url+path+"/withdrawals", `{"amount":1000,"strategy":"row","hold_ms":3000}`)
		waitIdleInTransaction(t, db, "node-a")
		nodeA.signal(t, syscall.SIGSTOP)
		frozen := time.Now()

		status, entry := post(t, nodeB.url+path+"/withdrawals", `{"amount":1000,"strategy":"row"}`)
		waited := time.Since(frozen)
		if status != 201 {
			t.Fatalf("node-b: %d %v", status, entry)
		}
		if waited > 6*time.Second {
			t.Fatalf("node-b waited %s behind a frozen node; the row lock's TTL is 1s", waited)
		}
		nodeA.signal(t, syscall.SIGCONT)
		if a := <-late; a.status == 201 || a.status < 500 {
			t.Fatalf("node-a's late write after its session was ended: %d %v; want a 5xx and no change", a.status, a.body)
		} else {
			t.Logf("node-a's late write: %d %v (node-b waited %s)", a.status, a.body["code"], waited.Round(time.Millisecond))
		}
		_, got := get(t, nodeB.url+path)
		_, ledger := get(t, nodeB.url+path+"/ledger")
		if got["balance"].(float64) != 4000 || len(ledger["entries"].([]any)) != 1 {
			t.Fatalf("balance %v with %d entries; want only node-b's withdrawal", got["balance"], len(ledger["entries"].([]any)))
		}
	})
	t.Run("LockTimeoutAnswers503", func(t *testing.T) {
		t.Parallel()
		db, nodeA, nodeB, acct := twoNodesOneAccount(t, []string{"--row-lock-ttl", "30s"}, []string{"--lock-timeout", "300ms"})
		path := fmt.Sprintf("/v1/accounts/%.0f", acct["id"])

		// A hold much longer than node-b's lock_timeout: node-a keeps the row
		// locked for node-b's whole wait even if SIGSTOP lands late.
		late := postAsync(nodeA.url+path+"/withdrawals", `{"amount":1000,"strategy":"row","hold_ms":5000}`)
		waitIdleInTransaction(t, db, "node-a")
		nodeA.signal(t, syscall.SIGSTOP)
		start := time.Now()
		resp, err := http.Post(nodeB.url+path+"/withdrawals", "application/json", strings.NewReader(`{"amount":1000,"strategy":"row"}`))
		if err != nil {
			t.Fatal(err)
		}
		var p map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != 503 || p["code"] != "lock_timeout" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("node-b behind a frozen row lock: %d %v (Retry-After %q); want 503 lock_timeout", resp.StatusCode, p, resp.Header.Get("Retry-After"))
		}
		if waited := time.Since(start); waited > 3*time.Second {
			t.Fatalf("node-b's answer took %s with a 300ms lock_timeout", waited)
		}
		nodeA.signal(t, syscall.SIGCONT)
		if a := <-late; a.status != 201 {
			t.Fatalf("node-a after a pause shorter than its row-lock TTL: %d %v; want 201", a.status, a.body)
		}
		_, got := get(t, nodeB.url+path)
		if got["balance"].(float64) != 4000 {
			t.Fatalf("balance %v, want 4000 (node-a's withdrawal only)", got["balance"])
		}
	})
}
