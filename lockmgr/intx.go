package lockmgr

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Leases in the caller's own transaction, for a holder that protects rows of
// the same database: the grant, the fence, a renewal and the release ride
// in the pipeline (pgx.Batch) of the transaction that writes, so that a lease
// costs no commit of its own. The caller queues a statement with one of the
// Queue methods, in a transaction it began in the same batch, and reads its
// result, in order, with the returned value's Read.
//
// Every one of them locks the lease row until the caller's transaction ends
// (a grant and a renewal FOR UPDATE, the fence FOR SHARE), so nothing can
// come between them and the caller's write, and no other grant can be made
// meanwhile. The caller's transaction must commit synchronously: a grant's
// token is drawn in it (invariant 4). Nothing of it holds if the transaction
// rolls back: a grant is undone with it, and its token is never used.

// InTxGrant is a grant queued in a caller's transaction.
type InTxGrant struct {
	m     *Manager
	start time.Time
	ttl   time.Duration
}

// QueueGrant queues TryAcquire of resource for holder in the caller's
// transaction. Read returns the lease (live from its grant, locked until the
// transaction ends), or *HeldError when another holder has it.
func (m *Manager) QueueGrant(b *pgx.Batch, resource, holder string, ttl time.Duration) (*InTxGrant, error) {
	if err := validate(resource, holder, "", ttl); err != nil {
		return nil, err
	}
	g := &InTxGrant{m: m, start: time.Now(), ttl: ttl}
	b.Queue(sqlTryAcquire, resource, holder, newLeaseID(), ttl.Milliseconds(), nil)
	return g, nil
}

// Read reads the grant's result. Errors: *HeldError, and the database's.
func (g *InTxGrant) Read(br pgx.BatchResults) (*Lease, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	l, held, _, err := collectAttempt(rows)
	switch {
	case err != nil:
		return nil, err
	case held != nil:
		return nil, held
	}
	l.deadline = g.start.Add(g.ttl - g.m.margin(g.ttl))
	g.m.metrics.granted(time.Time{}, false)
	return l, nil
}

// InTxFence is a fence queued in a caller's transaction.
type InTxFence struct{ token int64 }

// QueueFence queues the fence of l (CheckFence) in the caller's transaction,
// and asks whether another Manager waits for the resource (its waiters'
// registration: see sqlFenceWanted).
func (m *Manager) QueueFence(b *pgx.Batch, l *Lease) *InTxFence {
	b.Queue(sqlFenceWanted, l.Resource)
	return &InTxFence{token: l.Token}
}

// Read reads the fence's result: nil when the lease is the newest grant and
// live (wanted: another Manager waits for it), else ErrStaleToken (as
// ErrTokenMismatch when no newer grant is known here), ErrLeaseExpired.
func (f *InTxFence) Read(br pgx.BatchResults) (wanted bool, err error) {
	var (
		current int64
		live    bool
	)
	err = br.QueryRow().Scan(&current, &live, &wanted)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, ErrTokenMismatch
	case err != nil:
		return false, err
	case f.token == current && live:
		return wanted, nil
	case f.token == current:
		return false, ErrLeaseExpired
	case f.token < current:
		return false, ErrStaleToken
	}
	return false, ErrTokenMismatch
}

// InTxWanted asks, in a caller's transaction, whether another Manager waits
// for a resource.
type InTxWanted struct{}

// QueueWanted queues, behind a grant in the same pipeline, the question
// whether another Manager waits for resource (its waiters' registration, as
// QueueFence asks it): a holder that would keep the lease past its
// transaction gives it up instead. A waiter registering after it waits for
// the caller's commit, and is seen by the holder's next fence.
func (m *Manager) QueueWanted(b *pgx.Batch, resource string) *InTxWanted {
	b.Queue(sqlWanted, resource)
	return &InTxWanted{}
}

// Read reads the answer.
func (w *InTxWanted) Read(br pgx.BatchResults) (wanted bool, err error) {
	err = br.QueryRow().Scan(&wanted)
	return wanted, err
}

// InTxRelease is a release queued in a caller's transaction.
type InTxRelease struct {
	m       *Manager
	lease   *Lease
	expired bool // the lease had run out before it was released
}

// QueueRelease queues the release of l in the caller's transaction: the
// lease ends when the transaction commits (Release, without its
// asynchronous commit, which would make the caller's writes asynchronous
// too). Read, then Released once the transaction has committed.
func (m *Manager) QueueRelease(b *pgx.Batch, l *Lease) *InTxRelease {
	b.Queue(sqlReleaseInTx, l.Resource, l.ID, nullable(l.Owner))
	return &InTxRelease{m: m, lease: l}
}

// Read reads the release's result. Errors: ErrNotHolder, the database's.
func (r *InTxRelease) Read(br pgx.BatchResults) error {
	var token int64
	var live, notified bool
	err := br.QueryRow().Scan(&token, &live, &notified)
	r.expired = err == nil && !live
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotHolder
	}
	return err
}

// Released hands the resource on to the next caller in this Manager's line
// and counts the release: call it after the caller's transaction committed.
func (r *InTxRelease) Released() {
	r.m.metrics.release(r.expired, nil)
	r.m.released(r.lease.Resource, r.lease.Token)
}
