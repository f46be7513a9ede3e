package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type bankd struct {
	url  string
	api  *client.Client
	logs *cluster.LogBuffer
	stop func() error // cancels run's context and returns what run returned
}

// startBankd calls run exactly as main does, on a free port, and waits until
// bankd is ready, as a user would.
func startBankd(t *testing.T, env map[string]string, args ...string) bankd {
	t.Helper()
	addr := freeAddr(t)
	env["BANKD_ADDR"] = addr
	ctx, cancel := context.WithCancel(context.Background())
	logs := &cluster.LogBuffer{}
	exited := make(chan struct{})
	var runErr error
	go func() {
		runErr = run(ctx, args, func(k string) string { return env[k] }, io.Discard, logs)
		close(exited)
	}()
	stop := func() error {
		cancel()
		<-exited
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	b := bankd{url: "http://" + addr, api: client.New("http://"+addr, client.WithHTTPClient(checked(t))), logs: logs, stop: stop}
	if err := cluster.WaitReady(context.Background(), b.api, 60*time.Second, exited); errors.Is(err, cluster.ErrExited) {
		t.Fatalf("bankd exited during start: %v\n%s", runErr, logs)
	} else if err != nil {
		t.Fatalf("bankd not ready: %v\n%s", err, logs)
	}
	return b
}

// checked is an HTTP client that validates each request to bankd and its
// answer against the OpenAPI document (internal/contract), failing t on a
// mismatch.
func checked(t *testing.T) *http.Client {
	return &http.Client{Transport: contract.Transport(t, nil)}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func createAccount(t *testing.T, api *client.Client, owner string, balance int64) client.Account {
	t.Helper()
	a, err := api.CreateAccount(context.Background(), owner, balance)
	if err != nil {
		t.Fatalf("create account: %v", err)
	}
	return a
}

func getAccount(t *testing.T, api *client.Client, id int64) client.Account {
	t.Helper()
	a, err := api.Account(context.Background(), id)
	if err != nil {
		t.Fatalf("get account %d: %v", id, err)
	}
	return a
}

// ledger reads account id's whole ledger.
func ledger(t *testing.T, api *client.Client, id int64) []client.Entry {
	t.Helper()
	var entries []client.Entry
	for e, err := range api.Ledger(context.Background(), id) {
		if err != nil {
			t.Fatalf("ledger of %d: %v", id, err)
		}
		entries = append(entries, e)
	}
	return entries
}

// outcome is what a withdrawal got: the answer's status (0 when none came),
// its problem code, and the entry of a success.
type outcome struct {
	status int
	code   string
	entry  client.Entry
	err    error
}

// withdrawAsync sends a withdrawal from another goroutine; a request whose
// server died reports status 0.
func withdrawAsync(api *client.Client, id int64, w client.Withdrawal) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		var resp client.Response
		e, err := api.Withdraw(context.Background(), id, w, client.CaptureResponse(&resp))
		ch <- outcome{status: resp.StatusCode, code: client.ErrorCode(err), entry: e, err: err}
	}()
	return ch
}

func withdraw(api *client.Client, id int64, w client.Withdrawal) outcome {
	return <-withdrawAsync(api, id, w)
}

