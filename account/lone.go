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
// applies the change under its token, and the lease is released with its
// commit (sqlApplyLoneLeased), so the lease costs no statement, no commit
// and no round trip of its own. It is sent in one pipeline between BEGIN and
// COMMIT (with the transaction's timeouts behind a pooler), so that a
// session lost before COMMIT was sent certainly changed nothing. Whatever it
// cannot decide falls back to the lease batch (done false), which waits for
// a lease held by another and tells a refusal for funds from a missing
// account; so does a statement error (a key's stored outcome, a conflict).
func (s *Service) applyLoneLeased(ctx context.Context, p *pending) (out outcome, done bool) {
	c := p.change
	grant, err := s.locks.GrantInStatement(LeaseResource(c.AccountID), s.node, s.LeaseTTL())
	if err != nil {
		return outcome{err: wrap(p.kind, err)}, true
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return outcome{err: wrap(p.kind, err)}, true
	}
	defer conn.Release()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if s.txTimeouts.set() {
		b.Queue(sqlSetTxTimeouts, s.txTimeouts.args()...)
	}
	b.Queue(sqlApplyLoneLeased, append([]any{c.AccountID, -c.Amount, p.kind, c.Amount, string(c.Strategy),
		nullable(c.IdempotencyKey), nullable(hashIfKeyed(c, p.hash))}, grant.Args()...)...)
	b.Queue("COMMIT")

	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil && s.txTimeouts.set() {
		_, err = br.Exec()
	}
	var (
		entry   Entry
		applied bool
	)
	if err == nil {
		rows, qerr := br.Query()
		if err = qerr; err == nil {
			entry, err = pgx.CollectExactlyOneRow(rows, scanEntry)
			applied = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil
			}
		}
	}
	committing := err == nil
	if err == nil {
		_, err = br.Exec() // COMMIT
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	var pgErr *pgconn.PgError
	switch {
	case err == nil && applied:
		grant.Committed(*entry.FenceToken)
		return outcome{res: Result{Entry: entry}}, true
	case err == nil:
		return outcome{}, false // held by another, refused for funds, or no such account
	case !errors.As(err, &pgErr) || (committing && sessionLost(err)):
		// Lost with COMMIT sent: it may have run.
		return outcome{err: wrap(p.kind, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))}, true
	case pgerr.Classify(err) == pgerr.Unavailable, sessionLost(err):
		return outcome{err: wrap(p.kind, err)}, true // not run: nothing happened
	}
	if pgerr.Conflict(err) {
		s.metrics.retried(err)
	}
	rollback(ctx, conn)
	return outcome{}, false // a statement failed (a key's stored outcome, a conflict): the batch decides
}
