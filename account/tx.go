package account

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// ErrOutcomeUnknown: the connection failed while COMMIT was under way (or
// while a lone statement that commits itself ran), so the change may or may
// not have been committed. A retry with the same Idempotency-Key tells
// which, and never applies it twice.
var ErrOutcomeUnknown = errors.New("the commit's outcome is unknown")

// errNotCommitted marks a failure of the database that certainly left
// nothing committed: no session could be had, the server refused the
// statement without running it (read-only, cancelled, out of resources), or
// the session was lost (a restart, pg_terminate_backend, an idle timeout, a
// broken connection) before COMMIT was sent.
var errNotCommitted = errors.New("the database could not serve the request; nothing was committed")

// inTx runs fn in a transaction and commits it, telling the failures that
// certainly changed nothing apart from a commit whose outcome is unknown.
func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if sessionLost(err) {
			return fmt.Errorf("%w: %w", errNotCommitted, err)
		}
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		var pgErr *pgconn.PgError
		if class := pgerr.Classify(err); class == pgerr.Unavailable || (errors.As(err, &pgErr) && class != pgerr.SessionLost) {
			return err // the server refused the COMMIT, or it was never sent: rolled back
		}
		// The server may have committed before the session or the answer
		// was lost (it finishes a commit before it acts on a termination).
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return nil
}

// sessionLost reports whether err says the session ended while a call was
// under way (see pgerr.SessionLost).
func sessionLost(err error) bool { return pgerr.Classify(err) == pgerr.SessionLost }
