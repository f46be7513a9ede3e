package lockmgr

import (
	"context"
	"fmt"
	"time"
)

// The lock tables keep history that would otherwise grow forever: a row in
// leases for every resource ever locked, and a row in lease_grants for every
// grant. Prune deletes what has outlived a retention, without weakening the
// tokens or the fence:
//
//   - Tokens are never reused: they come from one database-wide sequence,
//     not from the rows, so a resource whose row was deleted gets a token
//     above every earlier one at its next grant.
//   - A stale token is never accepted: the fence accepts only the token in
//     the resource's lease row, while it is live. A pruned grant only turns
//     "stale" (ErrStaleToken) into "never issued" (ErrTokenMismatch) for a
//     token granted more than the retention ago; a pruned lease row makes
//     every token of the resource ErrTokenMismatch until its next grant.

// pruneBatch bounds the rows one pruning statement deletes, and so how long
// it holds their row locks and how much one commit writes.
const pruneBatch = 500

// Pruned counts the rows one Prune call deleted.
type Pruned struct {
	// Leases: rows of resources whose newest lease ran out more than the
	// retention ago (their next grant makes a new row with a new token).
	Leases int64
	// Grants: grants made more than the retention ago, other than their
	// resource's newest.
	Grants int64
}

// Prune deletes, judged by the database's clock, the lease rows of resources
// whose newest lease ran out more than retention ago — except resources
// whose names begin with one of keep, whose rows stay — and the grants made
// more than retention ago, except each resource's newest. A live lease, or
// one that ran out within retention, is never touched.
//
// It works in statements of at most pruneBatch rows, each committed on its
// own and skipping rows that others have locked, until nothing is left or
// ctx ends; it returns what it deleted, also when it stops early. Safe to run
// on every node at once, beside any grants and fenced writes.
//
// After Prune, Get on a pruned resource is ErrNotFound, and Release of its
// last lease is ErrNotHolder; a write fenced with one of its tokens is
// refused with ErrTokenMismatch, as is a superseded token whose grant was
// pruned. Errors: ErrInvalid for a negative retention, ctx's, the
// database's.
func (m *Manager) Prune(ctx context.Context, retention time.Duration, keep ...string) (Pruned, error) {
	var p Pruned
	if retention < 0 {
		return p, invalid("retention %s is negative", retention)
	}
	if keep == nil {
		keep = []string{} // an empty array, not NULL
	}
	var err error
	// Leases first: the grants of the rows it deletes are no longer any
	// resource's newest, and go in the same call.
	p.Leases, err = m.pruneBatches(ctx, sqlPruneLeases, retention.Milliseconds(), pruneBatch, keep)
	if err != nil {
		return p, fmt.Errorf("lockmgr: prune leases: %w", err)
	}
	p.Grants, err = m.pruneBatches(ctx, sqlPruneGrants, retention.Milliseconds(), pruneBatch)
	if err != nil {
		return p, fmt.Errorf("lockmgr: prune grants: %w", err)
	}
	return p, nil
}

// pruneBatches runs a pruning statement until it deletes fewer than
// pruneBatch rows, and returns how many it deleted in all.
func (m *Manager) pruneBatches(ctx context.Context, sql string, args ...any) (int64, error) {
	var total int64
	for {
		tag, err := m.pool.Exec(ctx, sql, args...)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
	}
}
