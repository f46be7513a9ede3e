package account

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrOutcomeUnknown: the connection failed while COMMIT was under way, so
// the change may or may not have been committed. A retry with the same
// Idempotency-Key tells which, and never applies it twice.
var ErrOutcomeUnknown = errors.New("the commit's outcome is unknown")

// errNotCommitted marks a failure that certainly left nothing committed: the
// session was lost (a restart, pg_terminate_backend, an idle timeout, a
// broken connection) before COMMIT was sent.
var errNotCommitted = errors.New("the database ended the transaction before commit")

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
		if errors.As(err, &pgErr) && !sessionLost(err) {
			return err // the server refused the COMMIT: rolled back
		}
		// The server may have committed before the session or the answer
		// was lost (it finishes a commit before it acts on a termination).
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return nil
}

// sessionLost reports whether err says the session is gone: SQLSTATE class
// 57 (operator intervention: shutdown, pg_terminate_backend), 25P03
// (idle_in_transaction_session_timeout), or a broken connection.
func sessionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "25P03" || strings.HasPrefix(pgErr.Code, "57")
	}
	var netErr *net.OpError
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(err.Error(), "conn closed")
}
