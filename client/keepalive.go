package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrLeaseLost is the cause of a KeepAlive's Context when the lease is, or
// may be, gone: a renewal was refused, or its deadline passed unrenewed.
var ErrLeaseLost = errors.New("client: lease lost")

// KeepAlive renews a lease over HTTP in the background and tells its holder,
// through Context and Done, the moment the lease may be lost.
type KeepAlive struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu    sync.Mutex
	lease Lease
}

// KeepAlive starts renewing l at a third of its TTL. Its Context ends:
//   - at once when a renewal is refused (lease_lost, or any other 4xx: the
//     lease will not be renewed), with cause ErrLeaseLost;
//   - when the lease's Deadline passes with no successful renewal — a
//     renewal that got no answer, or a 5xx, is retried only while the lease
//     is still certainly valid — with cause ErrLeaseLost;
//   - when ctx ends or Stop is called.
//
// Do the protected work under Context, and send Lease().Token with it.
func (c *Client) KeepAlive(ctx context.Context, l Lease) *KeepAlive {
	kctx, cancel := context.WithCancelCause(ctx)
	k := &KeepAlive{ctx: kctx, cancel: cancel, done: make(chan struct{}), lease: l}
	go k.run(c)
	return k
}

// Context ends when the lease may be lost; context.Cause says why.
func (k *KeepAlive) Context() context.Context { return k.ctx }

// Done is closed when the lease may be lost (Context().Done()).
func (k *KeepAlive) Done() <-chan struct{} { return k.ctx.Done() }

// Err is nil while the lease is held, then why it may not be: an error
// wrapping ErrLeaseLost, or context.Canceled after Stop.
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
// background goroutine to finish; a renewal in flight is abandoned.
func (k *KeepAlive) Stop() {
	k.cancel(context.Canceled)
	<-k.done
}

func (k *KeepAlive) run(c *Client) {
	defer close(k.done)
	lease := k.Lease()
	interval := lease.TTL / 3
	deadline := time.NewTimer(time.Until(lease.Deadline()))
	defer deadline.Stop()
	next := time.NewTimer(interval)
	defer next.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-deadline.C:
			k.cancel(fmt.Errorf("%w: no renewal before its deadline", ErrLeaseLost))
			return
		case <-next.C:
		}
		// A renewal may not outlive the lease it renews: at the deadline it
		// is abandoned, and the deadline timer reports the loss.
		rctx, cancel := context.WithDeadline(k.ctx, lease.Deadline())
		renewed, err := c.Renew(rctx, lease.Resource, lease.ID, lease.TTL)
		cancel()
		var refused *Error
		switch {
		case err == nil:
			lease = renewed
			k.mu.Lock()
			k.lease = lease
			k.mu.Unlock()
			deadline.Reset(time.Until(lease.Deadline()))
			next.Reset(interval)
		case errors.As(err, &refused) && refused.Status < 500:
			k.cancel(fmt.Errorf("%w: %w", ErrLeaseLost, err))
			return
		default:
			// No answer, or the node could not decide: try again soon; the
			// deadline timer ends it if that goes on.
			next.Reset(max(interval/4, 10*time.Millisecond))
		}
	}
}
