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
// another node waits for it (its waiters' registration, which the fence
// reads in the batch's transaction). The grant and the release ride in the
// batch's own transaction (lockmgr's QueueGrant and QueueRelease), so a
// batch on an account nobody else wants costs one transaction and one
// commit, like a row batch; a kept lease saves the next batch its grant.
//
// Every write is still fenced by the lease's token in its transaction; a
// kept lease is used only while more than half of its TTL is left by the
// local clock when its batch begins, and the fence refuses it, by the
// database's clock, if it ran out all the same.

// stickyIdle is how long a kept lease waits for its next batch before it is
// released by itself: the next batch was queued when the lease was kept, so
// this only matters if that batch went away.
const stickyIdle = 50 * time.Millisecond

// stickyLeases are the leases this node keeps, by account.
type stickyLeases struct {
	mu   sync.Mutex
	kept map[int64]*keptLease
	idle time.Duration // stickyIdle when 0; longer in tests that keep a lease by hand

	// committed, when set (by tests only), runs as soon as a lease batch's
	// transaction has ended without error, with its lease's token and
	// whether the lease ended in its commit: the moment another node's
	// waiter may take the lease over, which the hand-off benchmark measures
	// from.
	committed func(token int64, released bool)
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

// moreLeaseWork reports whether lease withdrawals of account id wait in
// this node's queue behind the batch being applied.
func (s *Service) moreLeaseWork(id int64) bool {
	s.combine.mu.Lock()
	defer s.combine.mu.Unlock()
	return len(s.combine.queues[queueKey{id, StrategyLease}]) > 0
}

// leaseTx is a lease batch's lease in the batch's transaction.
type leaseTx struct {
	lease *lockmgr.Lease // nil until granted in the transaction
	ttl   time.Duration
	grant *lockmgr.InTxGrant
	fence *lockmgr.InTxFence
	// released: the lease ended in the batch's commit.
	released bool
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
	lt.grant, lt.fence, lt.released = nil, nil, false
}
