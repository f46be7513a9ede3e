package account

import (
	"context"
	"fmt"
	"time"
)

// Idempotency records are kept for a retention, then pruned (invariant 12),
// after Stripe's contract: a retry within the retention is answered from the
// first outcome and never applied twice; after it the key is new again, and
// a request under it is a new change. The ledger keeps every entry and the
// key it was written under, so a key reused after its retention has two
// entries there.
//
// Pruning is maintenance, not a change: one statement deletes expired records
// of many accounts, the one place where a transaction spans accounts
// (invariant 8 is about changes). It touches no balance, no ledger entry and
// no lease, and holds its row locks for one short statement. A sharded
// deployment would run it on each shard.

// pruneBatch bounds the records one pruning statement deletes, and so how
// long it holds their row locks and how much one commit writes.
const pruneBatch = 500

// PruneIdempotencyKeys deletes the idempotency records older than retention,
// judged by the database's clock, in statements of at most pruneBatch rows,
// each committed on its own, until none is left or ctx ends. It returns how
// many it deleted, also when it stops early. Safe to run on every node at
// once. Errors: CodeInvalidRequest for a negative retention, ctx's, the
// database's.
func (s *Service) PruneIdempotencyKeys(ctx context.Context, retention time.Duration) (int64, error) {
	if retention < 0 {
		return 0, errorf(CodeInvalidRequest, "retention %s is negative", retention)
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, sqlPruneIdempotencyKeys, retention.Milliseconds(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
	}
}
