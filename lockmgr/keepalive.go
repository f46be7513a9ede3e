package lockmgr

import (
	"context"
	"errors"
	"sync"
	"time"
)

// KeepAlive renews a lease in the background and tells its holder, through
// Context and Done, the moment the lease may be lost.
type KeepAlive struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}

	mu    sync.Mutex
	lease Lease
}

// KeepAlive starts renewing l at about a third of its TTL. Its Context ends:
//   - at once when a renewal finds the lease gone (ErrLeaseLost);
//   - when the lease's local deadline passes with no successful renewal —
//     transient errors (a dropped connection, a slow database) are retried
//     only while the lease is still certainly valid;
//   - when ctx ends or Stop is called.
//
// Do the protected work under Context, and send Lease().Token with it.
func (m *Manager) KeepAlive(ctx context.Context, l *Lease) *KeepAlive {
	kctx, cancel := context.WithCancelCause(ctx)
	k := &KeepAlive{ctx: kctx, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{}), lease: *l}
	go k.run(m)
	return k
}

// Context ends when the lease may be lost; context.Cause says why.
func (k *KeepAlive) Context() context.Context { return k.ctx }

// Done is closed when the lease may be lost (Context().Done()).
func (k *KeepAlive) Done() <-chan struct{} { return k.ctx.Done() }

// Err is nil while the lease is held, then ErrLeaseLost, or the reason the
// keepalive ended (context.Canceled after Stop).
func (k *KeepAlive) Err() error {
	if k.ctx.Err() == nil {
		return nil
	}
	return context.Cause(k.ctx)
}

// Lease is the lease as last renewed.
func (k *KeepAlive) Lease() Lease {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lease
}

// Stop ends renewing (it does not release the lease) and waits for the
// background goroutine to finish.
func (k *KeepAlive) Stop() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}

func (k *KeepAlive) run(m *Manager) {
	defer close(k.done)
	lease := k.Lease()
	deadline := time.NewTimer(time.Until(lease.Deadline()))
	defer deadline.Stop()
	interval := lease.TTL / 3
	next := time.NewTimer(interval)
	defer next.Stop()
	type renewal struct {
		lease *Lease
		err   error
	}
	for {
		select {
		case <-k.stop:
			k.cancel(context.Canceled)
			return
		case <-k.ctx.Done():
			return
		case <-deadline.C:
			k.cancel(ErrLeaseLost)
			return
		case <-next.C:
		}
		// The renewal runs beside the deadline timer, so that a renewal stuck
		// on a dead connection cannot delay the loss signal; nor may it
		// outlive the lease it renews.
		rctx, cancel := context.WithDeadline(k.ctx, lease.Deadline())
		result := make(chan renewal, 1)
		go func() {
			l, err := m.renew(rctx, lease.Resource, lease.ID, lease.Owner, lease.TTL)
			result <- renewal{l, err}
		}()
		var r renewal
		select {
		case r = <-result:
			cancel()
		case <-deadline.C:
			cancel()
			k.lost(m, lease, "deadline passed unrenewed")
			return
		case <-k.stop:
			cancel()
			k.cancel(context.Canceled)
			return
		}
		switch {
		case r.err == nil:
			lease = *r.lease
			k.mu.Lock()
			k.lease = lease
			k.mu.Unlock()
			deadline.Reset(time.Until(lease.Deadline()))
			next.Reset(interval)
		case errors.Is(r.err, ErrLeaseLost):
			k.lost(m, lease, "renewal found it gone")
			return
		default:
			// Transient: try again soon; the deadline timer ends it if the
			// database stays out of reach.
			next.Reset(max(interval/4, 10*time.Millisecond))
		}
	}
}

// lost ends the keepalive with ErrLeaseLost, counted and logged.
func (k *KeepAlive) lost(m *Manager, lease Lease, why string) {
	k.cancel(ErrLeaseLost)
	m.metrics.keeperLost.Inc()
	m.log.Info("lock lost by its keeper", "resource", lease.Resource, "holder", lease.Holder,
		"fencing_token", lease.Token, "why", why)
}
