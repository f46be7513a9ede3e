package account

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/lockmgr"
)

// applyLeased is the lease strategy for a batch of one account's
// withdrawals: the lease is taken once and covers them all, its token goes
// on every entry, and the fence is checked once, in their transaction.
//
// The lease is this node's own, taken for clients that sent no token, so a
// refusal of it by the fence is no answer for them: the lease ran out while
// the batch was held up (a slow statement, a pause), or another node took
// over meanwhile. Nothing was written under it; the batch runs again under a
// fresh lease, as long as --lease-wait lasts, counted from the first try,
// and then answers CodeLockTimeout.
func (s *Service) applyLeased(ctx context.Context, batch []*pending) []outcome {
	outs := make([]outcome, len(batch))
	id := batch[0].change.AccountID
	waitUntil := time.Now().Add(s.leaseWait)
	for {
		err := s.runLeased(ctx, batch, outs, waitUntil)
		if errors.Is(err, errLeaseRefused) && !time.Now().Before(waitUntil) {
			err = errorf(CodeLockTimeout, "account %d: this node's lease kept running out before its write for %s; retry shortly", id, s.leaseWait)
		}
		switch {
		case err == nil:
			return outs
		case errors.Is(err, errLeaseRefused):
			s.metrics.retried(err)
			continue
		}
		failAll(outs, batch, err)
		return outs
	}
}

// runLeased applies batch under account's lease: a lease this node kept
// from its last batch, or one granted in the batch's own transaction, or,
// when another holder has it, one waited for until waitUntil at the latest
// (sticky.go). It reads again while a writer without the lease moves the
// balance and the lease lasts. Errors: errLeaseRefused (the fence refused
// the lease: nothing written), takeLease's, runBatch's.
func (s *Service) runLeased(ctx context.Context, batch []*pending, outs []outcome, waitUntil time.Time) error {
	id := batch[0].change.AccountID
	start := time.Now()
	lt := &leaseTx{lease: s.takeKept(id), ttl: s.LeaseTTL()}
	if lt.lease == nil {
		s.afterYield(ctx, id)
	}
	if lt.lease == nil && len(batch) == 1 && !s.moreLeaseWork(id) {
		if out, done := s.applyLoneLeased(ctx, batch[0]); done {
			outs[0] = out
			if s.autoTTL != nil && out.err == nil {
				s.autoTTL.Observe(time.Since(start))
			}
			return nil
		}
	}
	// A lease granted outside the batch's transaction (kept or waited for)
	// is released here unless the batch ended it or kept it.
	committed := lt.lease
	defer func() {
		if committed != nil && !lt.released && lt.lease == committed {
			s.releaseLease(ctx, committed)
		}
	}()
	for attempt := 0; ; attempt++ {
		clear(outs)
		err := s.runBatch(ctx, batch, outs, lt)
		var held *lockmgr.HeldError
		switch {
		case err == nil:
			if s.sticky.committed != nil && lt.lease != nil {
				s.sticky.committed(lt.lease.Token, lt.released, lt.yielded)
			}
			if s.autoTTL != nil {
				s.autoTTL.Observe(time.Since(start))
			}
			if !lt.released && lt.lease != nil {
				s.keep(id, lt.lease)
				committed = nil // kept: not released here
			}
			if lt.yielded {
				s.yielded(id)
			}
			return nil
		case errors.As(err, &held) && committed == nil:
			// Another holder: wait for the lease as before, then apply the
			// batch under it.
			lease, err := s.takeLease(ctx, id, waitUntil)
			if err != nil {
				return err
			}
			lt.lease, committed = lease, lease
			continue
		case errors.Is(err, errBalanceMoved) || pgerr.Conflict(err) || uniqueViolation(err):
			if attempt < 100 && (lt.lease == nil || time.Now().Before(lt.lease.Deadline())) {
				s.metrics.retried(err)
				continue
			}
			return errorf(CodeLockTimeout, "account %d kept changing until the lease ran out; retry shortly", id)
		}
		return err
	}
}

// takeLease takes account id's lease, waiting until waitUntil at the
// latest. Errors: CodeAccountNotFound, CodeLockTimeout.
func (s *Service) takeLease(ctx context.Context, id int64, waitUntil time.Time) (*lockmgr.Lease, error) {
	// Refuse a missing account before taking a lease named after it.
	var exists bool
	if err := s.pool.QueryRow(ctx, sqlAccountExists, id).Scan(&exists); err != nil {
		return nil, wrap(KindWithdrawal, err)
	}
	if !exists {
		return nil, notFound(id)
	}
	waitCtx, cancel := context.WithDeadline(ctx, waitUntil)
	lease, err := s.locks.Acquire(waitCtx, LeaseResource(id), s.node, s.LeaseTTL())
	cancel()
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return nil, errorf(CodeLockTimeout, "account %d stayed locked for %s; retry shortly", id, s.leaseWait)
		}
		// The lease's grant is no change to the account: a lost session
		// there is unavailable, never an unknown outcome (wrap).
		return nil, wrap(KindWithdrawal, fmt.Errorf("lease: %w", err))
	}
	return lease, nil
}

// LeaseTTL is the TTL the lease strategies give their next lease: learned
// (Options.AutoTTL) or fixed (Options.LeaseTTL).
func (s *Service) LeaseTTL() time.Duration {
	if s.autoTTL != nil {
		return s.autoTTL.TTL()
	}
	return s.leaseTTL
}

// AutoTTL is the learner of the lease TTL, nil when it is fixed.
func (s *Service) AutoTTL() *lockmgr.AutoTTL {
	if s == nil {
		return nil
	}
	return s.autoTTL
}

// heldLease is a lease while its critical section runs: with a learned TTL
// it is kept alive, since the TTL fits past work, not necessarily this one,
// and the section's length is learned at its release.
type heldLease struct {
	s     *Service
	ctx   context.Context
	lease *lockmgr.Lease
	keep  *lockmgr.KeepAlive // nil with a fixed TTL
	start time.Time
}

func (s *Service) holdLease(ctx context.Context, lease *lockmgr.Lease) *heldLease {
	h := &heldLease{s: s, ctx: ctx, lease: lease, start: time.Now()}
	if s.autoTTL != nil {
		// Renewals only: the work runs under ctx, not the keepalive's
		// context, so that a lost lease never cancels a COMMIT (an unknown
		// outcome); the fence, in the work's transaction, refuses the lease
		// once it ran out.
		h.keep = s.locks.KeepAlive(context.WithoutCancel(ctx), lease)
	}
	return h
}

// deadline is the lease's local deadline as last renewed: the lease is not
// used past it.
func (h *heldLease) deadline() time.Time {
	if h.keep != nil {
		l := h.keep.Lease()
		return l.Deadline()
	}
	return h.lease.Deadline()
}

// release stops the renewals, learns how long the section took, and gives
// the lease back.
func (h *heldLease) release() {
	if h.keep != nil {
		h.keep.Stop()
		h.s.autoTTL.Observe(time.Since(h.start))
	}
	h.s.releaseLease(h.ctx, h.lease)
}

// releaseLease gives the lease back, even when the client went away. After a
// pause the lease may belong to someone else: then Release refuses to touch
// it, rightly.
func (s *Service) releaseLease(ctx context.Context, lease *lockmgr.Lease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.locks.Release(rctx, lease.Resource, lease.ID)
}
