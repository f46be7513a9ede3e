package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/wait"
)

// ErrExited: the bankd being waited for exited.
var ErrExited = errors.New("cluster: bankd exited")

// WaitReady polls api's /readyz until the node answers ready, and gives up
// after timeout, when ctx ends, or when exited (if not nil) is closed — a
// process that died will not become ready. It is the one wait for a bankd
// to start, a process or run in a test.
func WaitReady(ctx context.Context, api *client.Client, timeout time.Duration, exited <-chan struct{}) error {
	var last error
	err := wait.Poll(ctx, timeout, 50*time.Millisecond, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		last = api.Ready(ctx)
		return last == nil
	})
	select {
	case <-exited:
		return ErrExited
	default:
	}
	if errors.Is(err, wait.ErrTimeout) && last != nil {
		return fmt.Errorf("not ready after %s: %w", timeout, last)
	}
	return err
}

// WaitHolder polls n's lock API until holder holds resource's lease, and
// returns what n said of it: the way to see another node inside its lease.
// It gives up after timeout or when ctx ends.
func (n *Node) WaitHolder(ctx context.Context, resource, holder string, timeout time.Duration) (client.LockStatus, error) {
	var (
		s       client.LockStatus
		lastErr error
	)
	err := wait.Poll(ctx, timeout, 5*time.Millisecond, func() bool {
		s, lastErr = n.API.Lock(ctx, resource)
		return lastErr == nil && s.Held && s.Holder == holder
	})
	if err != nil {
		return s, fmt.Errorf("%s never held %s (last answer %+v, %v): %w", holder, resource, s, lastErr, err)
	}
	return s, nil
}

// WaitLeaseOver polls n's lock API until resource's lease is no longer live
// by the database's clock. It gives up after timeout or when ctx ends.
func (n *Node) WaitLeaseOver(ctx context.Context, resource string, timeout time.Duration) error {
	err := wait.Poll(ctx, timeout, 20*time.Millisecond, func() bool {
		s, err := n.API.Lock(ctx, resource)
		return err == nil && !s.Held
	})
	if err != nil {
		return fmt.Errorf("the lease on %s never ran out: %w", resource, err)
	}
	return nil
}
