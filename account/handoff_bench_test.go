package account

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/lockmgr"
)

// The hand-off of a kept lease (issue 16): "a second node that wants the
// account gets it within a few milliseconds of the holder's current batch
// ending". Figures mean most on a durable server (pgtest's own runs with
// fsync=off); point the run at one as lockmgr's benchmarks say.

const (
	// handoffWait is node-b's LeaseWait: far below the TTL, so that a node-b
	// that is not handed the lease fails the run within it instead of
	// sleeping out node-a's lease.
	handoffWait = time.Second
	// handoffLoad bounds node-a's load, and so the run.
	handoffLoad = 40 * time.Second
)

// BenchmarkStickyLeaseHandoff: node-a keeps an account's lease under a
// closed-loop load of three batches' worth of lease withdrawals (its queue
// is never empty, so only a waiter makes it give the lease up); each
// iteration is one lease withdrawal of node-b on the same account, started
// while node-a keeps the lease. The timer runs only around node-b's
// withdrawals (ns/op is their mean). Per withdrawal, from node-a's batch
// log (the sticky.committed hook):
//
//	b-total       node-b's whole withdrawal, the baseline;
//	after-a-batch from the commit of the node-a batch in flight when node-b
//	              asked to node-b's withdrawal returning (issue 16's target);
//	after-a-release from the commit of the node-a batch that gave up the
//	              lease node-b's followed, to the same;
//	a-batches-to-release/op: node-a batches that ended from node-b's ask to
//	              that one (1: the batch in flight);
//	a-releases/op: node-a's releases per node-b withdrawal (1 is ideal);
//	a-batch-p50-ms: node-a's batch period, the scale of "a batch".
//
// p99 of 50 samples is their maximum. node-a's stamps are taken when its
// goroutine has read its COMMIT's answer, which on a busy machine can come
// after node-b already returned: a sample can be negative. The run fails
// instead of reporting if node-b's withdrawal fails (it waited handoffWait
// for a lease nobody gave up), if a withdrawal of node-a's load fails (its
// lease is then released outside the log), or if node-b's lease is not the
// next grant after a node-a lease that a node-a batch gave up.
func BenchmarkStickyLeaseHandoff(b *testing.B) {
	url := pgtest.URL(b)
	var aLog batchLog
	nodeA := handoffNode(b, url, "node-a", time.Minute)
	nodeA.sticky.committed = aLog.add
	nodeB := handoffNode(b, url, "node-b", handoffWait)
	load, stop := context.WithTimeout(context.Background(), handoffLoad)
	defer stop()
	acct, err := nodeA.Create(load, "alice", 1_000_000_000_000_000)
	if err != nil {
		b.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		aFailed atomic.Pointer[error] // node-a's first failed withdrawal
	)
	defer wg.Wait()
	defer stop()
	// Three batches' worth: when a batch decides whether to keep the lease
	// two more wait behind it, so only a waiter makes node-a give it up.
	for range 3 * maxBatch {
		wg.Go(func() {
			for load.Err() == nil {
				_, err := nodeA.Withdraw(load, Change{AccountID: acct.ID, Amount: 1, Strategy: StrategyLease})
				if err != nil && load.Err() == nil {
					aFailed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	// A failed batch of node-a gives its lease up outside the batch log (a
	// release, unstamped): no hand-off from a batch to measure.
	aFine := func() {
		b.Helper()
		if err := aFailed.Load(); err != nil {
			b.Fatalf("a withdrawal of node-a's load failed: %v", *err)
		}
	}
	// node-a keeps the lease: two batches at least ended since after, the
	// last of them keeping it.
	keeping := func(after time.Time) {
		b.Helper()
		wait.Until(b, 5*time.Second, "node-a keeping the lease under load", func() bool {
			ends := aLog.between(after, time.Now())
			return len(ends) >= 2 && !ends[len(ends)-1].released
		})
	}
	withdrawB := func() (start, end time.Time, token int64) {
		b.Helper()
		start = time.Now()
		res, err := nodeB.Withdraw(context.Background(), Change{AccountID: acct.ID, Amount: 1, Strategy: StrategyLease})
		end = time.Now()
		if err != nil {
			b.Fatalf("node-b's withdrawal while node-a keeps the lease: %v (after %s)", err, end.Sub(start))
		}
		if res.Entry.FenceToken == nil {
			b.Fatal("node-b's entry has no token")
		}
		if load.Err() != nil {
			b.Fatalf("node-a's load ended (bounded at %s) before the run", handoffLoad)
		}
		return start, end, *res.Entry.FenceToken
	}
	// Warm up node-b: its pool, and its listener, which connects on its
	// first wait.
	keeping(time.Now())
	_, last, _ := withdrawB()

	var (
		total, afterBatch, afterRelease []time.Duration
		starts                          []time.Time
		toRelease                       int
	)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		keeping(last)
		b.StartTimer()
		start, end, token := withdrawB()
		b.StopTimer()
		last = end
		aFine()
		if prev, ok := aLog.lastBefore(start); !ok || prev.released {
			b.Fatalf("node-a had given the lease up (%+v) when node-b asked: no hand-off to measure", prev)
		}
		// node-b's lease must be the next grant after a lease of node-a
		// that a node-a batch gave up in its commit.
		var prevToken int64
		var prevHolder string
		if err := nodeB.pool.QueryRow(context.Background(), `SELECT token, holder FROM lease_grants
			WHERE resource = $1 AND token < $2 ORDER BY token DESC LIMIT 1`, LeaseResource(acct.ID), token).Scan(&prevToken, &prevHolder); err != nil {
			b.Fatalf("the grant before node-b's (token %d): %v", token, err)
		}
		if prevHolder != "node-a" {
			b.Fatalf("node-b's lease (token %d) follows %s's (token %d), not node-a's", token, prevHolder, prevToken)
		}
		// node-a stamps a batch once its goroutine has read the COMMIT's
		// answer, which on a busy two-core machine was seen to come tens of
		// milliseconds after node-b, woken by the commit's notification,
		// had the lease: wait for the stamp, not for a time window.
		var ends []batchEnd
		i := -1
		if !wait.For(time.Second, func() bool {
			ends = aLog.between(start, time.Now())
			i = slices.IndexFunc(ends, func(e batchEnd) bool { return e.released && e.token == prevToken })
			return i >= 0
		}) {
			b.Fatalf("node-b got the lease (token %d) in %s, but no node-a batch gave up node-a's lease before it (token %d); node-a's batch ends from node-b's ask, ms:token:kept/released: %s",
				token, end.Sub(start), prevToken, aLog.describe(start, start.Add(time.Second)))
		}
		starts = append(starts, start)
		total = append(total, end.Sub(start))
		afterBatch = append(afterBatch, end.Sub(ends[0].at))
		afterRelease = append(afterRelease, end.Sub(ends[i].at))
		toRelease += i + 1
	}
	// Every release of node-a, counted against the node-b withdrawal it
	// followed: more than one each means node-a gave the lease up and took
	// it again before node-b had it, or gave it up to a waiter gone by.
	aReleases := 0
	for _, e := range aLog.between(starts[0], time.Now()) {
		if e.released {
			aReleases++
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(total, 50)), "b-total-p50-ms")
	b.ReportMetric(ms(percentile(total, 99)), "b-total-p99-ms")
	b.ReportMetric(ms(percentile(afterBatch, 50)), "after-a-batch-p50-ms")
	b.ReportMetric(ms(percentile(afterBatch, 99)), "after-a-batch-p99-ms")
	b.ReportMetric(ms(percentile(afterRelease, 50)), "after-a-release-p50-ms")
	b.ReportMetric(ms(percentile(afterRelease, 99)), "after-a-release-p99-ms")
	b.ReportMetric(float64(toRelease)/float64(b.N), "a-batches-to-release/op")
	b.ReportMetric(float64(aReleases)/float64(b.N), "a-releases/op")
	b.ReportMetric(ms(percentile(aLog.periods(), 50)), "a-batch-p50-ms")
}

// handoffNode is a Service named name on its own pool and lock manager, on
// the database at url, as a separate bankd node would have them.
func handoffNode(b *testing.B, url, name string, leaseWait time.Duration) *Service {
	b.Helper()
	pool := pgtest.Pool(b, url, name)
	locks := lockmgr.New(pool, lockmgr.Options{})
	b.Cleanup(locks.Close)
	return NewService(pool, Options{Locks: locks, Node: name, LeaseTTL: time.Minute, LeaseWait: leaseWait})
}

// batchEnd is one lease batch of a node: when its transaction ended, its
// lease's token, and whether the lease ended with it.
type batchEnd struct {
	at       time.Time
	token    int64
	released bool
}

// batchLog is a node's lease batches in the order they ended (one account's
// batches run one after another on a node).
type batchLog struct {
	mu   sync.Mutex
	ends []batchEnd
}

func (l *batchLog) add(token int64, released, _ bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Stamped under the lock, so that the log is in time order.
	l.ends = append(l.ends, batchEnd{at: time.Now(), token: token, released: released})
}

// between returns the batches that ended after from, up to to.
func (l *batchLog) between(from, to time.Time) []batchEnd {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.ends), func(i int) bool { return l.ends[i].at.After(from) })
	j := sort.Search(len(l.ends), func(j int) bool { return l.ends[j].at.After(to) })
	return slices.Clone(l.ends[i:j])
}

// lastBefore returns the last batch that ended up to t.
func (l *batchLog) lastBefore(t time.Time) (batchEnd, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.ends), func(i int) bool { return l.ends[i].at.After(t) })
	if i == 0 {
		return batchEnd{}, false
	}
	return l.ends[i-1], true
}

// describe lists the batches that ended from from to to, in ms after from.
func (l *batchLog) describe(from, to time.Time) string {
	var parts []string
	for _, e := range l.between(from, to) {
		what := "kept"
		if e.released {
			what = "released"
		}
		parts = append(parts, fmt.Sprintf("%.1f:%d:%s", float64(e.at.Sub(from))/float64(time.Millisecond), e.token, what))
	}
	return strings.Join(parts, " ")
}

// periods returns the times between consecutive batch ends.
func (l *batchLog) periods() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for i := 1; i < len(l.ends); i++ {
		ds = append(ds, l.ends[i].at.Sub(l.ends[i-1].at))
	}
	return ds
}

// percentile returns the p-th percentile of ds (nearest rank); 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(math.Ceil(p/100*float64(len(s))))-1]
}
