package lockmgr

import (
	"context"
	mrand "math/rand/v2"
	"slices"
	"time"
)

// A Manager queues its own Acquire calls per resource, first come first
// served, so that only the head of the queue asks the database and a caller
// that has just released and asks again goes behind those already waiting.
// Without it, the releasing caller, awake and on a CPU, wins again while the
// others are still waking up (and all of them stampede the database on every
// release). The database stays the authority: the head must still win the
// lease there, against other Managers and processes, which it wakes for by
// NOTIFY or at the lease's expiry as before.

// line is the queue of Acquire calls of this Manager for one resource.
type line struct {
	resource string
	waiters  []*waiter // waiters[0] is the head, the only one that asks the database
	// registered: the listener makes releases of resource notify us.
	registered bool
	// heldToken is the token of the lease a waiter of this line was last
	// granted, while it is believed held; heldUntil is when it runs out by
	// the local clock. The next head sleeps until a local release or
	// heldUntil without asking the database, and ignores notifications of
	// older grants' releases.
	heldToken int64
	heldUntil time.Time
}

type waiter struct {
	line *line
	// wake has room for one signal: being made head, or, as head, a release.
	wake chan struct{}
	// turned: the waiter has had its turn as head (turn), so a wake is now
	// news to count (wake), not the turn itself. Guarded by the Manager's mu.
	turned bool
}

// signal wakes w; it reports whether the signal went in (false when one was
// already pending, and this one merges with it).
func (w *waiter) signal() bool {
	select {
	case w.wake <- struct{}{}:
		return true
	default:
		return false
	}
}

// wake signals the head w for cause, counting the wake-up if it is news to
// w and not merged with one pending. Called with the Manager's mu held: the
// count is made when the wake is sent, so a test that sees the cause happen
// sees it counted.
func (m *Manager) wake(w *waiter, cause string) {
	if w.signal() && w.turned {
		m.metrics.wakeups.WithLabelValues(cause).Inc()
	}
}

// join puts a caller at the end of resource's line.
func (m *Manager) join(resource string) *waiter {
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := m.lines[resource]
	if ln == nil {
		ln = &line{resource: resource}
		m.lines[resource] = ln
	}
	w := &waiter{line: ln, wake: make(chan struct{}, 1)}
	ln.waiters = append(ln.waiters, w)
	if len(ln.waiters) == 1 {
		w.signal()
	}
	return w
}

// leave takes w out of its line, granted or giving up, and hands the head's
// place on.
func (m *Manager) leave(w *waiter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := w.line
	i := slices.Index(ln.waiters, w)
	ln.waiters = slices.Delete(ln.waiters, i, i+1)
	if len(ln.waiters) == 0 {
		delete(m.lines, ln.resource)
		if ln.registered && m.listener != nil {
			m.listener.unregister(ln.resource)
		}
		return
	}
	if i == 0 {
		ln.waiters[0].signal()
	}
}

// turn reports whether w is the head and, if a lease granted from its line
// is believed held, how long to sleep before asking the database.
func (m *Manager) turn(w *waiter) (head bool, sleep time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := w.line
	if ln.waiters[0] != w {
		return false, 0
	}
	w.turned = true
	if ln.heldToken != 0 {
		if d := time.Until(ln.heldUntil); d > 0 {
			return true, d + jitter(d)
		}
		ln.heldToken = 0
	}
	return true, 0
}

// granted records the head's new lease for the next head to wait on.
func (m *Manager) granted(w *waiter, l *Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.line.heldToken, w.line.heldUntil = l.Token, l.deadline.Add(m.margin(l.TTL))
}

// ensureRegistered makes sure releases of the line's resource notify this
// Manager; it reports whether that was so already. If not, the caller must
// ask the database again before sleeping: a release may have come before.
func (m *Manager) ensureRegistered(ctx context.Context, w *waiter) bool {
	m.mu.Lock()
	registered := w.line.registered
	m.mu.Unlock()
	if registered {
		return true
	}
	if m.listener == nil {
		// No LISTEN connection (Options.NoListen): nothing to register, so
		// no release can slip past a registration; the waiter sleeps until
		// the lease runs out.
		return true
	}
	if m.listener.register(ctx, w.line.resource) {
		m.mu.Lock()
		w.line.registered = true
		m.mu.Unlock()
	}
	return false
}

// released wakes the head of resource's line after a release of the grant
// with token: by this Manager (Release) or by anyone (a notification). A
// notification of an older grant's release than the one a local holder has
// is stale and ignored. Token 0 means unknown: wake.
func (m *Manager) released(resource string, token int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := m.lines[resource]
	if ln == nil || (token != 0 && token < ln.heldToken) {
		return
	}
	ln.heldToken = 0
	m.wake(ln.waiters[0], wakeNotify)
}

// listening is told by the listener each time it has connected and holds
// the advisory locks of the resources waited for: every head is woken, since
// notifications may have been missed while it was not listening, and a
// connection after the first is counted as a reconnect.
func (m *Manager) listening() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ln := range m.lines {
		ln.heldToken = 0
		m.wake(ln.waiters[0], wakeListener)
	}
	if m.connects > 0 {
		m.metrics.reconnects.Inc()
	}
	m.connects++
}

// jitter spreads the waiters of several processes that wake at one lease's
// expiry, so that they do not all ask at once.
func jitter(d time.Duration) time.Duration {
	return time.Duration(mrand.Int64N(int64(d/50 + 2*time.Millisecond)))
}
