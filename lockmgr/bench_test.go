package lockmgr_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// The benchmarks of issue 7, for comparing lockmgr before and after a change
// in one run. Figures only mean something on a durable server (pgtest's own
// server runs with fsync=off), so point them at one:
//
//	TEST_DATABASE_URL=postgres://…/postgres PGTEST_BACKEND=url \
//	  go test -run '^$' -bench . -count 5 ./lockmgr/
//
// Every figure is acquire+release cycles per second (cycles/s) except the
// hand-off, which is the latency from a release to a waiter in another process
// holding the lease.

const benchTTL = 5 * time.Second

// benchManager is a Manager on a fresh database, with a pool big enough that
// eight workers never queue for a connection.
func benchManager(b *testing.B) (*lockmgr.Manager, *pgxpool.Pool, string) {
	b.Helper()
	return benchManagerWith(b, lockmgr.Options{})
}

func benchManagerWith(b *testing.B, opts lockmgr.Options) (*lockmgr.Manager, *pgxpool.Pool, string) {
	b.Helper()
	url := pgtest.URL(b)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	m := lockmgr.New(pool, opts)
	b.Cleanup(m.Close)
	return m, pool, url
}

func cycle(b *testing.B, m *lockmgr.Manager, resource, holder string) {
	ctx := context.Background()
	l, err := m.Acquire(ctx, resource, holder, benchTTL)
	if err != nil {
		b.Error(err)
		return
	}
	if err := m.Release(ctx, resource, l.ID); err != nil {
		b.Error(err)
	}
}

// runWorkers runs b.N cycles shared by workers goroutines, worker w on
// resource(w), and returns how many cycles each one did. The shared budget
// lets an unfair lock show itself: a worker that keeps winning takes more.
func runWorkers(b *testing.B, m *lockmgr.Manager, workers int, resource func(w int) string) []int64 {
	b.Helper()
	counts := make([]int64, workers)
	var budget atomic.Int64
	budget.Store(int64(b.N))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for budget.Add(-1) >= 0 && !b.Failed() {
				cycle(b, m, resource(w), fmt.Sprintf("w%d", w))
				counts[w]++
			}
		})
	}
	b.ResetTimer()
	close(start)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
	return counts
}

func BenchmarkAcquireRelease(b *testing.B) {
	b.Run("Uncontended", func(b *testing.B) {
		m, _, _ := benchManager(b)
		cycle(b, m, "bench:one", "w") // the first grant inserts the row; measure the steady state
		runWorkers(b, m, 1, func(int) string { return "bench:one" })
	})
	b.Run("Parallel8", func(b *testing.B) {
		m, _, _ := benchManager(b)
		res := func(w int) string { return fmt.Sprintf("bench:p%d", w) }
		for w := range 8 {
			cycle(b, m, res(w), "w")
		}
		runWorkers(b, m, 8, res)
	})
	// Parallel8 with grants and releases sharing statements (and commits).
	b.Run("Parallel8Combined", func(b *testing.B) {
		m, _, _ := benchManagerWith(b, lockmgr.Options{CombineGrants: true})
		res := func(w int) string { return fmt.Sprintf("bench:p%d", w) }
		for w := range 8 {
			cycle(b, m, res(w), "w")
		}
		runWorkers(b, m, 8, res)
	})
	b.Run("Contended8", func(b *testing.B) {
		m, _, _ := benchManager(b)
		cycle(b, m, "bench:hot", "w")
		counts := runWorkers(b, m, 8, func(int) string { return "bench:hot" })
		// Fairness: the share of the least and the most lucky worker, as a
		// fraction of the mean. The target is both within 50% of the mean.
		mean := float64(b.N) / float64(len(counts))
		b.ReportMetric(float64(slices.Min(counts))/mean, "min/mean")
		b.ReportMetric(float64(slices.Max(counts))/mean, "max/mean")
	})
}

// BenchmarkHandoff: two processes take turns on one resource. The holder
// releases while the other waits in Acquire; the figure is the time from the
// start of Release (before its commit) to the waiter holding the lease, and
// from Release's return (its commit done) to the same. The waiter runs in a
// child process (this test binary, see TestHandoffPeer), so in-process timers
// and the local queue cannot help it: it is woken by NOTIFY or not at all
// (it would otherwise sleep out the 5 s lease).
func BenchmarkHandoff(b *testing.B) {
	m, _, url := benchManager(b)
	const resource = "bench:handoff"
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHandoffPeer$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LOCKMGR_HANDOFF_PEER_URL="+url)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	peer := bufio.NewScanner(stdout)
	// The peer prints one line per event: "ready", then "acq <unix ns>" when
	// it holds the lease.
	expect := func(word string) int64 {
		b.Helper()
		for peer.Scan() {
			f := strings.Fields(peer.Text())
			if len(f) == 0 || f[0] != word {
				continue // go test's own output
			}
			if len(f) == 1 {
				return 0
			}
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return ns
		}
		b.Fatalf("peer ended before %q: %v", word, peer.Err())
		return 0
	}
	expect("ready")
	ctx := context.Background()
	fromStart := make([]time.Duration, 0, b.N)
	fromCommit := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		l, err := m.Acquire(ctx, resource, "parent", benchTTL)
		if err != nil {
			b.Fatal(err)
		}
		// Tell the peer to start waiting, and give it time to be asleep in
		// Acquire (a few milliseconds; its first try finds the lease held).
		fmt.Fprintln(stdin, "wait")
		expect("waiting")
		time.Sleep(5 * time.Millisecond)
		start := time.Now()
		if err := m.Release(ctx, resource, l.ID); err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		acquired := time.Unix(0, expect("acq"))
		fromStart = append(fromStart, acquired.Sub(start))
		fromCommit = append(fromCommit, acquired.Sub(committed))
		expect("released") // the peer released at once; our next Acquire does not wait
	}
	b.StopTimer()
	slices.Sort(fromStart)
	slices.Sort(fromCommit)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(fromStart[len(fromStart)/2]), "p50-ms")
	b.ReportMetric(ms(fromStart[len(fromStart)*9/10]), "p90-ms")
	b.ReportMetric(ms(fromCommit[len(fromCommit)/2]), "p50-after-commit-ms")
}

// TestHandoffPeer is BenchmarkHandoff's other process; it does nothing in a
// normal test run. On each "wait" from stdin it acquires the lease (waiting
// for the parent's release), prints the time it got it, and releases it.
func TestHandoffPeer(t *testing.T) {
	url := os.Getenv("LOCKMGR_HANDOFF_PEER_URL")
	if url == "" {
		t.Skip("run by BenchmarkHandoff")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	m := lockmgr.New(pool, lockmgr.Options{})
	defer m.Close()
	// Start the listener before the first round, as a long-running waiter
	// would have it.
	warm, cancel := context.WithTimeout(ctx, time.Millisecond)
	_, _ = m.Acquire(warm, "bench:warm-up", "peer", benchTTL)
	cancel()
	time.Sleep(500 * time.Millisecond) // the listener connects in the background
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "wait" {
			continue
		}
		fmt.Println("waiting")
		l, err := m.Acquire(ctx, "bench:handoff", "peer", benchTTL)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("acq", time.Now().UnixNano())
		if err := m.Release(ctx, l.Resource, l.ID); err != nil {
			t.Fatal(err)
		}
		fmt.Println("released")
	}
}
