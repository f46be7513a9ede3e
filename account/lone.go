package account

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// applyLone tries a lone row change in one statement, one round trip: its
// UPDATE takes the row lock and changes the balance only if the result is
// not negative, and the same statement appends the entry and stores the
// idempotency record. That is the common case of an account nobody else is
// changing. Everything else falls back to the batch path, which decides it
// (done false): no row (a refusal for funds, or no such account), a fencing
// token (its check needs a statement of its own), a statement error — the
// key's unique index refusing a second record (a stored outcome to replay),
// an overflow, a conflict with another transaction (the batch path retries
// it). The statement committed alone, so its failure changed nothing; only a
// lost session or connection leaves its outcome unknown. The database's
// other failures are answered at once: a lock wait that ran out, or a
// database that cannot serve the statement (read-only, cancelled, no
// session), would fail the batch path too.
func (s *Service) applyLone(ctx context.Context, p *pending) (out outcome, done bool) {
	c := p.change
	if c.FenceToken != 0 {
		return outcome{}, false
	}
	delta := c.Amount
	if p.kind == KindWithdrawal {
		delta = -c.Amount
	}
	start := time.Now()
	rows, _ := s.pool.Query(ctx, sqlApplyLone, c.AccountID, delta, p.kind, c.Amount, string(c.Strategy),
		nullable(c.IdempotencyKey), nullable(hashIfKeyed(c, p.hash)))
	entry, err := pgx.CollectExactlyOneRow(rows, scanEntry)
	s.metrics.lockedRow(pathLone, start)
	var pgErr *pgconn.PgError
	switch class := pgerr.Classify(err); {
	case err == nil:
		return outcome{res: Result{Entry: entry}}, true
	case errors.Is(err, pgx.ErrNoRows):
		return outcome{}, false
	case class == pgerr.Unavailable, pgerr.LockNotAvailable(err):
		return outcome{err: wrap(p.kind, err)}, true // not run, or failed: nothing happened
	case class == pgerr.SessionLost, !errors.As(err, &pgErr):
		return outcome{err: wrap(p.kind, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))}, true
	}
	if pgerr.Conflict(err) {
		// Aborted over another transaction: the batch runs it again. (A
		// unique violation here is no race but the way to a stored outcome,
		// which the batch replays: not a retry.)
		s.metrics.retried(err)
	}
	return outcome{}, false
}

// applyLoneLeased tries a lone lease withdrawal in one statement, for an
// account this node keeps no lease of and has no more lease work for (the
// common case of many accounts): the statement grants a lease for itself,
// applies the change under its token and commits, the lease released with
// it (sqlApplyLoneLeased), so the lease costs no statement, no commit and no
// round trip of its own. Whatever it cannot decide falls back to the lease
// batch (done false), which waits for a lease held by another and tells a
// refusal for funds from a missing account; a statement error (a key's
// stored outcome, a conflict) is decided there too. As with applyLone, its
// failure changed nothing; only a lost session leaves its outcome unknown.
func (s *Service) applyLoneLeased(ctx context.Context, p *pending) (out outcome, done bool) {
	c := p.change
	grant, err := s.locks.GrantInStatement(LeaseResource(c.AccountID), s.node, s.LeaseTTL())
	if err != nil {
		return outcome{err: wrap(p.kind, err)}, true
	}
	args := append([]any{c.AccountID, -c.Amount, p.kind, c.Amount, string(c.Strategy),
		nullable(c.IdempotencyKey), nullable(hashIfKeyed(c, p.hash))}, grant.Args()...)
	rows, _ := s.pool.Query(ctx, sqlApplyLoneLeased, args...)
	entry, err := pgx.CollectExactlyOneRow(rows, scanEntry)
	var pgErr *pgconn.PgError
	switch class := pgerr.Classify(err); {
	case err == nil:
		grant.Committed(*entry.FenceToken)
		return outcome{res: Result{Entry: entry}}, true
	case errors.Is(err, pgx.ErrNoRows):
		return outcome{}, false
	case class == pgerr.Unavailable, pgerr.LockNotAvailable(err):
		return outcome{err: wrap(p.kind, err)}, true // not run, or failed: nothing happened
	case class == pgerr.SessionLost, !errors.As(err, &pgErr):
		return outcome{err: wrap(p.kind, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))}, true
	}
	if pgerr.Conflict(err) {
		s.metrics.retried(err)
	}
	return outcome{}, false
}
