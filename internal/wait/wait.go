// Package wait is the one way tests wait for something to become true: poll
// a condition, with a deadline, so that a failure fails the test instead of
// hanging it.
package wait

import (
	"testing"
	"time"
)

// interval is how often a condition is polled: short enough not to slow a
// test, long enough not to busy a two-core machine.
const interval = 2 * time.Millisecond

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
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
