package cluster_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"syscall"
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

func bankd(t *testing.T) string {
	t.Helper()
	bin, err := cluster.BuildOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func startNode(t *testing.T, name string, args ...string) (*cluster.Node, *cluster.LogBuffer) {
	t.Helper()
	logs := &cluster.LogBuffer{}
	n, err := cluster.StartNode(context.Background(), cluster.NodeOptions{Binary: bankd(t), Name: name, DatabaseURL: pgtest.URL(t), Args: args, Log: logs,
		Transport: func(base http.RoundTripper) http.RoundTripper { return contract.Transport(t, base) }})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	t.Cleanup(n.Stop)
	return n, logs
}

// alive reports whether pid is a live process (not yet reaped).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestNodeFaults: a node started as a process is ready and names itself;
// frozen it answers nothing, resumed it answers again; killed it is gone,
// and restarted it serves on the same address; stopped, its process has
// exited.
func TestNodeFaults(t *testing.T) {
	t.Parallel()
	n, logs := startNode(t, "node-x")
	ctx := context.Background()
	if h, err := n.API.Health(ctx); err != nil || h.Node != "node-x" || !n.Own() || n.PID() == 0 {
		t.Fatalf("health %+v, %v, own %v, pid %d", h, err, n.Own(), n.PID())
	}
	answers := func() bool {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		return n.API.Ready(ctx) == nil
	}

	if err := n.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if answers() {
		t.Fatal("a frozen node answered")
	}
	if err := n.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	// Resumed, it first serves what waited while it was frozen (the request
	// above, given up by now): on a loaded machine an answer can take longer
	// than one try's 300 ms.
	for deadline := time.Now().Add(5 * time.Second); !answers(); {
		if time.Now().After(deadline) {
			t.Fatalf("a resumed node did not answer within 5 s:\n%s", logs)
		}
	}

	killed := n.PID()
	if err := n.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if alive(killed) || answers() {
		t.Fatalf("process %d alive (%v) or answering after Kill", killed, alive(killed))
	}
	url := n.URL
	if err := n.Restart(ctx); err != nil {
		t.Fatalf("restart: %v\n%s", err, logs)
	}
	if n.URL != url || n.PID() == killed || !answers() {
		t.Fatalf("after restart: %s (was %s), pid %d (was %d), answers %v", n.URL, url, n.PID(), killed, answers())
	}

	restarted := n.PID()
	n.Stop()
	if alive(restarted) {
		t.Fatalf("process %d still alive after Stop", restarted)
	}
}

// TestStartNodeThatExits: a bankd that exits at once is reported as such,
// not waited for a minute.
func TestStartNodeThatExits(t *testing.T) {
	t.Parallel()
	logs := &cluster.LogBuffer{}
	start := time.Now()
	_, err := cluster.StartNode(context.Background(), cluster.NodeOptions{Binary: bankd(t), Name: "node-bad", DatabaseURL: "postgres://127.0.0.1:1/none",
		Args: []string{"--log-format", "xml"}, Log: logs})
	if !errors.Is(err, cluster.ErrExited) || time.Since(start) > 30*time.Second {
		t.Fatalf("a bankd with a bad flag: %v after %s; want ErrExited at once\n%s", err, time.Since(start), logs)
	}
}

// TestLockWaits: another node sees a holder inside its lease, with its
// token, and sees the lease run out by the database's clock.
func TestLockWaits(t *testing.T) {
	t.Parallel()
	n, _ := startNode(t, "node-y")
	ctx := context.Background()
	if _, err := n.WaitHolder(ctx, "job:1", "w", 200*time.Millisecond); err == nil {
		t.Fatal("WaitHolder found a holder of a lock nobody took")
	}
	lease, err := n.API.Acquire(ctx, "job:1", client.LockRequest{Holder: "w", TTL: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, err := n.WaitHolder(ctx, "job:1", "w", 10*time.Second)
	if err != nil || s.Token != lease.Token {
		t.Fatalf("WaitHolder: %+v, %v; want token %d", s, err, lease.Token)
	}
	if _, err := n.WaitHolder(ctx, "job:1", "someone-else", 100*time.Millisecond); err == nil {
		t.Fatal("WaitHolder accepted the wrong holder")
	}
	if err := n.WaitLeaseOver(ctx, "job:1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !time.Now().After(lease.ExpiresAt) {
		t.Fatalf("WaitLeaseOver returned before the lease's expiry %s", lease.ExpiresAt)
	}
}

// TestOwnCluster starts an own cluster (private PostgreSQL and two nodes),
// injects the database faults, and sees the nodes serve again after each;
// Close leaves no process behind.
func TestOwnCluster(t *testing.T) {
	if _, err := pglocal.FindBinDir(); err != nil {
		t.Skip("an own cluster needs the PostgreSQL server binaries:", err)
	}
	t.Parallel()
	ctx := context.Background()
	var notes []string
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 2, LeaseTTL: 2 * time.Second, Notef: func(f string, a ...any) { notes = append(notes, f) },
		Transport: func(base http.RoundTripper) http.RoundTripper { return contract.Transport(t, base) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if len(c.Nodes) != 2 || c.Nodes[0].Name != "node-a" || c.Nodes[1].Name != "node-b" || !c.Own() || c.DatabaseURL() == "" || len(notes) != 1 {
		t.Fatalf("nodes %d, own %v, database %q, notes %q", len(c.Nodes), c.Own(), c.DatabaseURL(), notes)
	}
	if rss := c.PeakRSSMiB(); rss <= 0 {
		t.Fatalf("peak RSS %v of own nodes", rss)
	}
	serves := func() {
		t.Helper()
		for _, n := range c.Nodes {
			if err := cluster.WaitReady(ctx, n.API, 30*time.Second, nil); err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
			if _, err := n.API.CreateAccount(ctx, "after-fault", 1); err != nil {
				t.Fatalf("%s: %v", n.Name, err)
			}
		}
	}
	serves()
	sessions := bankdSessions(t, c.DatabaseURL())
	if len(sessions) == 0 {
		t.Fatal("no bankd sessions in pg_stat_activity")
	}
	if err := c.TerminateSessions(ctx); err != nil {
		t.Fatal(err)
	}
	serves()
	for _, pid := range bankdSessions(t, c.DatabaseURL()) {
		if slices.Contains(sessions, pid) {
			t.Fatalf("bankd session %d outlived TerminateSessions", pid)
		}
	}
	started := postmasterStart(t, c.DatabaseURL())
	if err := c.RestartDatabase(ctx); err != nil {
		t.Fatal(err)
	}
	serves()
	if again := postmasterStart(t, c.DatabaseURL()); !again.After(started) {
		t.Fatalf("PostgreSQL started at %s, and at %s after RestartDatabase", started, again)
	}

	pids := []int{c.Nodes[0].PID(), c.Nodes[1].PID()}
	c.Close()
	for _, pid := range pids {
		if alive(pid) {
			t.Fatalf("node process %d alive after Close", pid)
		}
	}
}

// bankdSessions lists the server pids of bankd's database sessions.
func bankdSessions(t *testing.T, url string) []int32 {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'bankd %'`)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

func postmasterStart(t *testing.T, url string) time.Time {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var at time.Time
	if err := conn.QueryRow(context.Background(), `SELECT pg_postmaster_start_time()`).Scan(&at); err != nil {
		t.Fatal(err)
	}
	return at
}
