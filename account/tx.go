package account

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// inTx runs fn in a transaction and commits it, telling the failures that
// certainly changed nothing apart from a commit whose outcome is unknown.
func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	if s.txTimeouts.set() {
		if _, err := tx.Exec(ctx, sqlSetTxTimeouts, s.txTimeouts.args()...); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return err
		}
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

// rollback ends a transaction left open or failed on conn; if that fails too,
// Release destroys the connection.
func rollback(ctx context.Context, conn *pgxpool.Conn) {
	if pc := conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
}

// sessionLost reports whether err says the session ended while a call was
// under way (see pgerr.SessionLost).
func sessionLost(err error) bool { return pgerr.Classify(err) == pgerr.SessionLost }
