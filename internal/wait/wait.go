// Package wait is the one way lockbank waits for something to become true:
// poll a condition, with a deadline, so that a failure fails (a test, a
// command) instead of hanging it.
package wait

import (
	"context"
	"errors"
	"testing"
	"time"
)

// interval is how often For and Until poll a condition: short enough not to
// slow a test, long enough not to busy a two-core machine.
const interval = 2 * time.Millisecond

// ErrTimeout is Poll's answer when the condition did not become true in time.
var ErrTimeout = errors.New("wait: timed out")

// Until polls cond until it returns true, and fails t with what (a
// description of the condition) if it has not within timeout. Call it from
// the test's own goroutine, as t.Fatalf requires.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !For(timeout, cond) {
		t.Fatalf("waited %s for %s", timeout, what)
	}
}

// For polls cond until it returns true or timeout passes, and reports which.
// It is safe on any goroutine; the caller decides how to fail.
func For(timeout time.Duration, cond func() bool) bool {
	return Poll(context.Background(), timeout, interval, cond) == nil
}

// Poll calls cond at once and then every every until it returns true (nil),
// ctx ends (ctx.Err()) or timeout passes (ErrTimeout). It is For for code
// that polls something remote — a server's readiness, a lock's holder —
// where the caller picks how often to ask and may be canceled.
func Poll(ctx context.Context, timeout, every time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTimer(every)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return ErrTimeout
		}
		tick.Reset(every)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
