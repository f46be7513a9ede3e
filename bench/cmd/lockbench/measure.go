package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockbank/lockbank/bench/locks"
)

// cycles is the result of one throughput measurement, summed over its slices.
type cycles struct {
	Workers      int     `json:"workers"`
	Slices       int     `json:"slices"`
	Cycles       int     `json:"cycles"`
	Seconds      float64 `json:"seconds"`
	CyclesPerSec float64 `json:"cycles_per_sec"`
	// PerWorker counts each worker's acquisitions.
	PerWorker []int `json:"per_worker"`
	// Fairness, when workers share one resource.
	MinOfMean  float64 `json:"min_of_mean,omitempty"` // fewest acquisitions by a worker / mean
	MaxOfMean  float64 `json:"max_of_mean,omitempty"` // most acquisitions by a worker / mean
	LongestRun int     `json:"longest_run,omitempty"` // most consecutive acquisitions by one worker
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`

	shared bool // all workers on one resource
}

// add merges a slice of the same measurement into c.
func (c *cycles) add(s cycles) {
	if c.PerWorker == nil {
		c.PerWorker = make([]int, len(s.PerWorker))
	}
	c.Workers, c.shared = s.Workers, s.shared
	c.Slices++
	c.Cycles += s.Cycles
	c.Seconds += s.Seconds
	for i, n := range s.PerWorker {
		c.PerWorker[i] += n
	}
	c.LongestRun = max(c.LongestRun, s.LongestRun)
	c.Errors += s.Errors
	if c.FirstError == "" {
		c.FirstError = s.FirstError
	}
	if c.Seconds > 0 {
		c.CyclesPerSec = float64(c.Cycles) / c.Seconds
	}
	if c.shared && c.Cycles > 0 {
		mean := float64(c.Cycles) / float64(len(c.PerWorker))
		c.MinOfMean = float64(slices.Min(c.PerWorker)) / mean
		c.MaxOfMean = float64(slices.Max(c.PerWorker)) / mean
	}
}

// measureCycles runs one worker per entry of resources, each acquiring and
// releasing its resource in a loop (several workers may name the same one).
// It counts the acquisitions made after the warm-up and before d has passed,
// or until cfg.maxCycles of them.
func measureCycles(ctx context.Context, lk locks.Locker, resources []string, d time.Duration, cfg config) cycles {
	start := time.Now().Add(cfg.warmup)
	end := start.Add(d)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()

	var (
		total     atomic.Int64
		capped    atomic.Int64 // UnixNano when maxCycles was reached
		mu        sync.Mutex
		order     []int // which worker acquired, in lock order
		errs      int
		firstErr  error
		perWorker = make([]int, len(resources))
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if errs++; firstErr == nil {
			firstErr = err
		}
		if errs > 100 {
			cancel() // something is broken; do not spin
		}
	}
	for w, resource := range resources {
		wg.Go(func() {
			for ctx.Err() == nil && total.Load() < int64(cfg.maxCycles) {
				// The end of the measurement may cancel a waiting Acquire but
				// not a granted lock's context: pglock's heartbeat runs on it.
				lockCtx, cancelLock := context.WithCancel(context.WithoutCancel(ctx))
				stop := context.AfterFunc(ctx, cancelLock)
				release, err := lk.Acquire(lockCtx, resource)
				stop()
				if err != nil {
					cancelLock()
					if ctx.Err() == nil {
						fail(err)
					}
					continue
				}
				// Still holding the lock, so order is the order of grants.
				if now := time.Now(); now.After(start) && now.Before(end) {
					perWorker[w]++
					mu.Lock()
					order = append(order, w)
					mu.Unlock()
					if total.Add(1) == int64(cfg.maxCycles) {
						capped.Store(now.UnixNano())
					}
				}
				// Release even after the end, so no lock outlives the
				// measurement (lockCtx is cancelled if the end came while
				// Acquire was returning).
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(lockCtx), 10*time.Second)
				if err := release(rctx); err != nil {
					fail(err)
				}
				rcancel()
				cancelLock()
			}
		})
	}
	wg.Wait()

	stop := end
	if ns := capped.Load(); ns != 0 {
		stop = time.Unix(0, ns)
	}
	c := cycles{Workers: len(resources), Cycles: int(total.Load()), PerWorker: perWorker, Errors: errs}
	c.Seconds = stop.Sub(start).Seconds()
	if firstErr != nil {
		c.FirstError = firstErr.Error()
	}
	if c.shared = len(resources) > 1 && resources[0] == resources[1]; c.shared {
		c.LongestRun = longestRun(order)
	}
	return c
}

// longestRun is the length of the longest stretch of equal values.
func longestRun(order []int) int {
	longest, run := 0, 0
	for i, w := range order {
		if i > 0 && w == order[i-1] {
			run++
		} else {
			run = 1
		}
		longest = max(longest, run)
	}
	return longest
}