// TestTwoNodesOneDatabase is the seed's setting: two bankd nodes share one
// database, and 200 clients released together withdraw 100 each from 10,000
// through both. The row lock lets exactly 100 succeed.
func TestTwoNodesOneDatabase(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t)}
	nodes := []bankd{startBankd(t, env), startBankd(t, env)}
	acct := createAccount(t, nodes[0].api, "alice", 10000)

	const clients = 200
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range clients {
		wg.Go(func() {
			<-start
			o := withdraw(nodes[i%2].api, acct.ID, client.Withdrawal{Amount: 100, Strategy: "row"})
			mu.Lock()
			statuses[o.status]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if statuses[201] != 100 || statuses[409] != 100 {
		t.Fatalf("statuses %v, want 100×201 and 100×409", statuses)
	}
	got := getAccount(t, nodes[1].api, acct.ID)
	entries := ledger(t, nodes[0].api, acct.ID)
	if got.Balance != 0 || len(entries) != 100 {
		t.Fatalf("balance %v with %d ledger entries, want 0 with 100", got.Balance, len(entries))
	}
}

// TestEmbeddedDefault starts bankd with no DATABASE_URL: it must bring up its
// own PostgreSQL, serve, stop that server on shutdown, and find the data
// again on the next start.
func TestEmbeddedDefault(t *testing.T) {
	if _, err := pglocal.FindBinDir(); err != nil {
		t.Skip("no PostgreSQL server binaries on this machine:", err)
	}
	t.Parallel()
	// Not t.TempDir: its parent is closed to other users, and the server runs
	// as the postgres OS user when we are root.
	dir, err := os.MkdirTemp("", "bankd-embedded-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "pgdata")
	env := map[string]string{"BANKD_DATA_DIR": dataDir}

	first := startBankd(t, env)
	acct := createAccount(t, first.api, "alice", 42)
	if err := first.api.Ready(context.Background()); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	if err := first.stop(); err != nil {
		t.Fatalf("shutdown: %v\n%s", err, first.logs)
	}
	if !strings.Contains(first.logs.String(), "stopped PostgreSQL") {
		t.Fatalf("the private PostgreSQL was not stopped:\n%s", first.logs)
	}
	pgStatus := exec.Command(filepath.Join(mustBinDir(t), "pg_ctl"), "status", "-D", dataDir)
	if os.Geteuid() == 0 {
		pgStatus = exec.Command("runuser", append([]string{"-u", "postgres", "--"}, pgStatus.Args...)...)
	}
	if out, err := pgStatus.CombinedOutput(); err == nil {
		t.Fatalf("PostgreSQL still runs after bankd stopped: %s", out)
	}

	second := startBankd(t, env)
	again, err := second.api.Account(context.Background(), acct.ID)
	if err != nil || again.Balance != 42 {
		t.Fatalf("after restart: %+v, %v; want the account kept", again, err)
	}
	if err := second.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func mustBinDir(t *testing.T) string {
	dir, err := pglocal.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestGracefulShutdown cancels bankd while a request is in flight: the
// request still completes, and run returns nil.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "BANKD_UNSAFE_DEMO": "1", "BANKD_NODE": "graceful"}
	b := startBankd(t, env)
	acct := createAccount(t, b.api, "alice", 100)

	result := withdrawAsync(b.api, acct.ID, client.Withdrawal{Amount: 60, Hold: 2 * time.Second})
	waitIdleInTransaction(t, env["DATABASE_URL"], "graceful") // the request is now holding inside its transaction
	if err := b.stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if o := <-result; o.status != 201 {
		t.Fatalf("in-flight withdrawal got %d %v, want 201", o.status, o.err)
	}
	conn, err := pgx.Connect(context.Background(), env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var balance int64
	if err := conn.QueryRow(context.Background(), `SELECT balance FROM accounts`).Scan(&balance); err != nil || balance != 40 {
		t.Fatalf("balance %d (%v), want 40", balance, err)
	}
}

// TestMigrateCommand runs `bankd migrate` as an operator would, then several
// replicas migrating one empty database at once: goose's advisory lock must
// let each migration apply exactly once.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t)}
	getenv := func(k string) string { return env[k] }
	migrate := func(verb string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), []string{"migrate", verb}, getenv, &out, io.Discard)
		return out.String(), err
	}
	if out, err := migrate("status"); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("status: %v %q", err, out)
	}
	if out, err := migrate("down"); err != nil || !strings.Contains(out, "rolled back") {
		t.Fatalf("down: %v %q", err, out)
	}
	if out, err := migrate("status"); err != nil || !strings.Contains(out, "pending") {
		t.Fatalf("status after down: %v %q", err, out)
	}

	const replicas = 4
	start := make(chan struct{})
	var wg sync.WaitGroup
	outs := make([]string, replicas)
	for i := range replicas {
		wg.Go(func() {
			<-start
			var err error
			outs[i], err = migrate("up")
			if err != nil {
				t.Errorf("replica %d: migrate up: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	applied := 0
	for _, out := range outs {
		applied += strings.Count(out, "applied ")
	}
	if applied != 1 {
		t.Fatalf("migration applied %d times across %d replicas, want exactly once: %q", applied, replicas, outs)
	}
	if _, err := migrate("sideways"); err == nil {
		t.Fatal("migrate sideways succeeded")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"BadMaxConns", nil, map[string]string{"BANKD_MAX_CONNS": "lots"}, "BANKD_MAX_CONNS"},
		{"BadDemoFlag", nil, map[string]string{"BANKD_UNSAFE_DEMO": "maybe"}, "BANKD_UNSAFE_DEMO"},
		{"BadLogFormat", []string{"--log-format", "xml"}, nil, "log-format"},
		{"UnknownCommand", []string{"serve-please"}, nil, "unknown command"},
		{"UnknownFlag", []string{"--colour"}, nil, "colour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%v) = %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}

// TestSlowClientsAreCutOff: a client that sends its headers or its body
// slowly cannot hold a connection (and a goroutine) forever.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Run("WriteTimeout", func(t *testing.T) {
		// A handler slower than --write-timeout (a 2 s demo hold, 1 s limit):
		// the connection is cut instead of held open.
		t.Parallel()
		b := startBankd(t, map[string]string{"DATABASE_URL": pgtest.URL(t), "BANKD_UNSAFE_DEMO": "1"}, "--write-timeout", "1s")
		acct := createAccount(t, b.api, "slow", 10)
		start := time.Now()
		if o := withdraw(b.api, acct.ID, client.Withdrawal{Amount: 1, Hold: 2 * time.Second}); o.status != 0 {
			t.Fatalf("got %d after %s; want the connection cut at the 1s write timeout", o.status, time.Since(start))
		}
	})
	t.Parallel()
	b := startBankd(t, map[string]string{"DATABASE_URL": pgtest.URL(t), "BANKD_UNSAFE_DEMO": "1"},
		"--read-timeout", "1s", "--write-timeout", "1s", "--idle-timeout", "1s")
	addr := strings.TrimPrefix(b.url, "http://")
	for _, tt := range []struct {
		name  string
		sent  string
		limit time.Duration
	}{
		{"StalledHeaders", "POST /v1/accounts HTTP/1.1\r\nHost: x\r\n", 8 * time.Second}, // read-header timeout 5s
		{"StalledBody", "POST /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", 4 * time.Second},
		// One answered request, then silence: the keep-alive connection is closed after --idle-timeout.
		{"IdleKeepAlive", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 4 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte(tt.sent)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.ReadAll(conn) // returns when the server closes the connection
			if took := time.Since(start); took > tt.limit {
				t.Fatalf("the server kept a stalled connection for %s (limit %s)", took, tt.limit)
			}
		})
	}
}

// TestProfiling: --pprof-addr serves the profiles on their own address, and
// never on the API's.
func TestProfiling(t *testing.T) {
	t.Parallel()
	pprofAddr := freeAddr(t)
	env := map[string]string{"DATABASE_URL": pgtest.URL(t)}
	withProfiles := startBankd(t, env, "--pprof-addr", pprofAddr)
	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("pprof heap: %d %.200s", resp.StatusCode, body)
	}
	for _, b := range []bankd{withProfiles, startBankd(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"]})} {
		resp, err := http.Get(b.url + "/debug/pprof/heap") // not the API: a probe for what must not be there
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("the API address answers /debug/pprof/ with %d; want 404", resp.StatusCode)
		}
	}
}
