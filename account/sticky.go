package account

import (
	"context"
	"sync"
	"time"

	"github.com/lockbank/lockbank/lockmgr"
)

// Sticky leases: a node keeps an account's lease from one lease batch to
// the next while it has more lease work queued for the account, and gives
// it up in the commit of the batch after which it has none, or as soon as
// another node waits for it (its waiters' registration, which the fence,
// or the question behind a grant, reads in the batch's transaction), and
// then lets the waiter ask first (yieldPause). The grant and the release
// ride in the batch's own transaction (lockmgr's QueueGrant and
// QueueRelease), so a batch on an account nobody else wants costs one
// transaction and one commit, like a row batch; a kept lease saves the next
// batch its grant.
//
// Every write is still fenced by the lease's token in its transaction; a
// kept lease is used only while more than half of its TTL is left by the
// local clock when its batch begins, and the fence refuses it, by the
// database's clock, if it ran out all the same.

// stickyIdle is how long a kept lease waits for its next batch before it is
// released by itself: the next batch was queued when the lease was kept, so
// this only matters if that batch went away.
const stickyIdle = 50 * time.Millisecond

// yieldPause is how long a node that gave an account's lease up because
// another node waits for it lets its next lease batch of the account wait,
// so that the waiter, woken by the release's notification, asks first.
// Without it the node, whose next batch is ready at its commit, asks a
// millisecond or two sooner and takes the lease back, batch after batch
// (the hand-off benchmark saw up to 2.7 releases per hand-off and a p99 of
// 35-40 ms); after it the node asks as any waiter does and, finding the
// lease taken, waits for its release.
const yieldPause = 5 * time.Millisecond

// stickyLeases are the leases this node keeps, by account.
type stickyLeases struct {
	mu      sync.Mutex
	kept    map[int64]*keptLease
	yielded map[int64]time.Time // when this node last gave up the lease to a waiter
	idle    time.Duration       // stickyIdle when 0; longer in tests that keep a lease by hand
	pause   time.Duration       // yieldPause when 0; negative for none, in tests

	// committed, when set (by tests only), runs as soon as a lease batch's
	// transaction has ended without error, with its lease's token, whether
	// the lease ended in its commit, and whether that was for a waiter: the
	// moment another node's waiter may take the lease over, which the
	// hand-off benchmark measures from.
	committed func(token int64, released, yielded bool)
}

type keptLease struct {
	lease *lockmgr.Lease
	idle  *time.Timer // releases the lease if no batch takes it first
}

// take removes and returns account id's kept lease, if it is still worth
// using: more than half of its TTL left.
func (s *Service) takeKept(id int64) *lockmgr.Lease {
	s.sticky.mu.Lock()
	k := s.sticky.kept[id]
	delete(s.sticky.kept, id)
	s.sticky.mu.Unlock()
	if k == nil || !k.idle.Stop() {
		return nil // none, or its idle release has begun
	}
	if time.Until(k.lease.Deadline()) < k.lease.TTL/2 {
		s.releaseLease(context.Background(), k.lease)
		return nil
	}
	return k.lease
}

// keep keeps lease for account id's next batch.
func (s *Service) keep(id int64, lease *lockmgr.Lease) {
	k := &keptLease{lease: lease}
	s.sticky.mu.Lock()
	defer s.sticky.mu.Unlock()
	if s.sticky.kept == nil {
		s.sticky.kept = map[int64]*keptLease{}
	}
	idle := s.sticky.idle
	if idle == 0 {
		idle = stickyIdle
	}
	k.idle = time.AfterFunc(idle, func() {
		s.sticky.mu.Lock()
		if s.sticky.kept[id] == k {
			delete(s.sticky.kept, id)
		}
		s.sticky.mu.Unlock()
		s.releaseLease(context.Background(), lease)
	})
	s.sticky.kept[id] = k
}

// yielded notes that this node gave account id's lease up to a waiter.
func (s *Service) yielded(id int64) {
	s.sticky.mu.Lock()
	defer s.sticky.mu.Unlock()
	if s.sticky.yielded == nil {
		s.sticky.yielded = map[int64]time.Time{}
	}
	s.sticky.yielded[id] = time.Now()
}

// afterYield waits, before a batch that would grant account id's lease, for
// what is left of the yield pause since this node gave the lease up to a
// waiter; the pause is forgotten once waited.
func (s *Service) afterYield(ctx context.Context, id int64) {
	s.sticky.mu.Lock()
	at, ok := s.sticky.yielded[id]
	delete(s.sticky.yielded, id)
	pause := s.sticky.pause
	s.sticky.mu.Unlock()
	if pause == 0 {
		pause = yieldPause
	}
	if !ok || pause < 0 {
		return
	}
	if d := time.Until(at.Add(pause)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// moreLeaseWork reports whether lease withdrawals of account id wait in
// this node's queue behind the batch being applied.
func (s *Service) moreLeaseWork(id int64) bool {
	s.combine.mu.Lock()
	defer s.combine.mu.Unlock()
	return len(s.combine.queues[queueKey{id, StrategyLease}]) > 0
}

// leaseTx is a lease batch's lease in the batch's transaction.
type leaseTx struct {
	lease  *lockmgr.Lease // nil until granted in the transaction
	ttl    time.Duration
	grant  *lockmgr.InTxGrant
	wanted *lockmgr.InTxWanted // asked behind the grant
	fence  *lockmgr.InTxFence
	// released: the lease ended in the batch's commit; yielded: because
	// another node waits for it.
	released, yielded bool
}

// rolledBack forgets what the batch's transaction did to the lease: a grant
// in it is undone (or, if its commit's outcome is unknown, left to run out).
func (lt *leaseTx) rolledBack() {
	if lt == nil {
		return
	}
	if lt.grant != nil {
		lt.lease = nil
	}
	lt.grant, lt.wanted, lt.fence, lt.released, lt.yielded = nil, nil, nil, false, false
}
